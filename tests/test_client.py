"""`LatentClient` and `AsyncLatentClient` against a real `latentserve serve`: every method, chunking past
the row and body limits, retries of 503 with Retry-After, and typed errors carrying the server's message."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from service.client import (
    AsyncLatentClient,
    InvalidInput,
    LatentClient,
    ModelNotFound,
    NotSupported,
    Unauthorized,
    Unavailable,
)
from tests.live_server import LiveServer, slow_body

KEY = "client-test-key-0123456789"
MAX_ROWS = 50
MAX_BODY = 8192  # 31 rows of 64 float32 features in one .npy body


@pytest.fixture(scope="module")
def server(copy_model, tamper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("client-models")
    for name in ("digits-ae", "digits-vae", "digits-gan"):
        copy_model(name, root)
    tamper(next(copy_model("digits-ae", root, as_name="broken-ae").glob("*.onnx")))
    env = {
        "LATENTSERVE_API_KEY": KEY,
        "LATENTSERVE_MAX_ROWS": str(MAX_ROWS),
        "LATENTSERVE_MAX_BODY_BYTES": str(MAX_BODY),
        "LATENTSERVE_MAX_CONCURRENCY": "1",  # one request in flight: a second one gets 503 + Retry-After
    }
    running = LiveServer(root, root.parent / "client.log", env=env)
    running.wait("/healthz")
    running.wait("/readyz", 503, until=lambda r: r.json()["status"] == "failed")  # loaded; broken-ae refused
    yield running
    running.stop()


@pytest.fixture()
def client(server: LiveServer) -> Iterator[LatentClient]:
    with LatentClient(server.url, api_key=KEY) as c:
        yield c


@pytest.fixture(scope="module")
def local(onnx_repository):
    """The same models in process: what the served answers must equal."""
    return lambda name: onnx_repository.get(name)


def test_client_every_method_matches_the_runtime(client, local, digits):
    x = digits[:10]
    encoded = client.encode("digits-vae", x)
    want = local("digits-vae").encode(x)
    assert set(encoded) == {"latents", "mu", "logvar"}
    for k in encoded:
        np.testing.assert_array_equal(encoded[k], want[k])
    np.testing.assert_array_equal(client.reconstruct("digits-ae", x, version=1), local("digits-ae").reconstruct(x))
    np.testing.assert_array_equal(client.sample("digits-gan", n=4, seed=3), local("digits-gan").sample(n=4, seed=3))
    z = np.zeros((2, 16), np.float32)
    np.testing.assert_array_equal(client.sample("digits-ae", latents=z), local("digits-ae").sample(latents=z))
    scores = client.anomaly_score("digits-ae", x, explain=True)
    want_scores = local("digits-ae").anomaly_score(x, explain=True)
    np.testing.assert_array_equal(scores.scores, want_scores.scores)
    np.testing.assert_array_equal(scores.is_anomaly, want_scores.is_anomaly)
    np.testing.assert_array_equal(scores.contributions, want_scores.contributions)
    assert scores.threshold == want_scores.threshold


def test_client_chunks_inputs_past_the_body_limit(client, local, digits):
    x = digits[:120]  # 30 kB of float32: over the 8 kB body limit, and over the 50-row limit
    got = client.anomaly_score("digits-ae", x)
    want = local("digits-ae").anomaly_score(x)
    assert client.max_rows["digits-ae"] == (MAX_BODY - 128) // 256
    assert got.scores.shape == (120,)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    np.testing.assert_array_equal(got.percentiles.shape, (120,))
    assert got.threshold == want.threshold


def test_client_chunks_inputs_past_the_row_limit(client, local):
    z = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)  # 7.7 kB: under the body limit
    got = client.sample("digits-vae", latents=z)
    assert client.max_rows["digits-vae"] == MAX_ROWS
    np.testing.assert_allclose(got, local("digits-vae").sample(latents=z), rtol=1e-5, atol=1e-6)


def test_client_errors_are_typed_and_carry_the_message(server, client, digits):
    with pytest.raises(NotSupported, match="gan") as info:
        client.encode("digits-gan", digits[:2])
    assert info.value.status == 400
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        client.encode("nope", digits[:2])
    with pytest.raises(InvalidInput, match="expected 64 features"):
        client.reconstruct("digits-ae", digits[:2, :10])
    with pytest.raises(Unavailable, match="refused at load") as info:
        client.reconstruct("broken-ae", digits[:2])
    assert info.value.retry_after is None  # refused, not loading: raised at once, never retried
    with LatentClient(server.url, api_key="wrong-key-wrong-key") as bad, pytest.raises(Unauthorized, match="not valid"):
        bad.encode("digits-ae", digits[:2])


def _hold_the_only_slot(server: LiveServer, seconds: float) -> threading.Thread:
    def slow() -> None:
        body = {"model": "digits-ae", "inputs": [[0.0] * 64]}
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        httpx.post(f"{server.url}/encode", content=slow_body(body, seconds), headers=headers, timeout=30)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)  # its first bytes are in: it holds the one slot
    return thread


def test_client_retries_503_after_retry_after(server, client, digits):
    thread = _hold_the_only_slot(server, 1.5)
    start = time.monotonic()
    z = client.encode("digits-ae", digits[:2])["latents"]
    waited = time.monotonic() - start
    thread.join()
    assert z.shape == (2, 16)
    assert waited >= 0.9, "answered at once: the slot was not held, the retry was not exercised"


def test_client_without_retries_raises_the_503(server, digits):
    thread = _hold_the_only_slot(server, 1.0)
    try:
        with LatentClient(server.url, api_key=KEY, retries=0) as c, pytest.raises(Unavailable, match="busy") as info:
            c.encode("digits-ae", digits[:2])
        assert info.value.retry_after == 1
    finally:
        thread.join()


def test_async_client_matches_the_sync_one(server, client, digits):
    async def run() -> tuple:
        async with AsyncLatentClient(server.url, api_key=KEY) as c:
            encoded = await c.encode("digits-ae", digits[:100])  # chunked past the body limit
            samples = await c.sample("digits-vae", n=3, seed=5)
            with pytest.raises(ModelNotFound):
                await c.anomaly_score("nope", digits[:2])
            return encoded, samples

    encoded, samples = asyncio.run(run())
    assert encoded["latents"].shape == (100, 16)
    np.testing.assert_allclose(encoded["latents"], client.encode("digits-ae", digits[:100])["latents"], rtol=1e-6)
    np.testing.assert_array_equal(samples, client.sample("digits-vae", n=3, seed=5))
