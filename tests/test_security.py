"""Security: the API key (on and off), admin endpoints only with a key, keys never logged,
path traversal through names and versions, CORS closed unless configured, no pickle."""

from __future__ import annotations

import hmac
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from service import auth
from service.app import create_app
from service.schemas import DIGIT_0
from service.settings import Settings
from tests.live_server import LiveServer, latentserve

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
ROW = [float(v) for v in DIGIT_0]
KEY = "s3cret-key-0123456789-abcdef"
ENCODE = {"model": "digits-ae", "inputs": [ROW]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def open_client(models_dir, onnx_repository):
    async with client_for(create_app(Settings(models=models_dir), onnx_repository)) as c:
        yield c


@pytest.fixture
async def keyed_client(models_dir, onnx_repository):
    async with client_for(create_app(Settings(models=models_dir, api_key=KEY), onnx_repository)) as c:
        yield c


# ----- without a key ------------------------------------------------------------------------------
async def test_without_a_key_every_endpoint_is_open(open_client):
    r = await open_client.post("/encode", json=ENCODE)
    assert r.status_code == 200


async def test_without_a_key_admin_endpoints_do_not_exist(open_client):
    r = await open_client.post("/admin/reload")
    assert r.status_code == 404
    assert "/admin/reload" not in (await open_client.get("/openapi.json")).json()["paths"]


# ----- with a key ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}],
    ids=["bearer", "bearer-lowercase", "x-api-key"],
)
async def test_with_a_key_the_key_opens_every_endpoint(keyed_client, headers):
    encode = await keyed_client.post("/encode", json=ENCODE, headers=headers)
    models = await keyed_client.get("/models", headers=headers)
    docs = await keyed_client.get("/openapi.json", headers=headers)
    assert encode.status_code == models.status_code == docs.status_code == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "this endpoint needs the API key"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "the API key sent is not valid"),
        ({"Authorization": f"Bearer {KEY[:-1]}"}, "the API key sent is not valid"),
        ({"Authorization": f"Bearer {KEY}x"}, "the API key sent is not valid"),
        ({"Authorization": f"Basic {KEY}"}, "this endpoint needs the API key"),
        ({"Authorization": KEY}, "this endpoint needs the API key"),
        ({"X-API-Key": ""}, "this endpoint needs the API key"),
        ({"Api-Key": KEY}, "this endpoint needs the API key"),
    ],
    ids=["none", "wrong", "prefix", "longer", "basic", "no-scheme", "empty", "other-header"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/encode"),
        ("GET", "/models"),
        ("GET", "/models/digits-ae"),
        ("GET", "/openapi.json"),
    ],  # /docs: a public shell (tests/test_ui.py)
)
async def test_with_a_key_requests_without_it_are_401(keyed_client, headers, message, method, path):
    r = await keyed_client.request(method, path, json=ENCODE if method == "POST" else None, headers=headers)
    assert r.status_code == 401
    assert message in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")
    assert KEY not in r.text


async def test_with_a_key_unknown_paths_are_401_not_404(keyed_client):
    assert (await keyed_client.get("/no-such-endpoint")).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_with_a_key_the_probes_stay_open(keyed_client, path):
    assert (await keyed_client.get(path)).status_code == 200


@pytest.mark.parametrize("path", ["/healthz/", "//healthz", "/readyz/../models", "/metrics%2F..%2Fmodels"])
async def test_with_a_key_paths_dressed_as_probes_are_not_open(keyed_client, path):
    assert (await keyed_client.get(path)).status_code == 401


async def test_with_a_key_the_admin_endpoint_needs_it(keyed_client):
    refused = await keyed_client.post("/admin/reload")
    allowed = await keyed_client.post("/admin/reload", headers={"X-API-Key": KEY})
    assert refused.status_code == 401
    assert allowed.status_code == 200 and allowed.json()["unchanged"] == 5


