"""A real `latentserve serve` process on a free port, driven with an httpx client."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from service.schemas import DIGIT_0, DIGIT_1
from tests.live_server import LiveServer, free_port, latentserve

ROW = [float(v) for v in DIGIT_0]
Server = LiveServer  # one real-process helper for every test that needs a server


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory) -> Iterator[Server]:
    # LATENTSERVE_PORT is set to a port nobody listens on: the --port flag must win.
    env = {"LATENTSERVE_MAX_ROWS": "100", "LATENTSERVE_MAX_BODY_BYTES": "65536", "LATENTSERVE_PORT": "1"}
    running = Server(models_dir, tmp_path_factory.mktemp("logs") / "serve.log", env=env)
    running.wait()
    yield running
    running.stop()


# ----- every endpoint ---------------------------------------------------------------------------
def test_serve_is_ready_with_every_model(server):
    r = server.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["models"] == {"digits-ae": [1, 2], "digits-gan": [1], "digits-rae": [1], "digits-vae": [1]}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/encode", {"model": "digits-vae", "inputs": [ROW, DIGIT_1]}, "latents"),
        ("/reconstruct", {"model": "digits-ae", "version": 1, "inputs": [ROW]}, "reconstructions"),
        ("/sample", {"model": "digits-gan", "n": 5, "seed": 0}, "samples"),
        ("/sample", {"model": "digits-rae", "latents": [[0.1] * 16]}, "samples"),
        ("/anomaly-score", {"model": "digits-rae", "inputs": [ROW], "explain": True}, "contributions"),
    ],
    ids=["encode", "reconstruct", "sample", "sample-latents", "anomaly-score"],
)
def test_serve_answers_every_model_endpoint(server, path, body, field):
    r = server.client.post(path, json=body)
    assert r.status_code == 200
    assert r.json()["model"] == body["model"] and len(r.json()[field]) >= 1


@pytest.mark.parametrize("path", ["/models", "/models/digits-ae", "/healthz", "/metrics", "/docs", "/openapi.json"])
def test_serve_answers_every_read_endpoint(server, path):
    assert server.client.get(path).status_code == 200


def test_serve_sample_is_reproducible_by_seed(server):
    body = {"model": "digits-vae", "n": 3, "seed": 123}
    first, second = server.client.post("/sample", json=body), server.client.post("/sample", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["samples"] == second.json()["samples"]


def test_serve_reconstruct_round_trips_a_training_row(server, digits):
    x = digits[:100]
    r = server.client.post("/reconstruct", json={"model": "digits-ae", "inputs": x.tolist()})
    assert r.status_code == 200
    error = np.sqrt(np.mean((np.array(r.json()["reconstructions"]) - x) ** 2))
    assert error < 0.75 * np.sqrt(np.mean((x - x.mean(axis=0)) ** 2))


def test_serve_metrics_count_served_requests(server):
    server.client.post("/encode", json={"model": "digits-rae", "inputs": [ROW]})
    r = server.client.get("/metrics")
    assert r.status_code == 200
    assert 'latentserve_requests_total{endpoint="/encode",model="digits-rae",status="200"}' in r.text


# ----- every error case -------------------------------------------------------------------------
ERRORS = [
    (
        "wrong-width",
        "/anomaly-score",
        {"model": "digits-vae", "inputs": [ROW, ROW, ROW[:-1]]},
        422,
        "row 2 of inputs has 63 features, expected 64",
    ),
    (
        "non-numeric",
        "/encode",
        {"model": "digits-ae", "inputs": [["x"] * 64]},
        422,
        'inputs[0][0] should be a number, got "x"',
    ),
    ("empty", "/reconstruct", {"model": "digits-ae", "inputs": []}, 422, "inputs is empty"),
    ("too-many-rows", "/encode", {"model": "digits-ae", "inputs": [ROW] * 101}, 422, "101 rows, the limit is 100"),
    ("too-many-samples", "/sample", {"model": "digits-gan", "n": 101}, 422, "n must be between 1 and 100"),
    (
        "unknown-model",
        "/sample",
        {"model": "mnist-vae", "n": 1},
        404,
        "available: digits-ae (versions 1, 2); digits-gan",
    ),
    (
        "unknown-version",
        "/encode",
        {"model": "digits-ae", "version": 5, "inputs": [ROW]},
        404,
        "available versions: 1, 2",
    ),
    (
        "kind-cannot-serve",
        "/reconstruct",
        {"model": "digits-gan", "inputs": [ROW]},
        400,
        "is a gan, which supports sample, anomaly-score; not reconstruct",
    ),
    ("model-required", "/sample", {"n": 1}, 422, "several models are loaded"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), [pytest.param(*c[1:], id=c[0]) for c in ERRORS])
def test_serve_errors_name_the_problem(server, path, body, status, message):
    r = server.client.post(path, json=body)
    assert r.status_code == status
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "digits-ae", "inputs": [[NaN]]}', "NaN and Infinity at character 35 are not JSON numbers"),
        (b'{"model": "digits-ae", "inputs": [[1e999]]}', "number is infinity when parsed as double"),
    ],
    ids=["nan", "overflow"],
)
def test_serve_non_finite_numbers_are_422(server, content, message):
    r = server.client.post("/encode", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert message in r.json()["error"]


def test_serve_body_over_the_limit_is_413_by_content_length(server):
    r = server.client.post("/encode", json={"model": "digits-ae", "inputs": [ROW] * 600})
    assert r.status_code == 413
    assert "the limit is 65536 bytes" in r.json()["error"]


def test_serve_streamed_body_over_the_limit_is_413(server):
    chunks = (b"[" * 4096 for _ in range(40))  # chunked transfer: no Content-Length to check
    r = server.client.post("/encode", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "the limit is 65536 bytes" in r.json()["error"]


def test_serve_survives_the_bad_requests(server):
    for content in (b"\xff\xfe", b"{" * 10_000, b'{"inputs": ' + b"[" * 5000, b"null", b'"text"'):
        r = server.client.post("/anomaly-score", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content[:20], r.text)
    assert server.process.poll() is None and server.client.get("/healthz").status_code == 200


# ----- start-up: refusals and runtimes ----------------------------------------------------------
def test_serve_refuses_a_tampered_artifact_and_serves_the_rest(copy_model, tamper, tmp_path):
    tamper(copy_model("digits-gan", tmp_path) / "discriminator.onnx")
    copy_model("digits-vae", tmp_path)
    running = Server(tmp_path, tmp_path / "serve.log")
    try:
        # 503 "loading" comes first, while digits-vae loads; wait for the settled answer.
        ready = running.wait("/readyz", 503, until=lambda r: r.json()["status"] == "failed")
        refused = running.client.post("/anomaly-score", json={"model": "digits-gan", "inputs": [ROW]})
        intact = running.client.post("/anomaly-score", json={"model": "digits-vae", "inputs": [ROW]})
    finally:
        assert running.stop() == 0  # SIGTERM: a clean shutdown
    reason = "discriminator graph file discriminator.onnx fails its sha256 check"
    assert f"REFUSED model digits-gan version 1 ({tmp_path / 'digits-gan' / '1'}): {reason}" in running.output()
    assert reason in ready.json()["error"]
    assert refused.status_code == 503 and reason in refused.json()["error"]
    assert intact.status_code == 200


def test_serve_torchscript_runtime_agrees_with_onnx(server, models_dir, tmp_path):
    running = Server(models_dir, tmp_path / "serve.log", "--runtime", "torchscript")
    try:
        running.wait()
        for path, body, field in [
            ("/sample", {"model": "digits-vae", "n": 4, "seed": 9}, "samples"),
            ("/anomaly-score", {"model": "digits-ae", "inputs": [ROW, DIGIT_1], "explain": True}, "contributions"),
        ]:
            onnx, script = server.client.post(path, json=body), running.client.post(path, json=body)
            assert onnx.status_code == script.status_code == 200
            assert np.max(np.abs(np.array(onnx.json()[field]) - np.array(script.json()[field]))) <= 1e-4
        assert running.client.get("/models/digits-ae").json()["versions"][0]["runtime"]["runtime"] == "torchscript"
    finally:
        running.stop()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*latentserve(), *args], capture_output=True, text=True, timeout=60)


def test_serve_exits_with_a_message_when_the_repository_is_empty(tmp_path):
    done = _run_cli("serve", "--models", str(tmp_path), "--port", str(free_port()))
    assert done.returncode == 2
    assert f"no models in {tmp_path}; train one first" in done.stderr


def test_serve_exits_with_a_message_when_the_models_folder_is_missing(tmp_path):
    done = _run_cli("serve", "--models", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "invalid setting models" in done.stderr and "is not a folder" in done.stderr


def test_serve_refuses_cuda_it_does_not_have(models_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    done = _run_cli("serve", "--models", str(models_dir), "--device", "cuda", "--port", str(free_port()))
    assert done.returncode == 2
    assert "cannot start: --device cuda needs onnxruntime's CUDAExecutionProvider" in done.stderr


def test_cli_delegates_train_to_the_training_cli():
    done = _run_cli("train", "--help")
    assert done.returncode == 0
    assert "--contamination" in done.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_is_a_one_line_error(models_dir, workers):
    """Bound before any model loads: no traceback, no abort at exit (uvicorn's own bind failed late)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*latentserve(), "serve", "--models", str(models_dir), "--port", str(port), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"latentserve serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in run.stderr
