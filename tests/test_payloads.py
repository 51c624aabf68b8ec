"""Request and response bodies: .npy both ways on every model endpoint, clear 422s for bad .npy
bodies, and the JSON fast path answering exactly as the pydantic schemas do."""

from __future__ import annotations

import io

import httpx
import numpy as np
import orjson
import pytest
from fastapi.exceptions import RequestValidationError

from service import payloads
from service.app import create_app
from service.handlers import describe_validation
from service.schemas import AnomalyScoreRequest, EncodeRequest, SampleRequest
from service.settings import Settings

pytestmark = pytest.mark.anyio
NPY = "application/x-npy"


@pytest.fixture
async def client(models_dir, onnx_repository):
    app = create_app(Settings(models=models_dir), onnx_repository)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


async def post_npy(client, path: str, array: np.ndarray, accept: str = NPY, **query) -> httpx.Response:
    headers = {"content-type": NPY, "accept": accept}
    return await client.post(path, content=npy(array), params=query, headers=headers)


# ----- .npy round trips ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "model", "query", "fields"),
    [
        ("/encode", "digits-ae", {}, ["latents"]),
        ("/encode", "digits-vae", {}, ["latents", "mu", "logvar"]),
        ("/reconstruct", "digits-rae", {"version": "1"}, ["reconstructions"]),
        ("/anomaly-score", "digits-vae", {"explain": "true"}, ["scores", "is_anomaly", "percentiles", "contributions"]),
        ("/anomaly-score", "digits-gan", {}, ["scores", "is_anomaly", "percentiles"]),
    ],
)
async def test_npy_round_trip_matches_the_json_answer(client, digits, path, model, query, fields):
    x = digits[:5]
    r = await post_npy(client, path, x, model=model, **query)
    assert r.status_code == 200
    assert r.headers["content-type"] == NPY and r.headers["latentserve-model"] == model
    got = load(r.content)
    body = {"model": model, "inputs": x.tolist(), **{k: orjson.loads(v) for k, v in query.items()}}
    want = (await client.post(path, json=body)).json()
    for field in fields:
        values = got if len(fields) == 1 else got[field]
        np.testing.assert_array_equal(values, np.asarray(want[field], dtype=values.dtype))
    if "threshold" in want:
        assert float(r.headers["latentserve-threshold"]) == want["threshold"]


async def test_npy_sample_decodes_the_latents_in_the_body(client):
    z = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    r = await post_npy(client, "/sample", z, model="digits-vae")
    assert r.status_code == 200
    want = (await client.post("/sample", json={"model": "digits-vae", "latents": z.tolist()})).json()["samples"]
    np.testing.assert_array_equal(load(r.content), np.asarray(want, np.float32))


async def test_json_request_gets_an_npy_answer_when_it_accepts_one(client):
    r = await client.post("/sample", json={"model": "digits-gan", "n": 3, "seed": 1}, headers={"accept": NPY})
    assert r.status_code == 200
    assert load(r.content).shape == (3, 64)


async def test_npy_request_without_accept_gets_json(client, digits):
    r = await post_npy(client, "/encode", digits[:2], accept="application/json", model="digits-ae")
    assert r.status_code == 200
    assert np.shape(r.json()["latents"]) == (2, 16)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.uint8, ">f4"])
async def test_npy_accepts_numeric_dtypes_and_fortran_order(client, digits, dtype):
    x = np.asfortranarray(digits[:3].astype(dtype))
    r = await post_npy(client, "/encode", x, model="digits-ae")
    assert r.status_code == 200
    want = (await post_npy(client, "/encode", digits[:3].astype(np.float32), model="digits-ae")).content
    assert r.content == want


# ----- bad .npy bodies: 422 with the reason, never a 500 ----------------------------------------
def header(descr: str, shape: str, fortran: str = "False") -> bytes:
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


BAD_NPY = [
    ("not-npy", b"[[1, 2, 3]]", "not a valid .npy file"),
    ("empty", b"", "not a valid .npy file"),
    ("truncated-header", npy(np.zeros((2, 64), np.float32))[:30], "not a valid .npy file"),
    ("truncated-data", npy(np.zeros((2, 64), np.float32))[:-4], "is truncated"),
    ("extra-bytes", npy(np.zeros((2, 64), np.float32)) + b"\0" * 4, "has extra bytes"),
    ("one-dimension", npy(np.zeros(64, np.float32)), "expected 2 dimensions"),
    ("three-dimensions", npy(np.zeros((1, 8, 8), np.float32)), "expected 2 dimensions"),
    ("bool", npy(np.zeros((1, 64), bool)), "dtype bool"),
    ("complex", npy(np.zeros((1, 64), np.complex64)), "dtype complex64"),
    ("strings", npy(np.full((1, 64), "1.5")), "dtype <U3"),
    ("structured", npy(np.zeros((1, 1), dtype=[("a", "<f4", (64,))])), "expected float16, float32"),
    ("object-pickle", None, "Python objects, which are never loaded"),
    ("bad-header", header("'<f4'", "'oops'"), "not a valid .npy file"),
    ("code-in-header", header("__import__('os').system('true')", "(1, 64)"), "not a valid .npy file"),
    ("huge-shape", header("'<f4'", "(1000000000, 1000000000)") + b"\0" * 64, "is truncated"),
    ("negative-shape", header("'<f4'", "(-1, 64)"), "expected 2 dimensions"),
    ("wrong-width", npy(np.zeros((2, 3), np.float32)), "row 0 of inputs has 3 features, expected 64"),
    ("no-rows", npy(np.zeros((0, 64), np.float32)), "inputs is empty"),
    ("nan", npy(np.full((1, 64), np.nan, np.float32)), "inputs[0][0] is not a finite float32 number (got nan)"),
]


