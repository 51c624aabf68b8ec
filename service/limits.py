"""Admission control: bound the requests in flight and the time each may take; say so at once.

Past `max_concurrency` requests in flight a request is answered 503 with `Retry-After` before
its body is read: there is no queue to grow. A request whose response has not started within
`request_timeout_s` is answered 504, or 408 when its body had not fully arrived by then (a slow
client, not a slow server). The budget interrupts waiting (for the body, for a batch), not a
graph already running (ONNX Runtime cannot be stopped mid-run; nor can a worker thread): that
work finishes in the background and its result is dropped.

The probes (/healthz, /readyz, /metrics) and /admin are exempt, so that an overloaded service
still answers its orchestrator and its operator. While the service is stopping every response
carries `Connection: close`, so that clients stop reusing connections that are about to close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.lifecycle import Lifecycle
from service.middleware import send_error

PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})  # + OIP probes
RETRY_AFTER_S = 1


def exempt(path: str) -> bool:
    return path in PROBES or path.startswith("/admin/")


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        budget_s: float,
        lifecycle: Lifecycle,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.budget_s = budget_s
        self.lifecycle = lifecycle
        self.in_flight = 0  # one event loop: no lock needed
        if registry is not None:  # read at scrape time: nothing to do per request
            Gauge(
                "latentserve_requests_in_flight",
                "Requests admitted and not answered yet (the probes and /admin are not counted).",
                registry=registry,
            ).set_function(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.lifecycle.stopping:
            send = _closing(send)
        if exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            message = (
                f"the server is busy: {self.in_flight} requests in flight, the limit is {self.max_in_flight} "
                f"(LATENTSERVE_MAX_CONCURRENCY); retry after {RETRY_AFTER_S} s"
            )
            # The body is left unread: the connection cannot be reused.
            await send_error(send, 503, message, {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"})
            return
        self.in_flight += 1
        try:
            await self._within_budget(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _within_budget(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        body_done = not _has_body(scope)

        async def timed_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def timed_send(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                budget.reschedule(None)  # a response that has started is never cut in half
            await send(message)

        # asyncio.timeout rather than anyio cancel scopes: the same semantics at a quarter of the
        # per-request cost (bench/serve.py: +18 % one-row requests/s).
        try:
            async with asyncio.timeout(self.budget_s) as budget:
                await self.app(scope, timed_receive, timed_send)
        except TimeoutError:
            if started:
                raise
            budget_s = f"{self.budget_s:g} s (LATENTSERVE_REQUEST_TIMEOUT_S)"
            if body_done:
                status, message = 504, f"the request took longer than its time budget of {budget_s}; retry later"
            else:
                status, message = 408, f"the request body did not arrive within the time budget of {budget_s}"
            await send_error(send, status, message, {"Connection": "close"})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _closing(send: Send) -> Send:
    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return send_closing
