"""Pure ASGI middleware: the request-body size limit and the Prometheus metrics.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a
stream per request on the hot path.
"""

from __future__ import annotations

import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps({"error": message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413, stating the limit, when a body is over `max_bytes` by header or by bytes received.

    The declared Content-Length is checked first (no read at all); chunked or lying
    clients are caught while streaming, so no more than the limit is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> str:
        return f"request body is {size}; the limit is {self.max_bytes} bytes (LATENTSERVE_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, self._too_large(f"{int(declared)} bytes"), {"Connection": "close"})
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, self._too_large(f"over {self.max_bytes} bytes"), {"Connection": "close"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notifications
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class Metrics:
    """Request counts and latency histograms labelled by endpoint, model and status code.

    The endpoint is the route's path template (unknown paths share "unmatched") and the
    model is the one a handler resolved, so that label values stay bounded whatever
    clients send.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.paths = paths  # fixed route paths: a 413 answered before routing still names its endpoint
        labels = ["endpoint", "model", "status"]
        self.requests = Counter("latentserve_requests", "HTTP requests served.", labels, registry=registry)
        self.latency = Histogram(
            "latentserve_request_duration_seconds",
            "Time from request to the last response byte.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or (scope["path"] if scope["path"] in self.paths else "unmatched")
            model = scope.get("state", {}).get("model", "")
            labels = (endpoint, model, str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - start)