@pytest.mark.parametrize(("content", "message"), [pytest.param(c, m, id=i) for i, c, m in BAD_NPY])
async def test_a_bad_npy_body_is_422_naming_the_problem(client, content, message):
    if content is None:
        buffer = io.BytesIO()
        np.save(buffer, np.array([[object()]], dtype=object), allow_pickle=True)
        content = buffer.getvalue()
    r = await client.post("/encode", content=content, params={"model": "digits-ae"}, headers={"content-type": NPY})
    assert r.status_code == 422
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"model": "digits-ae", "versoin": "1"}, "query.versoin is not a known field"),
        ({"model": "digits-ae", "version": "one"}, 'query.version should be an integer, got "one"'),
        ({"model": "digits-ae", "explain": "yes"}, 'query.explain should be true or false, got "yes"'),
        ({"model": "digits-xl"}, "no model named 'digits-xl'"),
        ({}, 'several models are loaded: name one with "model"'),
    ],
)
async def test_bad_npy_query_parameters_are_named(client, digits, query, message):
    r = await post_npy(client, "/anomaly-score", digits[:1], **query)
    assert r.status_code in (404, 422)
    assert message in r.json()["error"]


# ----- the JSON fast path answers as the schema does ------------------------------------------
ROW = [float(v) for v in range(64)]
BODIES = [
    {"model": "digits-ae", "inputs": [ROW, ROW]},
    {"model": "digits-ae", "version": 2, "inputs": [[int(v) for v in ROW]]},
    {"model": "true", "inputs": [ROW]},  # the word true inside a string
    {"model": "digits-ae", "inputs": [ROW[:5] + [True] + ROW[6:]]},
    {"model": "true", "inputs": [ROW[:5] + [True] + ROW[6:]]},  # one true in a string, one in the rows
    {"model": "digits-ae", "inputs": [ROW[:5] + ["1.5"] + ROW[6:]]},
    {"model": "digits-ae", "inputs": [ROW[:5] + [None] + ROW[6:]]},
    {"model": "digits-ae", "inputs": [ROW, ROW[:5]]},
    {"model": "digits-ae", "inputs": [ROW[:5] + [1e39] + ROW[6:]]},
    {"model": "digits-ae", "inputs": [[]]},
    {"model": "digits-ae", "inputs": []},
    {"model": "digits-ae", "inputs": ROW},
    {"model": "digits-ae", "inputs": [[ROW]]},
    {"model": "digits-ae", "inputs": [ROW], "unknown": 1},
    {"model": 'a"b', "inputs": [ROW]},  # an escaped quote: the slow path
    {"model": "digits-ae", "inputs": [ROW], "explain": True},
]


@pytest.mark.parametrize("data", BODIES, ids=range(len(BODIES)))
def test_json_fast_path_agrees_with_the_schema(data):
    schema = AnomalyScoreRequest if "explain" in data else EncodeRequest
    body = orjson.dumps(data)
    fast, slow = (
        outcome(lambda: payloads.parse_json(body, "application/json", schema)),
        outcome(lambda: schema.model_validate(data)),
    )
    if isinstance(slow, Exception):
        assert isinstance(fast, RequestValidationError)
        assert describe_validation(list(fast.errors())) == describe_validation(
            [{**e, "loc": ("body", *e["loc"])} for e in slow.errors()]
        )
    else:
        options, x = fast
        assert options.model == slow.model and options.version == slow.version
        if isinstance(x, np.ndarray):  # the fast path: the values the schema's path would make
            np.testing.assert_array_equal(x, np.asarray(slow.inputs, np.float32))
        else:
            assert x == slow.inputs


def test_json_fast_path_reads_plain_rows_without_the_schema():
    options, x = payloads.parse_json(
        orjson.dumps({"model": "m", "inputs": [ROW, ROW]}), "application/json", EncodeRequest
    )
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (2, 64)


def test_json_latents_take_the_fast_path_too():
    body = orjson.dumps({"model": "m", "n": 1, "latents": [[0.5] * 16]})
    options, z = payloads.parse_json(body, "application/json", SampleRequest)
    assert isinstance(z, np.ndarray) and options.n == 1


async def test_openapi_documents_npy_bodies_and_their_query_parameters(client):
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/anomaly-score"]["post"]
    assert NPY in operation["requestBody"]["content"] and NPY in operation["responses"]["200"]["content"]
    assert "model=…&version=…&explain=…" in operation["requestBody"]["content"][NPY]["description"]


def outcome(f):
    try:
        return f()
    except Exception as e:  # the test compares failures too
        return e