async def test_with_a_key_openapi_declares_the_schemes(keyed_client):
    schema = (await keyed_client.get("/openapi.json", headers={"X-API-Key": KEY})).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "401" in schema["paths"]["/encode"]["post"]["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_keys_are_compared_in_constant_time(keyed_client, monkeypatch):
    calls, compare = [], hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    await keyed_client.get("/models", headers={"X-API-Key": "x"})
    assert calls == [(32, 32)]  # digests: the key's length does not show either


def test_settings_never_show_the_key(models_dir):
    settings = Settings(models=models_dir, api_key=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("tiny-k3y", "shorter than 16 characters"),
        ("", "shorter than 16"),
        ("with spaces in the key", "printable ASCII"),
    ],
)
def test_serve_refuses_a_weak_key_without_echoing_it(models_dir, key, message):
    done = subprocess.run(
        [*latentserve(), "serve", "--models", str(models_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LATENTSERVE_API_KEY": key, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "(LATENTSERVE_API_KEY)" in done.stderr and message in done.stderr
    assert not key or key not in done.stderr


def test_serve_never_logs_the_key(models_dir, tmp_path):
    server = LiveServer(models_dir, tmp_path / "serve.log", "--log-level", "debug", env={"LATENTSERVE_API_KEY": KEY})
    try:
        server.wait()
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY + "-wrong"}):
            server.client.post("/encode", json=ENCODE, headers=headers)
            server.client.get(f"/models?key={KEY[:8]}", headers=headers)
        server.client.post("/admin/reload", headers={"X-API-Key": KEY})
    finally:
        assert server.stop() == 0
    assert KEY not in server.output() and "401" in server.output()


# ----- path traversal -----------------------------------------------------------------------------
TRAVERSALS = [
    "../digits-ae",
    "../../etc/passwd",
    "..",
    ".",
    "/etc/passwd",
    "digits-ae/../digits-vae",
    "digits-ae/1",
    "..\\..\\windows",
    "%2e%2e%2fetc",
    "digits-ae\x00",
    "outside-model",
]


@pytest.fixture
async def traversal_client(copy_model, load_repository, tmp_path):
    """digits-ae in the repository; a valid model `outside-model` next to it, outside."""
    copy_model("digits-ae", tmp_path / "repo")
    copy_model("digits-vae", tmp_path, as_name="outside-model")
    app = create_app(Settings(models=tmp_path / "repo"), load_repository(tmp_path / "repo"))
    async with client_for(app) as c:
        yield c


@pytest.mark.parametrize("name", TRAVERSALS)
async def test_model_names_cannot_leave_the_repository(traversal_client, name):
    r = await traversal_client.post("/sample", json={"model": name, "n": 1})
    assert r.status_code == 404
    assert "available: digits-ae (versions 1)" in r.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/models/..",
        "/models/%2e%2e",
        "/models/..%2f..%2fetc%2fpasswd",
        "/models/%2e%2e%2foutside-model",
        "/models/outside-model",
        "/models/../outside-model",
        "/models/digits-ae%00",
    ],
)
async def test_model_paths_cannot_leave_the_repository(traversal_client, path):
    r = await traversal_client.get(path)
    assert r.status_code == 404
    assert set(r.json()) == {"error"}  # an error, never the outside model's description


@pytest.mark.parametrize("version", ["1", "../1", 1.0, True, -1, 0, 2**70, [1]])
async def test_versions_are_positive_integers_only(traversal_client, version):
    r = await traversal_client.post("/sample", json={"model": "digits-ae", "n": 1, "version": version})
    assert r.status_code == 422


# ----- CORS ---------------------------------------------------------------------------------------
async def test_cors_is_closed_by_default(open_client):
    simple = await open_client.get("/models", headers={"Origin": "https://evil.example"})
    preflight = await open_client.options(
        "/encode", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in simple.headers
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


async def test_cors_allows_only_the_configured_origins(models_dir, onnx_repository):
    settings = Settings(models=models_dir, cors_origins="https://app.example, http://localhost:3000", api_key=KEY)
    async with client_for(create_app(settings, onnx_repository)) as c:
        allowed = await c.options(
            "/encode",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        simple = await c.get("/models", headers={"Origin": "http://localhost:3000", "X-API-Key": KEY})
        other = await c.get("/models", headers={"Origin": "https://evil.example", "X-API-Key": KEY})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert simple.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-origin" not in other.headers


def test_cors_origins_are_validated(models_dir):
    with pytest.raises(ValueError, match="is not '\\*' or scheme://host"):
        Settings(models=models_dir, cors_origins="https://app.example/path")


# ----- artifacts never unpickled ------------------------------------------------------------------
def test_service_code_never_unpickles():
    sources = "\n".join(p.read_text() for p in (ROOT / "service").glob("*.py"))
    assert not re.search(r"\bpickle\b|torch\.load\(|allow_pickle\s*=\s*True|joblib", sources)


# ----- the container ----------------------------------------------------------------------------
def test_compose_api_runs_unprivileged_on_a_read_only_root():
    import yaml

    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert api["read_only"] is True and api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"] and api["volumes"] == ["models:/models:ro"]
