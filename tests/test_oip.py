"""The Open Inference Protocol through `tritonclient` (a client we did not write) against a real
`latentserve serve`: every operation of every kind, binary, JSON and mixed, bit for bit equal to
the native endpoints; versions; every error status; bodies checked against the published schema."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.payloads import NPY, npy_bytes
from tests.live_server import LiveServer
from tests.oip_schema import validate, validate_binary

ROWS = 5
MAX_ROWS = 50
OPERATIONS = {
    "digits-ae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "digits-rae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "digits-vae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "digits-gan": ("sample", "anomaly-score"),
}
CASES = [(name, op) for name, ops in OPERATIONS.items() for op in ops]
IDS = [f"{name}.{op}" for name, op in CASES]
# native endpoint, its array field -> OIP output name
NATIVE = {
    "encode": {"latents": "z", "mu": "mu", "logvar": "logvar"},
    "reconstruct": {"reconstructions": "x_hat"},
    "sample": {"samples": "x_hat"},
    "anomaly-score": {"scores": "score", "is_anomaly": "is_anomaly", "percentiles": "percentile"},
}


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"LATENTSERVE_MAX_ROWS": str(MAX_ROWS), "LATENTSERVE_MAX_BODY_BYTES": "65536"}
    running = LiveServer(models_dir, tmp_path_factory.mktemp("oip") / "serve.log", env=env)
    running.wait()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def rows(digits: np.ndarray) -> np.ndarray:
    return digits[:ROWS]


def latents(width: int = 16) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((ROWS, width)).astype(np.float32)


def native(server: LiveServer, op: str, name: str, x: np.ndarray, version: int | None = None, **query) -> dict:
    """The native endpoint's answer as {OIP output name: array}, via .npy both ways (exact)."""
    params = {"model": name, **({"version": version} if version else {}), **query}
    r = server.client.post(f"/{op}", content=npy_bytes(x), params=params, headers={"Content-Type": NPY, "Accept": NPY})
    assert r.status_code == 200, r.text
    array = np.load(io.BytesIO(r.content))
    if array.dtype.names is None:
        return {next(iter(NATIVE[op].values())): array}
    out = {NATIVE[op].get(field, field): array[field] for field in array.dtype.names}
    return out


