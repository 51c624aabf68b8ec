"""The limits: requests in flight (503 + Retry-After, no queue) and the time budget (504, or 408
for a body that does not arrive), on the middleware alone, in the app, and on a real server.
The body-size and rows limits are tested in test_api.py and test_integration.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time

import httpx
import pytest

from service import batching
from service.app import create_app
from service.lifecycle import Lifecycle
from service.limits import Admission
from service.schemas import DIGIT_0
from service.settings import Settings
from tests.live_server import LiveServer, latentserve, slow_body

pytestmark = pytest.mark.anyio
ROW = [float(v) for v in DIGIT_0]
JSON = {"content-type": "application/json"}


class Gate:
    """An ASGI app whose requests wait until `open()`; it counts those waiting."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiting = 0

    def open(self) -> None:
        self.event.set()

    async def __call__(self, scope, receive, send) -> None:
        self.waiting += 1
        await self.event.wait()
        self.waiting -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


class Sleeper:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __call__(self, scope, receive, send) -> None:
        await asyncio.sleep(self.seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def wait_for(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


# ----- requests in flight -------------------------------------------------------------------------
async def test_admission_answers_503_with_retry_after_past_the_limit():
    gate = Gate()
    app = Admission(gate, max_in_flight=2, budget_s=30, lifecycle=Lifecycle())
    async with client(app) as c:
        held = [asyncio.create_task(c.get("/encode")) for _ in range(2)]
        await wait_for(lambda: gate.waiting == 2)
        r = await c.get("/encode")
        gate.open()
        assert [t.status_code for t in await asyncio.gather(*held)] == [200, 200]
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "2 requests in flight, the limit is 2 (LATENTSERVE_MAX_CONCURRENCY)" in r.json()["error"]


async def test_admission_frees_its_slots_when_requests_finish():
    gate = Gate()
    gate.open()
    app = Admission(gate, max_in_flight=1, budget_s=30, lifecycle=Lifecycle())
    async with client(app) as c:
        statuses = [(await c.get("/encode")).status_code for _ in range(5)]
    assert statuses == [200] * 5 and app.in_flight == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/admin/reload"])
async def test_admission_lets_probes_and_admin_through_when_full(path):
    gate = Gate()
    app = Admission(gate, max_in_flight=1, budget_s=30, lifecycle=Lifecycle())
    async with client(app) as c:
        held = asyncio.create_task(c.get("/encode"))
        await wait_for(lambda: gate.waiting == 1)
        probe = asyncio.create_task(c.get(path))
        await wait_for(lambda: gate.waiting == 2)  # admitted, not refused
        gate.open()
        assert (await probe).status_code == (await held).status_code == 200


# ----- time budget --------------------------------------------------------------------------------
async def test_time_budget_answers_504_naming_the_budget():
    app = Admission(Sleeper(5), max_in_flight=4, budget_s=0.2, lifecycle=Lifecycle())
    async with client(app) as c:
        r = await c.get("/sample")
    assert r.status_code == 504
    assert "time budget of 0.2 s (LATENTSERVE_REQUEST_TIMEOUT_S)" in r.json()["error"]
    assert app.in_flight == 0


async def test_time_budget_leaves_fast_requests_alone():
    app = Admission(Sleeper(0.01), max_in_flight=4, budget_s=1, lifecycle=Lifecycle())
    async with client(app) as c:
        assert (await c.get("/sample")).status_code == 200


async def test_stopping_adds_connection_close():
    lifecycle = Lifecycle()
    lifecycle.stopping = True
    app = Admission(Sleeper(0), max_in_flight=4, budget_s=1, lifecycle=lifecycle)
    async with client(app) as c:
        r = await c.get("/healthz")
    assert r.headers["connection"] == "close"


async def test_app_answers_503_past_max_concurrency(models_dir, onnx_repository):
    app = create_app(Settings(models=models_dir, max_concurrency=1), onnx_repository)
    async with client(app) as c:
        await c.get("/healthz")  # builds the middleware stack
        admission = app.middleware_stack
        while not isinstance(admission, Admission):
            admission = admission.app
        admission.in_flight = 1  # one request held elsewhere
        busy = await c.post("/encode", json={"model": "digits-ae", "inputs": [ROW]})
        probe = await c.get("/readyz")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert probe.status_code == 200


# ----- inference off the event loop -------------------------------------------------------------------
@pytest.fixture
def slow_encoder(monkeypatch, onnx_repository):
    """digits-ae's encode taking 1 s of (GIL-free) work, as a large graph run would (the tests send
    one row, so they turn off inline calls: a real 1-row call takes microseconds)."""
    predictor = onnx_repository.get("digits-ae")
    encode = predictor.encode

    def slow(x):
        time.sleep(1.0)
        return encode(x)

    monkeypatch.setattr(predictor, "encode", slow)
    monkeypatch.setitem(batching.CALLS, "encode", lambda m, x: m.encode(x))  # the instance's, patched
    return predictor


async def test_probes_answer_while_a_graph_runs(models_dir, onnx_repository, slow_encoder):
    app = create_app(Settings(models=models_dir, inline_budget_ms=0), onnx_repository)  # every call in the pool
    async with client(app) as c:
        request = asyncio.ensure_future(c.post("/encode", json={"model": "digits-ae", "inputs": [ROW]}))
        await asyncio.sleep(0.2)  # the encoder is running
        start = time.perf_counter()
        probe = await c.get("/healthz")
        took = time.perf_counter() - start
        assert not request.done()
        assert (await request).status_code == 200
    assert probe.status_code == 200 and took < 0.5  # on the loop, the probe would wait for the graph: ~0.8 s


async def test_a_compute_overrun_answers_504_and_drops_the_late_result(models_dir, onnx_repository, slow_encoder):
    app = create_app(Settings(models=models_dir, request_timeout_s=0.2, inline_budget_ms=0), onnx_repository)
    async with client(app) as c:
        start = time.perf_counter()
        r = await c.post("/encode", json={"model": "digits-ae", "inputs": [ROW]})
        took = time.perf_counter() - start
        await asyncio.sleep(1.0)  # the graph finishes meanwhile; its result goes nowhere
        after = await c.post("/reconstruct", json={"model": "digits-ae", "inputs": [ROW]})
    assert r.status_code == 504 and "time budget of 0.2 s" in r.json()["error"]
    assert took < 0.7  # the budget, not the graph's 1 s
    assert after.status_code == 200


# ----- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-concurrency", "0"), ("--request-timeout-s", "0"), ("--shutdown-grace-s", "-1")],
)
def test_serve_refuses_a_bad_limit_naming_flag_and_variable(models_dir, flag, value):
    done = subprocess.run(
        [*latentserve(), "serve", "--models", str(models_dir), flag, value], capture_output=True, text=True, timeout=60
    )
    variable = "LATENTSERVE_" + flag[2:].replace("-", "_").upper()
    assert done.returncode == 2
    assert f"({flag} / {variable})" in done.stderr


# ----- a real server: slow clients hold slots ---------------------------------------------------------
@pytest.fixture(scope="module")
def limited(models_dir, tmp_path_factory):
    flags = ("--max-concurrency", "2", "--request-timeout-s", "3", "--header-timeout-s", "1")
    server = LiveServer(models_dir, tmp_path_factory.mktemp("limits") / "serve.log", *flags)
    server.wait()
    yield server
    server.stop()


def test_serve_answers_503_while_slow_clients_hold_every_slot(limited):
    body, url = {"model": "digits-ae", "inputs": [ROW] * 20}, f"{limited.url}/encode"
    results = []
    uploads = [
        threading.Thread(
            target=lambda: results.append(httpx.post(url, content=slow_body(body, 1.5), headers=JSON, timeout=10))
        )
        for _ in range(2)
    ]
    for t in uploads:
        t.start()
    try:
        for _ in range(100):  # until both uploads are in flight
            held = "latentserve_requests_in_flight 2.0" in httpx.get(f"{limited.url}/metrics").text
            if held:
                break
            time.sleep(0.01)
        busy = httpx.post(f"{limited.url}/encode", json=body, timeout=10)
        ready = httpx.get(f"{limited.url}/readyz", timeout=10)
    finally:
        for t in uploads:
            t.join()
    assert held and busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert ready.status_code == 200
    assert sorted(r.status_code for r in results) == [200, 200]
    assert httpx.post(f"{limited.url}/encode", json=body, timeout=10).status_code == 200  # slots freed


def test_serve_answers_408_when_the_body_is_too_slow(limited):
    r = httpx.post(
        f"{limited.url}/encode",
        content=slow_body({"model": "digits-ae", "inputs": [ROW] * 20}, 5.0),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 408
    assert "did not arrive within the time budget of 3 s" in r.json()["error"]


@pytest.mark.parametrize("sent", [b"", b"POST /encode HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half-a-head"])
def test_serve_closes_connections_that_send_no_complete_head(limited, sent):
    with socket.create_connection(("127.0.0.1", limited.port)) as s:
        s.sendall(sent)
        s.settimeout(10)
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, nothing sent
        assert time.monotonic() - start < 5


def test_serve_keeps_a_connection_between_requests_within_the_head_timeout(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        first = c.get("/healthz")
        time.sleep(0.5)
        second = c.get("/healthz")
    assert first.status_code == second.status_code == 200
