"""A small Python client for latentserve's native endpoints: NumPy arrays in and out (httpx + numpy only).

    from service.client import LatentClient
    with LatentClient("http://127.0.0.1:8000", api_key=None) as client:
        z = client.encode("digits-ae", x)["latents"]        # x: (B, F) raw features
        x_hat = client.reconstruct("digits-ae", x)
        samples = client.sample("digits-vae", n=8, seed=0)
        result = client.anomaly_score("digits-ae", x)      # .scores, .is_anomaly, .percentiles, .threshold

Bodies are .npy both ways (exact float32, no JSON parsing). A 503 with Retry-After (a model still
loading, the server busy) is retried after the time it asks for, up to `retries` times. Inputs over
the server's row or body limit are sent in chunks: the limit is learnt from the server's 422 or 413
message, the chunks' results are joined in order. Failures raise `LatentServeError` subclasses that
carry the status and the server's message. `AsyncLatentClient` has the same methods, awaitable.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

NPY = "application/x-npy"
ROW_LIMIT = re.compile(r"has (\d+) rows, the limit is (\d+) rows per request")
BODY_LIMIT = re.compile(r"the limit is (\d+) bytes")
NPY_HEADER_BYTES = 128  # np.save's header for a 2-D float32 array, rounded up
MAX_RETRY_AFTER_S = 30.0


class LatentServeError(Exception):
    """The server refused the request: `status` is its HTTP status, `message` its `{"error"}` text."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class InvalidInput(LatentServeError):  # 422
    pass


class NotSupported(LatentServeError):  # 400: the model's kind cannot serve this
    pass


class Unauthorized(LatentServeError):  # 401
    pass


class ModelNotFound(LatentServeError):  # 404
    pass


class PayloadTooLarge(LatentServeError):  # 413
    pass


class Unavailable(LatentServeError):  # 503: loading, busy (retried while Retry-After says so) or refused
    pass


class TimedOut(LatentServeError):  # 408, 504
    pass


ERRORS: dict[int, type[LatentServeError]] = {
    400: NotSupported,
    401: Unauthorized,
    404: ModelNotFound,
    408: TimedOut,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: Unavailable,
    504: TimedOut,
}


@dataclass(frozen=True)
class AnomalyScores:
    scores: np.ndarray  # (B,) higher = more anomalous
    percentiles: np.ndarray  # (B,) 0-100 among the calibration rows
    is_anomaly: np.ndarray  # (B,) bool: score > threshold
    threshold: float
    contributions: np.ndarray | None  # (B, F) when explain=True


# ----- what both clients share: request bodies, replies, chunks ------------------------------------
def _npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x, allow_pickle=False)
    return buffer.getvalue()


def _matrix(x: Any, what: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]  # one row
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{what} must be a (rows, values) array with at least one row, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _error(response: httpx.Response) -> LatentServeError:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text or response.reason_phrase
    retry = response.headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    return ERRORS.get(response.status_code, LatentServeError)(response.status_code, message, retry_after)


def _chunk_rows(error: LatentServeError, row_bytes: int) -> int | None:
    """Rows per request that the error says the server takes, or None when it is not a size limit."""
    if isinstance(error, InvalidInput) and (m := ROW_LIMIT.search(error.message)):
        return int(m.group(2))
    if isinstance(error, PayloadTooLarge) and (m := BODY_LIMIT.search(error.message)):
        return max(1, (int(m.group(1)) - NPY_HEADER_BYTES) // row_bytes)
    return None


def _parse(endpoint: str, response: httpx.Response) -> Any:
    array = np.load(io.BytesIO(response.content), allow_pickle=False)
    if endpoint == "encode":
        return {"latents": array} if array.dtype.names is None else {k: array[k] for k in array.dtype.names}
    if endpoint in ("reconstruct", "sample"):
        return array
    threshold = float(response.headers["latentserve-threshold"])
    fields = array.dtype.names or ()
    contributions = array["contributions"] if "contributions" in fields else None
    return AnomalyScores(array["scores"], array["percentiles"], array["is_anomaly"], threshold, contributions)


def _join(endpoint: str, parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    if endpoint == "encode":
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if endpoint in ("reconstruct", "sample"):
        return np.concatenate(parts)
    contributions = None if parts[0].contributions is None else np.concatenate([p.contributions for p in parts])
    return AnomalyScores(
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.percentiles for p in parts]),
        np.concatenate([p.is_anomaly for p in parts]),
        parts[0].threshold,
        contributions,
    )


def _query(model: str, version: int | None, **options: Any) -> dict[str, str]:
    params = {"model": model, **({"version": str(version)} if version is not None else {})}
    for k, v in options.items():
        if v is not None:
            params[k] = "true" if v is True else "false" if v is False else str(v)
    return params


def _draw(model: str, version: int | None, n: int | None, seed: int | None, temperature: float | None) -> dict:
    """The JSON body of a /sample draw (no array to send)."""
    fields = {"model": model, "version": version, "n": n, "seed": seed, "temperature": temperature}
    return {k: v for k, v in fields.items() if v is not None}