def oip_input(name: str, x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(
        name, list(x.shape), {np.float32: "FP32", np.float64: "FP64", np.float16: "FP16"}[x.dtype.type]
    )
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def case_input(op: str, rows: np.ndarray) -> tuple[str, np.ndarray]:
    return ("z", latents()) if op == "sample" else ("x", rows)


# ----- every operation of every kind ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["binary", "json", "mixed"])
@pytest.mark.parametrize(("name", "op"), CASES, ids=IDS)
def test_oip_infer_equals_native_bit_for_bit(server, client, rows, name, op, mode):
    input_name, x = case_input(op, rows)
    metadata = client.get_model_metadata(f"{name}.{op}")
    declared = {t["name"]: t for t in metadata["outputs"] if t["name"] != "contributions"}
    if mode == "binary":  # tritonclient's default: binary in, binary out
        outputs = None
    else:  # json: JSON in, JSON out; mixed: binary in, first output binary and the rest JSON
        outputs = [
            triton.InferRequestedOutput(n, binary_data=mode == "mixed" and i == 0) for i, n in enumerate(declared)
        ]
    result = client.infer(f"{name}.{op}", [oip_input(input_name, x, binary=mode != "json")], outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == list(declared)
    expected = native(server, op, name, x)
    for o in response["outputs"]:
        assert o["datatype"] == declared[o["name"]]["datatype"]
        assert ("binary_data_size" in o.get("parameters", {})) == (
            mode == "binary" or (mode == "mixed" and o is response["outputs"][0])
        )
        got, want = result.as_numpy(o["name"]), expected[o["name"]]
        assert got.shape == want.shape
        if got.dtype != want.dtype:  # only ever widened (float32 scores as FP64): exact, so still bit for bit
            assert (got.dtype, want.dtype) == (np.float64, np.float32), o["name"]
            want = want.astype(np.float64)
        assert got.tobytes() == want.tobytes(), f"{o['name']} differs from the native endpoint"


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_oip_bare_name_is_the_kinds_main_operation(client, rows, name):
    main = "sample" if name == "digits-gan" else "reconstruct"
    input_name, x = case_input(main, rows)
    bare = client.infer(name, [oip_input(input_name, x)]).as_numpy("x_hat")
    named = client.infer(f"{name}.{main}", [oip_input(input_name, x)]).as_numpy("x_hat")
    assert client.get_model_metadata(name)["parameters"]["operation"] == main
    np.testing.assert_array_equal(bare, named)


def test_oip_sample_draws_by_parameters_as_native(server, client):
    result = client.infer("digits-vae.sample", [], parameters={"n": 3, "seed": 7, "temperature": 0.5})
    r = server.client.post("/sample", json={"model": "digits-vae", "n": 3, "seed": 7, "temperature": 0.5})
    assert r.status_code == 200
    np.testing.assert_array_equal(result.as_numpy("x_hat"), np.array(r.json()["samples"], np.float32))


def test_oip_anomaly_score_explain_and_parameters(server, client, rows):
    result = client.infer("digits-rae.anomaly-score", [oip_input("x", rows)], parameters={"explain": True})
    response = result.get_response()
    want = native(server, "anomaly-score", "digits-rae", rows, explain="true")
    assert result.as_numpy("contributions").tobytes() == want["contributions"].tobytes()
    r = server.client.get("/models/digits-rae").json()["versions"][0]["anomaly_score"]
    assert response["parameters"] == {"threshold": r["threshold"], "score_method": r["method"]}


def test_oip_requested_contributions_imply_explain(client, rows):
    out = [triton.InferRequestedOutput("contributions")]
    result = client.infer("digits-ae.anomaly-score", [oip_input("x", rows)], outputs=out)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["contributions"]
    assert result.as_numpy("contributions").shape == (ROWS, 64)


def test_oip_outputs_filter_and_id_echo(client, rows):
    out = [triton.InferRequestedOutput("logvar", binary_data=False)]
    result = client.infer("digits-vae.encode", [oip_input("x", rows)], outputs=out, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert [o["name"] for o in response["outputs"]] == ["logvar"]
    assert result.as_numpy("logvar").shape == (ROWS, 16)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_oip_fp64_and_fp16_inputs_become_fp32(server, client, rows, dtype):
    x = rows.astype(dtype)
    got = client.infer("digits-ae.reconstruct", [oip_input("x", x)]).as_numpy("x_hat")
    want = native(server, "reconstruct", "digits-ae", x.astype(np.float32))["x_hat"]
    assert got.tobytes() == want.tobytes()


def test_oip_json_data_nested_or_flat_gives_the_same(server, rows):
    def infer(data: list) -> dict:
        body = {"inputs": [{"name": "x", "shape": [ROWS, 64], "datatype": "FP32", "data": data}]}
        r = server.client.post("/v2/models/digits-ae.encode/infer", content=orjson.dumps(body))  # no Content-Type
        assert r.status_code == 200, r.text
        validate(r.json(), "inference_response")
        return r.json()

    nested, flat = infer(rows.tolist()), infer(rows.reshape(-1).tolist())
    assert nested == flat
    assert nested["outputs"][0]["shape"] == [ROWS, 16]


def test_oip_gzip_request_body(server, client, rows):
    result = client.infer("digits-ae.encode", [oip_input("x", rows)], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("z"), native(server, "encode", "digits-ae", rows)["z"])


def test_oip_requests_share_the_micro_batching(server, client, rows):
    def batched_calls() -> float:
        prefix = 'latentserve_batch_rows_count{endpoint="reconstruct",model="digits-rae"}'
        lines = server.client.get("/metrics").text.splitlines()
        return next((float(line.split()[-1]) for line in lines if line.startswith(prefix)), 0.0)

    before = batched_calls()
    client.infer("digits-rae.reconstruct", [oip_input("x", rows)])
    assert batched_calls() == before + 1


def test_oip_requests_are_counted_by_route_and_model(server, client, rows):
    client.infer("digits-ae.encode", [oip_input("x", rows)])
    text = server.client.get("/metrics").text
    assert 'endpoint="/v2/models/{model_name}/infer",model="digits-ae",status="200"' in text


# ----- server, metadata, versions ---------------------------------------------------------------
def test_oip_server_live_ready_and_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    validate(metadata, "metadata_server_response")
    assert metadata["name"] == "latentserve" and "binary_tensor_data" in metadata["extensions"]
    assert server.client.get("/v2/").json() == metadata


@pytest.mark.parametrize(("name", "op"), CASES, ids=IDS)
def test_oip_model_metadata_every_operation(client, name, op):
    metadata = client.get_model_metadata(f"{name}.{op}")
    validate(metadata, "metadata_model_response")
    assert metadata["platform"] == "latentserve_onnx"
    assert metadata["versions"] == (["1", "2"] if name == "digits-ae" else ["1"])
    (tensor,) = metadata["inputs"]
    assert tensor == {
        "name": "z" if op == "sample" else "x",
        "datatype": "FP32",
        "shape": [-1, 16 if op == "sample" else 64],
    }
    assert all(t["shape"][0] == -1 for t in metadata["outputs"])
    assert client.is_model_ready(f"{name}.{op}")


def test_oip_versioned_urls(client, rows):
    for version in ("1", "2"):
        result = client.infer("digits-ae.encode", [oip_input("x", rows)], model_version=version)
        assert result.get_response()["model_version"] == version
        assert client.get_model_metadata("digits-ae.encode", version)["parameters"]["version"] == int(version)
        assert client.is_model_ready("digits-ae", version)
    assert client.infer("digits-ae.encode", [oip_input("x", rows)]).get_response()["model_version"] == "2"
    assert not client.is_model_ready("digits-ae", "3")


# ----- errors, read through tritonclient --------------------------------------------------------
def expect_error(call, status: int, *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == str(status), info.value.message()
    for fragment in fragments:
        assert fragment in info.value.message()
    return info.value.message()


def test_oip_unknown_model_version_and_operation_are_404(client, rows):
    x = [oip_input("x", rows)]
    expect_error(lambda: client.infer("digits-nope", x), 404, "no model named 'digits-nope'", "digits-ae")
    expect_error(lambda: client.infer("digits-ae.encode", x, model_version="3"), 404, "no version 3", "1, 2")
    expect_error(lambda: client.infer("digits-ae.encode", x, model_version="v1"), 404, "positive integers")
    expect_error(lambda: client.infer("digits-gan.encode", x), 404, "gan", "digits-gan.sample")
    expect_error(lambda: client.infer("digits-ae.classify", x), 404, "<name>.<operation>")
    expect_error(lambda: client.get_model_metadata("digits-nope"), 404, "no model named")


def test_oip_bad_tensors_are_400(client, rows):
    expect_error(lambda: client.infer("digits-ae", [oip_input("y", rows)]), 400, "expected one input named 'x'")
    ints = triton.InferInput("x", [ROWS, 64], "INT32")
    ints.set_data_from_numpy(rows.astype(np.int32))
    expect_error(lambda: client.infer("digits-ae", [ints]), 400, "must be FP32", "INT32")
    expect_error(lambda: client.infer("digits-ae", [oip_input("x", rows[:, :10])]), 400, "[-1, 64]", "[5, 10]")
    expect_error(lambda: client.infer("digits-ae.sample", [oip_input("z", latents(3))]), 400, "[-1, 16]")
    out = [triton.InferRequestedOutput("nope")]
    expect_error(
        lambda: client.infer("digits-ae.encode", [oip_input("x", rows)], outputs=out), 400, "unknown output", "'nope'"
    )
    huge = np.full((1, 64), 1e300)
    expect_error(lambda: client.infer("digits-ae", [oip_input("x", huge)]), 400, "not a finite float32")


def test_oip_over_the_row_and_body_limits_is_413(client, digits):
    expect_error(
        lambda: client.infer("digits-ae", [oip_input("x", digits[: MAX_ROWS + 1])]), 413, f"limit is {MAX_ROWS}"
    )
    expect_error(lambda: client.infer("digits-ae", [oip_input("x", digits[:300])]), 413, "65536")
    expect_error(lambda: client.infer("digits-vae.sample", [], parameters={"n": MAX_ROWS + 1}), 413, "parameters.n")


HEAD = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": 512}}]}
ZEROS = np.zeros((2, 64), np.float32).tobytes()


def _binary(head: dict, data: bytes, length: int | str | None = "auto") -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(head)
    headers = (
        {} if length is None else {"Inference-Header-Content-Length": str(len(raw) if length == "auto" else length)}
    )
    return raw + data, headers


def _json(inputs: list) -> tuple[bytes, dict[str, str]]:
    return orjson.dumps({"inputs": inputs}), {}


def _x(datatype="FP32", shape=(2, 64), data=None) -> list:
    return [{"name": "x", "shape": list(shape), "datatype": datatype, "data": [1.0] * 128 if data is None else data}]


HOSTILE = {
    "empty body": ((b"", {}), "not valid JSON"),
    "not json": ((b"{inputs", {}), "not valid JSON"),
    "a list": ((b"[1]", {}), "must be a JSON object"),
    "inputs not a list": ((b'{"inputs": 3}', {}), "inputs must be a list"),
    "wrong datatype": (_json(_x("BYTES")), "BYTES is not supported"),
    "unknown datatype": (_json(_x("FLOAT")), "unknown datatype"),
    "strings as FP32": (_json(_x(data=["1"] * 128)), "must be numbers"),
    "booleans as FP32": (_json(_x(data=[True] * 128)), "must be numbers"),
    "shape against data length": (_json(_x(data=[1.0] * 127)), "holds 128 values, but data has 127"),
    "ragged nesting": (_json(_x(data=[[1.0] * 64, [1.0] * 63])), "different lengths"),
    "nesting too deep": (_json(_x(shape=(1,), data=[[[[[[[[[[1.0]]]]]]]]]])), "deeper than 8"),
    "negative shape": (_json(_x(shape=(-2, 64))), "non-negative integers"),
    "no data": ((orjson.dumps({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32"}]}), {}), "neither data"),
    "binary size past the body": (_binary(HEAD, ZEROS[:100]), "runs past the end"),
    "binary size against shape": (
        _binary({"inputs": [{**HEAD["inputs"][0], "parameters": {"binary_data_size": 500}}]}, ZEROS),
        "is 512 bytes",
    ),
    "extra binary bytes": (_binary(HEAD, ZEROS + b"xx"), "add up to 512"),
    "missing header": (_binary(HEAD, ZEROS, None), "Inference-Header-Content-Length"),
    "missing header and bytes": (_binary(HEAD, b"", None), "Inference-Header-Content-Length"),
    "header past the body": (_binary(HEAD, ZEROS, 10_000), "the body has"),
    "header not a number": (_binary(HEAD, ZEROS, "12a"), "whole number"),
    "header zero": (_binary(HEAD, ZEROS, 0), "the body has"),
    "id not a string": ((orjson.dumps({"id": 5, "inputs": _x()}), {}), "id must be a string"),
    "explain not a boolean": ((orjson.dumps({"inputs": _x(), "parameters": {"explain": "yes"}}), {}), "explain"),
    "duplicate inputs": (_json(_x() + _x()), "unique"),
    "bad gzip": ((b"not gzip", {"Content-Encoding": "gzip"}), "not valid gzip"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_oip_hostile_bodies_are_400_with_a_message(server, case):
    (body, headers), fragment = HOSTILE[case]
    path = "/v2/models/digits-ae.anomaly-score/infer"
    r = server.client.post(path, content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    validate(r.json(), "inference_error_response")


def test_oip_gzip_bomb_is_413(server):
    body = gzip.compress(b" " * 200_000)
    r = server.client.post("/v2/models/digits-ae/infer", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "65536" in r.json()["error"]


# ----- the published schema ---------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
def test_oip_bodies_follow_the_published_schema(server, rows, binary):
    inputs = [oip_input("x", rows, binary=binary)]
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("score", "is_anomaly", "percentile")]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id="7", parameters={"explain": False}
    )
    head = orjson.loads(body[:json_size] if json_size else body)
    (validate_binary if binary else validate)(head, "inference_request")
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size else {}
    r = server.client.post("/v2/models/digits-vae.anomaly-score/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    length = r.headers.get("Inference-Header-Content-Length")
    assert (length is not None) == binary
    response = orjson.loads(r.content[: int(length)] if length else r.content)
    (validate_binary if binary else validate)(response, "inference_response")
    result = triton.InferenceServerClient.parse_response_body(r.content, header_length=int(length) if length else None)
    np.testing.assert_array_equal(
        result.as_numpy("score"), native(server, "anomaly-score", "digits-vae", rows)["score"]
    )


def test_oip_schema_check_can_fail():
    with pytest.raises(AssertionError):
        validate({"outputs": []}, "inference_response")  # no model_name
    with pytest.raises(AssertionError):
        validate(
            {"model_name": "m", "outputs": [{"name": "o", "shape": [1], "datatype": "FP32"}]}, "inference_response"
        )


# ----- auth and refused models ------------------------------------------------------------------
KEY = "oip-test-key-0123456789"


@pytest.fixture(scope="module")
def guarded(models_dir: Path, copy_model, tamper, tmp_path_factory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("oip-guarded")
    copy_model("digits-ae", root)
    broken = copy_model("digits-ae", root, as_name="broken-ae")
    tamper(next(broken.glob("*.onnx")))
    running = LiveServer(root, root.parent / "guarded.log", env={"LATENTSERVE_API_KEY": KEY})
    running.wait("/healthz")
    running.wait("/readyz", 503, until=lambda r: r.json()["status"] == "failed")  # loaded, one refused
    yield running
    running.stop()


def test_oip_api_key_guards_all_but_the_probes(guarded, rows):
    client = triton.InferenceServerClient(f"127.0.0.1:{guarded.port}")
    try:
        assert client.is_server_live()  # probes: no key needed
        assert not client.is_server_ready()  # broken-ae was refused
        expect_error(lambda: client.infer("digits-ae", [oip_input("x", rows)]), 401, "API key")
        expect_error(lambda: client.get_model_metadata("digits-ae"), 401, "API key")
        auth = {"Authorization": f"Bearer {KEY}"}
        assert client.infer("digits-ae", [oip_input("x", rows)], headers=auth).as_numpy("x_hat").shape == (ROWS, 64)
        expect_error(
            lambda: client.infer("broken-ae", [oip_input("x", rows)], headers=auth), 503, "broken-ae", "refused at load"
        )
        assert not client.is_model_ready("broken-ae", headers=auth)
        r = guarded.client.get("/v2/health/ready")
        assert r.status_code == 503 and "broken-ae" in r.json()["error"]
    finally:
        client.close()


def test_oip_while_loading_is_503_with_retry_after(models_dir):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(models=models_dir))
    client = TestClient(app)  # not entered: no lifespan, so the models stay loading
    r = client.post("/v2/models/digits-ae.encode/infer", content=b"{}")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "still loading" in r.json()["error"]
    r = client.get("/v2/models/digits-ae/versions/2/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    r = client.get("/v2/health/ready")
    assert r.status_code == 503 and "loading" in r.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_oip_torchscript_runtime_platform_and_results(models_dir, torchscript_repository, onnx_repository, digits):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    client = TestClient(create_app(Settings(models=models_dir, runtime="torchscript"), torchscript_repository))
    metadata = client.get("/v2/models/digits-vae.encode/versions/1").json()
    assert metadata["platform"] == "latentserve_torchscript"
    x = digits[:3]
    body = {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32", "data": x.tolist()}]}
    r = client.post("/v2/models/digits-vae.encode/infer", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    mu = np.array(r.json()["outputs"][1]["data"], np.float32).reshape(3, 16)
    np.testing.assert_allclose(mu, onnx_repository.get("digits-vae").encode(x)["mu"], rtol=1e-4, atol=1e-5)
