"""The process's signals: SIGTERM drains, SIGINT stops, SIGHUP reloads the model repository.

SIGTERM: `/readyz` answers 503 at once and every response carries `Connection: close`; requests
are still served for `shutdown_delay_s`, the time a load balancer needs to see the 503 and stop
sending new ones; then the port closes and the requests in flight get up to `shutdown_grace_s`
to finish (those still running then are cancelled); the process exits with status 0.
SIGINT (Ctrl-C) does the same without the delay. A second SIGTERM or SIGINT stops at once.
SIGHUP: `ModelRepository.reload()` in a background thread, as `POST /admin/reload` does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from service.repository import ModelRepository

log = logging.getLogger(__name__)


class Lifecycle:
    """What the process is doing, for /readyz and the middleware: `stopping` turns true on SIGTERM."""

    def __init__(self) -> None:
        self.stopping = False


class Server(uvicorn.Server):
    """uvicorn's server with the signal handling above; uvicorn does the closing and the waiting."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, repository: ModelRepository, delay_s: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.repository = repository
        self.delay_s = delay_s
        self._stop_at: float | None = None
        self._pending: list[str] = []  # what the signal handler asked for, acted on by on_tick

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # Unlike uvicorn, the signal is not raised again: a stop asked for is a clean exit (status 0).

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the event loop's thread: only flags here, no logging.
        if sig == signal.SIGHUP:
            self._pending.append("reload")
        elif self._stop_at is not None:
            self._pending.append("force")
            self.force_exit = self.should_exit = True
        else:
            self.lifecycle.stopping = True
            delay = self.delay_s if sig == signal.SIGTERM else 0.0
            self._stop_at = time.monotonic() + delay
            self._pending.append(f"stop:{signal.Signals(sig).name}:{delay:g}")

    async def on_tick(self, counter: int) -> bool:
        while self._pending:
            self._act(self._pending.pop(0))
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)

    def _act(self, what: str) -> None:
        if what == "reload":
            log.info("SIGHUP: reloading the model repository")
            threading.Thread(target=self.repository.reload, name="model-reload", daemon=True).start()
        elif what == "force":
            log.warning("second stop signal: stopping now, without waiting for requests in flight")
        else:
            _, name, delay = what.split(":")
            log.info(
                "%s: not ready; serving for %s s more, then waiting up to %g s for requests in flight",
                name,
                delay,
                self.config.timeout_graceful_shutdown or 0,
            )
