"""The HTTP layer in process: httpx over the ASGI transport, against the session's trained models."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from artifact.graphs import Backend
from service.app import create_app
from service.repository import ModelRepository
from service.schemas import DIGIT_0, DIGIT_1
from service.settings import Settings
from tests.live_server import client_for

pytestmark = pytest.mark.anyio
ROW = [float(v) for v in DIGIT_0]


@pytest.fixture
async def ts_client(models_dir, torchscript_repository):
    async with client_for(create_app(Settings(models=models_dir), torchscript_repository)) as c:
        yield c


# ----- endpoints ----------------------------------------------------------------------------------
async def test_encode_returns_one_latent_row_per_input(client):
    r = await client.post("/encode", json={"model": "digits-ae", "inputs": [ROW, DIGIT_1]})
    assert r.status_code == 200
    body = r.json()
    assert (body["model"], body["version"]) == ("digits-ae", 2) and np.shape(body["latents"]) == (2, 16)


async def test_encode_vae_returns_mu_and_logvar(client):
    r = await client.post("/encode", json={"model": "digits-vae", "inputs": [ROW]})
    assert r.status_code == 200
    body = r.json()
    assert body["latents"] == body["mu"] and np.shape(body["logvar"]) == (1, 16)


async def test_encode_serves_the_version_asked_for(client):
    r = await client.post("/encode", json={"model": "digits-ae", "version": 1, "inputs": [ROW]})
    assert r.status_code == 200
    assert r.json()["version"] == 1


async def test_reconstruct_answers_in_raw_units(client):
    r = await client.post("/reconstruct", json={"model": "digits-ae", "inputs": [ROW]})
    assert r.status_code == 200
    assert max(r.json()["reconstructions"][0]) > 4  # pixel levels 0-16, not the model's 0-1


async def test_sample_returns_n_samples_of_the_feature_width(client):
    r = await client.post("/sample", json={"model": "digits-gan", "n": 3, "seed": 1})
    assert r.status_code == 200
    assert np.shape(r.json()["samples"]) == (3, 64)


async def test_sample_is_reproducible_by_seed(client):
    body = {"model": "digits-vae", "n": 2, "seed": 42, "temperature": 0.7}
    first, second = await client.post("/sample", json=body), await client.post("/sample", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["samples"] == second.json()["samples"]


async def test_sample_decodes_given_latents(client):
    r = await client.post("/sample", json={"model": "digits-rae", "latents": [[0.0] * 16] * 3})
    assert r.status_code == 200
    assert len(r.json()["samples"]) == 3


async def test_anomaly_score_returns_scores_threshold_flags_and_percentiles(client):
    r = await client.post("/anomaly-score", json={"model": "digits-gan", "inputs": [ROW, DIGIT_1]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["scores"]) == len(body["is_anomaly"]) == len(body["percentiles"]) == 2
    assert body["is_anomaly"] == [s > body["threshold"] for s in body["scores"]]
    assert "contributions" not in body


async def test_anomaly_score_explain_returns_per_feature_contributions(client):
    r = await client.post("/anomaly-score", json={"model": "digits-vae", "inputs": [ROW], "explain": True})
    assert r.status_code == 200
    assert np.shape(r.json()["contributions"]) == (1, 64)


async def test_models_lists_every_model_with_versions_and_state(client):
    r = await client.get("/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert sorted(models) == ["digits-ae", "digits-gan", "digits-rae", "digits-vae"]
    assert [v["version"] for v in models["digits-ae"]["versions"]] == [2, 1]
    assert models["digits-ae"]["versions"][0]["state"] == "ready"


async def test_models_reports_the_active_provider(client):
    r = await client.get("/models/digits-vae")
    assert r.status_code == 200
    assert r.json()["versions"][0]["runtime"] == {
        "runtime": "onnx",
        "device": "cpu",
        "provider": "CPUExecutionProvider",
    }


async def test_models_hides_the_training_paths(client):
    r = await client.get("/models/digits-vae")
    assert r.status_code == 200
    version = r.json()["versions"][0]
    assert "training" not in version and "graphs" not in version


async def test_healthz_is_alive(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "alive"}


async def test_readyz_is_ready_once_every_model_is_loaded(client):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["models"]["digits-ae"] == [1, 2]


# ----- not ready ----------------------------------------------------------------------------------
@pytest.fixture
async def loading_client(models_dir):
    backend = Backend("onnx", "cpu")
    backend.check()
    app = create_app(Settings(models=models_dir), ModelRepository(models_dir, backend))  # never loaded
    async with client_for(app) as c:
        yield c


async def test_readyz_is_503_with_retry_after_while_loading(loading_client):
    r = await loading_client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1" and "digits-ae version 2 is loading" in r.json()["error"]


async def test_encode_is_503_with_retry_after_while_loading(loading_client):
    r = await loading_client.post("/encode", json={"model": "digits-ae", "inputs": [ROW]})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1" and "still loading" in r.json()["error"]


async def test_readyz_names_a_refused_model_and_its_reason(copy_model, load_repository, tamper, tmp_path):
    tamper(copy_model("digits-gan", tmp_path) / "generator.onnx")
    app = create_app(Settings(models=tmp_path), load_repository(tmp_path))
    async with client_for(app) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert "digits-gan version 1 was refused: generator graph file generator.onnx fails its sha256" in r.json()["error"]


# ----- metrics ------------------------------------------------------------------------------------
async def test_metrics_count_requests_by_endpoint_model_and_status(client):
    await client.post("/encode", json={"model": "digits-rae", "inputs": [ROW]})
    await client.post("/encode", json={"model": "digits-gan", "inputs": [ROW]})
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert 'latentserve_requests_total{endpoint="/encode",model="digits-rae",status="200"} 1.0' in r.text
    assert 'latentserve_requests_total{endpoint="/encode",model="digits-gan",status="400"} 1.0' in r.text


async def test_metrics_record_latency_histograms(client):
    await client.post("/sample", json={"model": "digits-vae", "n": 1})
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert (
        'latentserve_request_duration_seconds_count{endpoint="/sample",model="digits-vae",status="200"} 1.0' in r.text
    )


# ----- OpenAPI ------------------------------------------------------------------------------------
async def test_openapi_examples_all_work_against_the_default_models(client):
    spec = (await client.get("/openapi.json")).json()
    tried, failed = 0, []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in content.get("examples", {}).items():
                r = await client.request(method, path, json=example["value"])
                tried += 1
                if r.status_code != 200:
                    failed.append(f"{path} {name}: {r.status_code} {r.text}")
    assert tried >= 10 and failed == []


async def test_openapi_documents_the_error_body(client):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    responses = r.json()["paths"]["/encode"]["post"]["responses"]
    assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


# ----- errors: one body shape, the right status, a message naming expected and received ---------
ERRORS = [
    (
        "wrong-width",
        "/encode",
        {"model": "digits-ae", "inputs": [ROW, ROW[:5]]},
        422,
        "row 1 of inputs has 5 features, expected 64 features",
    ),
    (
        "string-number",
        "/encode",
        {"model": "digits-ae", "inputs": [[*ROW[:3], "1.5", *ROW[4:]]]},
        422,
        'inputs[0][3] should be a number, got "1.5"',
    ),
    (
        "boolean",
        "/reconstruct",
        {"model": "digits-ae", "inputs": [[True] * 64]},
        422,
        "inputs[0][0] should be a number",
    ),
    ("null", "/anomaly-score", {"model": "digits-ae", "inputs": [[None] * 64]}, 422, "inputs[0][0] should be a number"),
    ("flat-list", "/encode", {"model": "digits-ae", "inputs": ROW}, 422, "inputs[0] should be a list, got 0.0"),
    ("empty-inputs", "/encode", {"model": "digits-ae", "inputs": []}, 422, "inputs is empty"),
    ("empty-row", "/encode", {"model": "digits-ae", "inputs": [[]]}, 422, "inputs[0] is empty"),
    ("missing-inputs", "/anomaly-score", {"model": "digits-ae"}, 422, "inputs is required"),
    ("unknown-field", "/encode", {"model": "digits-ae", "input": [ROW]}, 422, "input is not a known field"),
    ("no-model-named", "/encode", {"inputs": [ROW]}, 422, 'several models are loaded: name one with "model"'),
    (
        "unknown-model",
        "/encode",
        {"model": "digits-xl", "inputs": [ROW]},
        404,
        "no model named 'digits-xl'; available: digits-ae (versions 1, 2)",
    ),
    (
        "unknown-version",
        "/sample",
        {"model": "digits-vae", "version": 3, "n": 1},
        404,
        "model 'digits-vae' has no version 3; available versions: 1",
    ),
    ("version-zero", "/sample", {"model": "digits-vae", "version": 0, "n": 1}, 422, "version"),
    (
        "gan-encode",
        "/encode",
        {"model": "digits-gan", "inputs": [ROW]},
        400,
        "model 'digits-gan' is a gan, which supports sample, anomaly-score; not encode",
    ),
    ("gan-reconstruct", "/reconstruct", {"model": "digits-gan", "inputs": [ROW]}, 400, "not reconstruct"),
    ("n-missing", "/sample", {"model": "digits-vae"}, 422, "n is required when no latents are given"),
    ("n-zero", "/sample", {"model": "digits-vae", "n": 0}, 422, "n: Input should be greater than or equal to 1"),
    ("n-too-many", "/sample", {"model": "digits-vae", "n": 10_001}, 422, "n must be between 1 and 10000"),
    ("n-float", "/sample", {"model": "digits-vae", "n": 2.5}, 422, "n should be an integer, got 2.5"),
    ("negative-temperature", "/sample", {"model": "digits-vae", "n": 1, "temperature": -1}, 422, "temperature"),
    ("negative-seed", "/sample", {"model": "digits-vae", "n": 1, "seed": -1}, 422, "seed"),
    (
        "latent-width",
        "/sample",
        {"model": "digits-vae", "latents": [[0.0] * 3]},
        422,
        "row 0 of latents has 3 values, expected 16 values",
    ),
    (
        "n-latents-disagree",
        "/sample",
        {"model": "digits-vae", "n": 2, "latents": [[0.0] * 16]},
        422,
        "n is 2 but latents has 1 rows",
    ),
    (
        "beyond-float32",
        "/encode",
        {"model": "digits-ae", "inputs": [[1e39] * 64]},
        422,
        "inputs[0][0] is not a finite float32 number",
    ),
    ("body-is-a-list", "/encode", [ROW], 422, "the body must be a JSON object"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), [pytest.param(*c[1:], id=c[0]) for c in ERRORS])
async def test_errors_name_what_was_expected_and_received(client, path, body, status, message):
    r = await client.post(path, json=body)
    assert r.status_code == status
    assert message in r.json()["error"], r.json()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "digits-ae", "inputs": [[NaN]]}', "NaN and Infinity at character 35 are not JSON numbers"),
        (b'{"model": "digits-ae", "inputs": [[-Infinity]]}', "NaN and Infinity at character 36 are not JSON numbers"),
        (b'{"model": "digits-ae", "inputs": [[1,', "the body is not valid JSON: unexpected end of data"),
        (b'{"model": "digits-ae", "inputs": [[1e999]]}', "number is infinity when parsed as double"),
        (b"[" * 2000, "the body is not valid JSON: depth limit exceeded"),
    ],
    ids=["nan", "infinity", "truncated", "overflow", "too-deep"],
)
async def test_raw_bodies_that_are_not_clean_json_are_422(client, content, message):
    r = await client.post("/encode", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert message in r.json()["error"]


async def test_a_body_without_json_content_type_is_422(client):
    r = await client.post("/encode", content=b'{"model": "digits-ae", "inputs": [[1]]}')
    assert r.status_code == 422
    assert "Content-Type: application/json" in r.json()["error"]


async def test_a_body_over_the_limit_is_413_stating_the_limit(models_dir, onnx_repository):
    app = create_app(Settings(models=models_dir, max_body_bytes=2048), onnx_repository)
    async with client_for(app) as c:
        r = await c.post("/encode", json={"model": "digits-ae", "inputs": [ROW] * 20})
    assert r.status_code == 413
    assert "the limit is 2048 bytes" in r.json()["error"]


async def test_a_body_over_the_limit_is_counted_under_its_endpoint(models_dir, onnx_repository):
    app = create_app(Settings(models=models_dir, max_body_bytes=2048), onnx_repository)
    async with client_for(app) as c:
        await c.post("/encode", json={"model": "digits-ae", "inputs": [ROW] * 20})
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert 'latentserve_requests_total{endpoint="/encode",model="",status="413"} 1.0' in r.text


async def test_a_streamed_body_over_the_limit_is_413(models_dir, onnx_repository):
    async def chunks():
        for _ in range(10):
            yield b" " * 1024  # no Content-Length: the limit is enforced on the bytes received

    app = create_app(Settings(models=models_dir, max_body_bytes=4096), onnx_repository)
    async with client_for(app) as c:
        r = await c.post("/encode", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "the limit is 4096 bytes" in r.json()["error"]


async def test_more_rows_than_the_limit_is_422_stating_the_limit(models_dir, load_repository):
    app = create_app(Settings(models=models_dir), load_repository(models_dir, max_rows=3))
    async with client_for(app) as c:
        r = await c.post("/anomaly-score", json={"model": "digits-rae", "inputs": [ROW] * 4})
    assert r.status_code == 422
    assert "inputs has 4 rows, the limit is 3 rows per request" in r.json()["error"]


async def test_an_unknown_model_page_is_404_listing_the_models(client):
    r = await client.get("/models/nope")
    assert r.status_code == 404
    assert "available: digits-ae" in r.json()["error"]


async def test_an_unknown_path_is_404_in_the_error_shape(client):
    r = await client.get("/predict")
    assert r.status_code == 404
    assert r.json() == {"error": "no endpoint at /predict; the endpoints are listed at /docs"}


async def test_a_wrong_method_is_405_naming_the_right_one(client):
    r = await client.get("/encode")
    assert r.status_code == 405
    assert r.json() == {"error": "GET is not allowed on /encode; use POST"}


# ----- both runtimes over HTTP --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/encode", {"model": "digits-vae", "inputs": [ROW, DIGIT_1]}, "logvar"),
        ("/reconstruct", {"model": "digits-rae", "inputs": [ROW, DIGIT_1]}, "reconstructions"),
        ("/sample", {"model": "digits-gan", "n": 8, "seed": 3}, "samples"),
        ("/anomaly-score", {"model": "digits-ae", "inputs": [ROW, DIGIT_1], "explain": True}, "contributions"),
        ("/anomaly-score", {"model": "digits-vae", "inputs": [ROW, DIGIT_1]}, "scores"),
    ],
)
async def test_backends_agree_over_http(client, ts_client, path, body, field):
    onnx, script = await client.post(path, json=body), await ts_client.post(path, json=body)
    assert onnx.status_code == script.status_code == 200
    assert np.max(np.abs(np.array(onnx.json()[field]) - np.array(script.json()[field]))) <= 1e-4


# ----- settings -----------------------------------------------------------------------------------
def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTSERVE_PORT", "9123")
    monkeypatch.setenv("LATENTSERVE_RUNTIME", "torchscript")
    settings = Settings(models=tmp_path)
    assert (settings.port, settings.runtime) == (9123, "torchscript")


def test_settings_refuse_a_missing_models_folder(tmp_path):
    with pytest.raises(ValidationError, match="is not a folder; train a model first"):
        Settings(models=tmp_path / "nope")


def test_settings_refuse_an_unknown_runtime(tmp_path):
    with pytest.raises(ValidationError, match="runtime"):
        Settings(models=tmp_path, runtime="tensorflow")
