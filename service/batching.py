"""Dynamic micro-batching, and inference off the event loop.

Concurrent requests for one model, endpoint and options share one predictor call, and each gets its
own rows of the result back, in order. Merging and ordering stay on the event loop; the predictor
calls themselves run in a bounded thread pool (`Inference`), so that the loop keeps answering probes,
accepting connections and enforcing time budgets while a graph runs (ONNX Runtime and NumPy release
the GIL).

A request's rows, already checked by the predictor (`Predictor.inputs`), join the queue of their
(model, endpoint, options); the first to arrive schedules the flush for the next turn of the loop
(`max_delay_us` = 0: every request that arrived meanwhile joins, and a lone request waits for
nothing) or after `max_delay_us`. While as many of its batches run as the pool has threads, a queue
is not flushed: what arrives meanwhile waits for one to finish and joins the next batch, so that
batches grow with the load instead of splitting into many small concurrent calls (256-row scoring at 8
clients: 1.6x the rows/s of flushing every turn, bench/loop_results.md). A batch holds at most `max_batch_rows` rows: a request that would
overflow it flushes the queue first, and one with more rows than that runs alone. The predictor
computes every row independently of the others, so a batched result is the unbatched one; should a
merged call fail anyway, each request is retried alone, so that only a failing request fails. A
request that gave up meanwhile (its time budget spent, its client gone) is not answered: its result
is dropped.

Batchers hold their predictor weakly: a version removed by a reload is freed with its sessions.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass, replace
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from artifact.predictor import Predictor

ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
WAIT_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)

# endpoint -> the predictor call on checked rows (sample decodes latents drawn per request)
CALLS: dict[str, Callable[..., Any]] = {
    "encode": Predictor.encode,
    "reconstruct": Predictor.reconstruct,
    "anomaly-score": Predictor.anomaly_score,
    "sample": lambda model, z: model.sample(latents=z),
}


class Cost:
    """Seconds per row of one (predictor, endpoint, options) call, a moving average of measured calls."""

    def __init__(self) -> None:
        self.per_row_s: float | None = None  # unknown until a call was timed

    def observe(self, rows: int, seconds: float) -> None:
        sample = seconds / max(rows, 1)
        self.per_row_s = sample if self.per_row_s is None else 0.8 * self.per_row_s + 0.2 * sample


class Inference:
    """Where the predictor calls run: a bounded pool of `threads` threads (the rest wait their turn;
    admission control bounds how many can wait), or, for a call whose measured cost is under
    `inline_budget_s`, the event loop itself.

    The hop to a thread and back costs more than a small call (a 1-row encode takes 35 µs): on the
    2-core bench machine, pooling every call cost 25 % of the 256-row and 13 % of the one-row requests/s
    against the loop-only baseline (bench/loop_results.md). A call known to take under the budget
    (2 ms by default) cannot hold the loop for long, so probes still answer within a few ms; a call of
    unknown cost goes to the pool. `inline_budget_s` 0 sends every call to the pool.
    """

    def __init__(self, threads: int, inline_budget_s: float = 0.0) -> None:
        self.threads = threads
        self.inline_budget_s = inline_budget_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")

    async def __call__(self, call: Callable[..., Any], x: np.ndarray, cost: Cost | None = None) -> Any:
        cost = cost or Cost()
        if cost.per_row_s is not None and cost.per_row_s * len(x) <= self.inline_budget_s:
            return _timed(call, x, cost)
        return await asyncio.get_running_loop().run_in_executor(self.executor, _timed, call, x, cost)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _timed(call: Callable[..., Any], x: np.ndarray, cost: Cost) -> Any:
    start = time.perf_counter()
    result = call(x)
    cost.observe(len(x), time.perf_counter() - start)
    return result


class Batching:
    """The batchers of one app, by (predictor, endpoint, options); off: one pool call per request."""

    def __init__(
        self,
        enabled: bool,
        max_rows: int,
        max_delay_us: int,
        registry: CollectorRegistry,
        inference: Inference | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_rows = max_rows
        self.delay_s = max_delay_us / 1e6
        self.inference = inference or Inference(threads=1)
        # Keyed weakly by the predictor, which the batchers do not hold: a removed version is freed.
        self._batchers: weakref.WeakKeyDictionary[Predictor, dict[tuple, Batcher]] = weakref.WeakKeyDictionary()
        self._costs: weakref.WeakKeyDictionary[Predictor, dict[tuple, Cost]] = weakref.WeakKeyDictionary()
        labels = ["endpoint", "model"]
        self.rows = Histogram(
            "latentserve_batch_rows", "Rows per batched runtime call.", labels, buckets=ROWS_BUCKETS, registry=registry
        )
        self.wait = Histogram(
            "latentserve_batch_wait_seconds",
            "Time a request's rows waited in the batch queue.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )

    async def run(self, model: Predictor, endpoint: str, x: np.ndarray, **options: Any) -> Any:
        """CALLS[endpoint](model, x, **options) in the pool, merged with concurrent calls when enabled."""
        key = (endpoint, *sorted(options.items()))
        if not self.enabled:
            cost = self._costs.setdefault(model, {}).setdefault(key, Cost())
            return await self.inference(_Call(model, endpoint, options), x, cost)
        batchers = self._batchers.setdefault(model, {})
        batcher = batchers.get(key)
        if batcher is None:
            batcher = batchers[key] = Batcher(
                _Call(model, endpoint, options),
                min(self.max_rows, model.max_rows),  # a batch is one call: the predictor's row limit holds
                self.delay_s,
                self.rows.labels(endpoint, model.name),
                self.wait.labels(endpoint, model.name),
                self.inference,
            )
        return await batcher(x)


class _Call:
    """CALLS[endpoint](model, rows, **options), holding the predictor weakly (see the module doc)."""

    def __init__(self, model: Predictor, endpoint: str, options: dict[str, Any]) -> None:
        self.model = weakref.ref(model)
        self.call = CALLS[endpoint]
        self.options = options

    def __call__(self, x: np.ndarray) -> Any:
        model = self.model()
        if model is None:  # removed while the request waited: it asked for a version that is gone
            raise RuntimeError("the model version was removed while the request waited")
        return self.call(model, x, **self.options)


class Batcher:
    """One queue: rows in, one pool call per flush, each caller's slice of the result out."""

    def __init__(
        self,
        call: Callable[[np.ndarray], Any],
        max_rows: int,
        delay_s: float,
        rows: Any,
        wait: Any,
        inference: Inference | None = None,
    ) -> None:
        self.call = call
        self.max_rows = max_rows
        self.delay_s = delay_s
        self.rows_metric = rows
        self.wait_metric = wait
        self.inference = inference or Inference(threads=1)
        self.queue: list[tuple[np.ndarray, asyncio.Future, float]] = []
        self.queued_rows = 0
        self.flush_handle: asyncio.Handle | None = None
        self.running: set[asyncio.Task] = set()  # batches in the pool (kept referenced until done)
        self.cost = Cost()

    async def __call__(self, x: np.ndarray) -> Any:
        if len(x) >= self.max_rows:  # a full batch on its own
            self.rows_metric.observe(len(x))
            self.wait_metric.observe(0.0)
            return await self.inference(self.call, x, self.cost)
        if self.queued_rows + len(x) > self.max_rows:
            self.flush()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((x, future, time.perf_counter()))
        self.queued_rows += len(x)
        if self.queued_rows >= self.max_rows:
            self.flush()
        elif self.flush_handle is None and len(self.running) < self.inference.threads:
            self._schedule(loop)
        # else: a batch finishing schedules the next flush, with whatever arrived meanwhile
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.delay_s > 0:
            self.flush_handle = loop.call_later(self.delay_s, self.flush)
        else:
            self.flush_handle = loop.call_soon(self.flush)

    def _finished(self, task: asyncio.Task) -> None:
        self.running.discard(task)
        if self.queue and self.flush_handle is None:
            self._schedule(asyncio.get_running_loop())

    def flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        # A request cancelled while queued (client gone, time budget spent) is left out.
        queue = [item for item in self.queue if not item[1].done()]
        self.queue, self.queued_rows = [], 0
        if not queue:
            return
        now = time.perf_counter()
        for _, _, queued_at in queue:
            self.wait_metric.observe(now - queued_at)
        task = asyncio.ensure_future(self._run(queue))
        self.running.add(task)
        task.add_done_callback(self._finished)

    async def _run(self, queue: list[tuple[np.ndarray, asyncio.Future, float]]) -> None:
        if len(queue) == 1:
            await self._answer(queue[0][0], queue[0][1])
            return
        xs = [x for x, _, _ in queue]
        self.rows_metric.observe(sum(len(x) for x in xs))
        try:
            result = await self.inference(self.call, np.concatenate(xs), self.cost)
        except Exception:  # one request's doing, or every one's: retry each alone to tell
            await asyncio.gather(*(self._answer(x, future, observe=False) for x, future, _ in queue))
            return
        start = 0
        for x, future, _ in queue:
            if not future.done():  # gave up meanwhile: its rows are dropped
                future.set_result(take(result, start, start + len(x)))
            start += len(x)

    async def _answer(self, x: np.ndarray, future: asyncio.Future, observe: bool = True) -> None:
        if observe:
            self.rows_metric.observe(len(x))
        try:
            result = await self.inference(self.call, x, self.cost)
        except Exception as e:
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():
            future.set_result(result)


def take(result: Any, start: int, stop: int) -> Any:
    """Rows start:stop of a predictor result: an array, a dict or dataclass of arrays; scalars shared."""
    if isinstance(result, np.ndarray):
        return result[start:stop]
    if isinstance(result, dict):
        return {k: take(v, start, stop) for k, v in result.items()}
    if is_dataclass(result) and not isinstance(result, type):
        return replace(result, **{f.name: take(getattr(result, f.name), start, stop) for f in fields(result)})
    return result  # the threshold, or None
