"""Micro-batching: merged runtime calls give each request exactly its unbatched result, in order,
within max_batch_rows; one request's failure stays its own. Timings are not asserted here."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service import batching as batching_module
from service.app import create_app
from service.batching import Batcher, Batching
from service.errors import InvalidInput
from service.settings import Settings

pytestmark = pytest.mark.anyio


def batching(max_rows: int = 1024, max_delay_us: int = 0) -> Batching:
    return Batching(True, max_rows, max_delay_us, CollectorRegistry())


def requests(digits: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Consecutive slices of the digits: distinct rows, so that a mix-up would show."""
    bounds = np.cumsum([0, *sizes])
    return [digits[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class Recorder:
    """A runtime call that records each batch it is given and returns its rows times two."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise InvalidInput(f"a row holds {self.fail_on}")
        return 2 * x


def batcher(call: Recorder, max_rows: int = 1024) -> Batcher:
    registry = Batching(True, max_rows, 0, CollectorRegistry())
    return Batcher(call, max_rows, 0.0, registry.rows.labels("test", "m"), registry.wait.labels("test", "m"))


# ----- same results as unbatched calls, in order -------------------------------------------------
@pytest.mark.parametrize(
    ("model", "endpoint", "options"),
    [
        ("digits-ae", "encode", {}),
        ("digits-vae", "encode", {}),
        ("digits-rae", "reconstruct", {}),
        ("digits-vae", "anomaly-score", {"explain": True}),
        ("digits-gan", "anomaly-score", {"explain": False}),
    ],
)
async def test_batching_gives_each_request_its_unbatched_result(
    onnx_repository, digits, monkeypatch, model, endpoint, options
):
    runtime = onnx_repository.get(model)
    xs = requests(digits, [1, 3, 1, 7, 2, 16, 1, 5])
    calls: list[int] = []  # rows of each predictor call
    call = batching_module.CALLS[endpoint]

    def counted(m, x, **kw):
        calls.append(len(x))
        return call(m, x, **kw)

    monkeypatch.setitem(batching_module.CALLS, endpoint, counted)
    on = batching()
    batched = await asyncio.gather(*(on.run(runtime, endpoint, x, **options) for x in xs))
    assert calls == [sum(len(x) for x in xs)]  # eight requests, one merged predictor call
    method = {"encode": runtime.encode, "reconstruct": runtime.reconstruct, "anomaly-score": runtime.anomaly_score}
    for x, got in zip(xs, batched):
        assert_same(got, method[endpoint](x, **options))  # bit for bit: ONNX Runtime computes rows alone


async def test_batching_decodes_each_requests_latents(onnx_repository):
    runtime = onnx_repository.get("digits-vae")
    zs = [runtime.sample_latents(n=n, seed=seed) for n, seed in ((2, 0), (1, 1), (4, 2))]
    batched = await asyncio.gather(*(batching().run(runtime, "sample", z) for z in zs))
    for (n, seed), got in zip(((2, 0), (1, 1), (4, 2)), batched):
        np.testing.assert_array_equal(got, runtime.sample(n=n, seed=seed))


async def test_batching_keeps_order_under_concurrent_submission(digits):
    call = Recorder()
    queue = batcher(call)
    xs = requests(digits, [1 + (i * 7) % 5 for i in range(40)])

    async def submit(i: int) -> np.ndarray:
        await asyncio.sleep(0.0005 * (i % 4))  # arrivals spread over several loop turns
        return await queue(xs[i])

    results = await asyncio.gather(*(submit(i) for i in reversed(range(40))))
    for x, got in zip(reversed(xs), results):
        np.testing.assert_array_equal(got, 2 * x)
    assert len(call.batches) < 40  # some did merge


async def test_batching_with_a_delay_merges_requests_spread_in_time(onnx_repository, digits):
    runtime = onnx_repository.get("digits-ae")
    on = batching(max_delay_us=50_000)

    async def late(x: np.ndarray, wait: float) -> dict:
        await asyncio.sleep(wait)
        return await on.run(runtime, "encode", x)

    xs = requests(digits, [2, 2, 2])
    results = await asyncio.gather(*(late(x, 0.005 * i) for i, x in enumerate(xs)))
    for x, got in zip(xs, results):
        assert_same(got, runtime.encode(x))
    assert on.rows.labels("encode", "digits-ae")._sum.get() == 6


# ----- bounds ---------------------------------------------------------------------------------
async def test_batches_never_exceed_max_batch_rows(digits):
    call = Recorder()
    queue = batcher(call, max_rows=10)
    xs = requests(digits, [3, 4, 5, 1, 9, 2, 2, 6, 10, 1])
    results = await asyncio.gather(*(queue(x) for x in xs))
    assert max(call.batches) <= 10 and sum(call.batches) == sum(len(x) for x in xs)
    for x, got in zip(xs, results):
        np.testing.assert_array_equal(got, 2 * x)


async def test_a_request_larger_than_max_batch_rows_runs_alone(digits):
    call = Recorder()
    queue = batcher(call, max_rows=10)
    big, small = digits[:25], digits[25:27]
    results = await asyncio.gather(queue(small), queue(big))
    assert sorted(call.batches) == [2, 25]
    np.testing.assert_array_equal(results[1], 2 * big)


async def test_batches_respect_the_runtimes_row_limit(load_repository, models_dir, digits):
    runtime = load_repository(models_dir, max_rows=4).get("digits-ae")
    on = batching(max_rows=1024)  # larger than the runtime allows: the runtime's limit wins
    xs = requests(digits, [3, 3, 2, 4])
    results = await asyncio.gather(*(on.run(runtime, "encode", x) for x in xs))
    for x, got in zip(xs, results):
        assert_same(got, runtime.encode(x))


# ----- failures stay with their request ------------------------------------------------------
async def test_a_failing_request_does_not_fail_the_others(digits):
    call = Recorder(fail_on=-1.0)
    queue = batcher(call)
    bad = np.full((2, 64), -1.0, np.float32)
    xs = [digits[:2], bad, digits[2:5]]
    results = await asyncio.gather(*(queue(x) for x in xs), return_exceptions=True)
    assert isinstance(results[1], InvalidInput)
    np.testing.assert_array_equal(results[0], 2 * xs[0])
    np.testing.assert_array_equal(results[2], 2 * xs[2])


async def test_a_cancelled_request_leaves_the_batch(digits):
    call = Recorder()
    queue = batcher(call)
    gone = asyncio.ensure_future(queue(digits[:5]))
    kept = asyncio.ensure_future(queue(digits[5:6]))
    await asyncio.sleep(0)  # both queued, flush not yet run
    gone.cancel()
    np.testing.assert_array_equal(await kept, 2 * digits[5:6])
    assert call.batches == [1]


async def test_disabled_batching_calls_the_runtime_directly(onnx_repository, digits):
    runtime = onnx_repository.get("digits-ae")
    off = Batching(False, 1024, 0, CollectorRegistry())
    assert_same(await off.run(runtime, "encode", digits[:3]), runtime.encode(digits[:3]))


# ----- over HTTP ------------------------------------------------------------------------------
async def test_concurrent_http_requests_get_the_answers_of_unbatched_ones(models_dir, onnx_repository, digits):
    bodies = [{"model": "digits-vae", "inputs": digits[i : i + 1 + i % 3].tolist()} for i in range(24)]

    async def answers(settings: Settings) -> list[dict]:
        app = create_app(settings, onnx_repository)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            replies = await asyncio.gather(*(client.post("/anomaly-score", json=b) for b in bodies))
        assert all(r.status_code == 200 for r in replies)
        return [r.json() for r in replies]

    assert await answers(Settings(models=models_dir, batching=True)) == await answers(
        Settings(models=models_dir, batching=False)
    )


async def test_metrics_export_batch_sizes_and_queue_waits(models_dir, onnx_repository, digits):
    app = create_app(Settings(models=models_dir), onnx_repository)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await asyncio.gather(
            *(client.post("/encode", json={"model": "digits-rae", "inputs": [digits[i].tolist()]}) for i in range(6))
        )
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert 'latentserve_batch_rows_sum{endpoint="encode",model="digits-rae"} 6.0' in r.text
    assert 'latentserve_batch_wait_seconds_count{endpoint="encode",model="digits-rae"} 6.0' in r.text


def test_settings_bound_the_batching_options(tmp_path):
    with pytest.raises(ValueError, match="max_batch_rows"):
        Settings(models=tmp_path, max_batch_rows=0)
    with pytest.raises(ValueError, match="max_delay_us"):
        Settings(models=tmp_path, max_delay_us=-1)


def assert_same(got, want) -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want)
    else:  # AnomalyScores
        for field in ("scores", "percentiles", "is_anomaly", "contributions"):
            a, b = getattr(got, field), getattr(want, field)
            assert (a is None) == (b is None)
            if b is not None:
                np.testing.assert_array_equal(a, b)
        assert got.threshold == want.threshold
