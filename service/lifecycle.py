"""The process's signals: SIGTERM drains, SIGINT stops, SIGHUP reloads the model repository.

SIGTERM: `/readyz` answers 503 at once and every response carries `Connection: close`; requests
are still served for `shutdown_delay_s`, the time a load balancer needs to see the 503 and stop
sending new ones; then the port closes and the requests in flight get up to `shutdown_grace_s`
to finish (those still running then are cancelled); the process exits with status 0.
SIGINT (Ctrl-C) does the same without the delay. A second SIGTERM or SIGINT stops at once.
SIGHUP: `ModelRepository.reload()` in a background thread, as `POST /admin/reload` does.

Closing a listening socket resets every connection the kernel has completed but the server has not
accepted yet: clients see an accepted connection die. So the port closes in three steps: a socket
filter that drops every new SYN goes on the listener first (new clients retry, then are refused once
it closes: a refused connect, never a reset one); the loop accepts what the kernel had queued; the
connections accepted without a complete request head yet get `DRAIN_HEAD_WAIT_S` to send it; then
uvicorn closes the listener and lets the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from service.repository import ModelRepository

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
DRAIN_ACCEPT_S = 0.2  # time for the loop to accept the connections the kernel had queued
DRAIN_HEAD_WAIT_S = 2.0  # time for a just-accepted connection to send its request head
# One classic BPF instruction, `ret #0`: keep no byte of any packet, i.e. drop it (struct sock_filter).
_DROP_ALL = (ctypes.c_ubyte * 8).from_buffer_copy(struct.pack("HBBI", 0x06, 0, 0, 0))


def refuse_new_connections(sock: Any) -> bool:
    """Drop every packet to a listening socket from now on (new SYNs: the client retries, then is refused
    when the socket closes), leaving the connections the kernel already completed to be accepted.
    False where the system has no socket filters (the listener then closes as before)."""
    fprog = struct.pack("HL", 1, ctypes.addressof(_DROP_ALL))  # struct sock_fprog {len; *filter}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.warning("cannot filter new connections on the listener (%s); closing it directly", e)
        return False
    return True


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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the port without resetting accepted connections (the module's docstring), then
        uvicorn's shutdown: requests in flight get `timeout_graceful_shutdown` to finish."""
        listeners = [s for server in self.servers for s in server.sockets] + list(sockets or [])
        if any([refuse_new_connections(s) for s in listeners]):
            await asyncio.sleep(DRAIN_ACCEPT_S)
            deadline = time.monotonic() + DRAIN_HEAD_WAIT_S
            while time.monotonic() < deadline and any(
                getattr(c, "cycle", True) is None and not c.transport.is_closing()
                for c in list(self.server_state.connections)
            ):
                await asyncio.sleep(0.02)
        await super().shutdown(sockets)

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