class _Base:
    def __init__(self, url: str, api_key: str | None, retries: int) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.headers = {"Accept": NPY, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self.max_rows: dict[str, int] = {}  # learnt per model from the server's limits

    def _wait(self, error: LatentServeError, attempt: int) -> float | None:
        """Seconds to wait before retrying `error`, or None to raise it."""
        if not isinstance(error, Unavailable) or error.retry_after is None or attempt >= self.retries:
            return None
        return min(error.retry_after, MAX_RETRY_AFTER_S)


class LatentClient(_Base):
    """Blocking client; use as a context manager, or call close()."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0, retries: int = 5) -> None:
        super().__init__(url, api_key, retries)
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)

    def __enter__(self) -> LatentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def encode(self, model: str, x: Any, version: int | None = None) -> dict[str, np.ndarray]:
        """{"latents": (B, L)}; a vae adds "mu" and "logvar"."""
        return self._rows("encode", model, _matrix(x, "x"), version)

    def reconstruct(self, model: str, x: Any, version: int | None = None) -> np.ndarray:
        return self._rows("reconstruct", model, _matrix(x, "x"), version)

    def anomaly_score(self, model: str, x: Any, version: int | None = None, explain: bool = False) -> AnomalyScores:
        return self._rows("anomaly-score", model, _matrix(x, "x"), version, explain=explain)

    def sample(
        self,
        model: str,
        n: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        latents: Any = None,
        version: int | None = None,
    ) -> np.ndarray:
        """Decode `latents`, or draw n samples (one request: a seeded draw is not split)."""
        if latents is not None:
            return self._rows("sample", model, _matrix(latents, "latents"), version)
        return _parse("sample", self._post("sample", _draw(model, version, n, seed, temperature), None))

    def _rows(self, endpoint: str, model: str, x: np.ndarray, version: int | None, **options: Any) -> Any:
        query = _query(model, version, **options)
        parts, start = [], 0
        while start < len(x):
            rows = self.max_rows.get(model)
            chunk = x[start : start + (rows or len(x))]
            try:
                parts.append(_parse(endpoint, self._post(endpoint, query, chunk)))
            except LatentServeError as e:
                limit = _chunk_rows(e, x.shape[1] * x.itemsize)
                if limit is None or limit >= len(chunk):
                    raise
                self.max_rows[model] = limit
                continue
            start += len(chunk)
        return _join(endpoint, parts)

    def _post(self, endpoint: str, query: dict[str, Any], x: np.ndarray | None) -> httpx.Response:
        content = _npy(x) if x is not None else None
        headers = {"Content-Type": NPY} if x is not None else {}
        for attempt in range(self.retries + 1):
            if x is None:
                response = self.http.post(f"/{endpoint}", json=query)
            else:
                response = self.http.post(f"/{endpoint}", params=query, content=content, headers=headers)
            if response.status_code == 200:
                return response
            error = _error(response)
            wait = self._wait(error, attempt)
            if wait is None:
                raise error
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncLatentClient(_Base):
    """The same methods as LatentClient, awaitable; use `async with`, or await aclose()."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0, retries: int = 5) -> None:
        super().__init__(url, api_key, retries)
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers)

    async def __aenter__(self) -> AsyncLatentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def encode(self, model: str, x: Any, version: int | None = None) -> dict[str, np.ndarray]:
        return await self._rows("encode", model, _matrix(x, "x"), version)

    async def reconstruct(self, model: str, x: Any, version: int | None = None) -> np.ndarray:
        return await self._rows("reconstruct", model, _matrix(x, "x"), version)

    async def anomaly_score(
        self, model: str, x: Any, version: int | None = None, explain: bool = False
    ) -> AnomalyScores:
        return await self._rows("anomaly-score", model, _matrix(x, "x"), version, explain=explain)

    async def sample(
        self,
        model: str,
        n: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        latents: Any = None,
        version: int | None = None,
    ) -> np.ndarray:
        if latents is not None:
            return await self._rows("sample", model, _matrix(latents, "latents"), version)
        return _parse("sample", await self._post("sample", _draw(model, version, n, seed, temperature), None))

    async def _rows(self, endpoint: str, model: str, x: np.ndarray, version: int | None, **options: Any) -> Any:
        query = _query(model, version, **options)
        parts, start = [], 0
        while start < len(x):
            rows = self.max_rows.get(model)
            chunk = x[start : start + (rows or len(x))]
            try:
                parts.append(_parse(endpoint, await self._post(endpoint, query, chunk)))
            except LatentServeError as e:
                limit = _chunk_rows(e, x.shape[1] * x.itemsize)
                if limit is None or limit >= len(chunk):
                    raise
                self.max_rows[model] = limit
                continue
            start += len(chunk)
        return _join(endpoint, parts)

    async def _post(self, endpoint: str, query: dict[str, Any], x: np.ndarray | None) -> httpx.Response:
        content = _npy(x) if x is not None else None
        headers = {"Content-Type": NPY} if x is not None else {}
        for attempt in range(self.retries + 1):
            if x is None:
                response = await self.http.post(f"/{endpoint}", json=query)
            else:
                response = await self.http.post(f"/{endpoint}", params=query, content=content, headers=headers)
            if response.status_code == 200:
                return response
            error = _error(response)
            wait = self._wait(error, attempt)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
