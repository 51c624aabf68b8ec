"""`latentserve serve --workers N`: N worker processes on one listening socket, under one supervisor.

Each worker is a full `latentserve serve` (its own models, event loop, inference pool) running
`service.lifecycle.Server`, so the SIGTERM drain, the header timeout and SIGHUP reloads work in every
worker. Each listens on its own SO_REUSEPORT socket, so that the kernel spreads new connections
evenly over the workers (one shared socket lets whichever worker wakes first take most of them).
The supervisor holds the port, starts the workers and relays signals:
- SIGTERM / SIGINT: to every worker, which drain as one process would; the supervisor exits 0 when
  they have;
- SIGHUP: to every worker, which reload their repository;
- a worker's `POST /admin/reload` reloads that worker and asks the supervisor (SIGHUP) to reload the
  others, so that one reload reaches every worker and requests never alternate between versions;
- a worker that dies while not stopping is restarted.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
SUPERVISOR_ENV = "LATENTSERVE_SUPERVISOR_PID"  # set in each worker: where to send reload requests


def serve_workers(settings: Any, overrides: dict[str, Any], sock: socket.socket) -> int:
    """Run `settings.workers` workers until a stop signal; the exit status. `sock`: bound, never
    listening (`reuseport_socket`), it holds the port for the workers' SO_REUSEPORT sockets."""
    context = multiprocessing.get_context("spawn")
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    workers: list[BaseProcess] = []
    stopping: list[int] = []
    reloads: list[int] = []

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(overrides,), name="latentserve-worker")
        process.start()
        return process

    def on_signal(sig: int, frame: FrameType | None) -> None:
        (reloads if sig == signal.SIGHUP else stopping).append(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    workers = [start() for _ in range(settings.workers)]
    log.info("supervisor %s: %d workers on http://%s:%s", os.getpid(), len(workers), settings.host, settings.port)
    try:
        while not stopping:
            if reloads:
                reloads.clear()
                _relay(workers, signal.SIGHUP)
            for i, process in enumerate(workers):
                if not process.is_alive() and not stopping:
                    log.error("worker %s exited with %s; starting another", process.pid, process.exitcode)
                    workers[i] = start()
            time.sleep(0.05)
        _relay(workers, stopping[0])
        for process in workers:
            process.join()
    finally:
        sock.close()
    return 0


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEADDR and SO_REUSEPORT: the supervisor's (never
    listening, it holds the port) and each worker's (listening: the kernel spreads connections)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _relay(workers: list[BaseProcess], sig: int) -> None:
    for process in workers:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, sig)


def _worker(overrides: dict[str, Any]) -> None:
    """One worker process: the app and the draining server of `latentserve serve`, on its own socket."""
    from service.cli import run_server
    from service.settings import Settings

    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only, which relays it once
    settings = Settings(**{**overrides, "workers": 1})
    sock = reuseport_socket(settings.host, settings.port)
    sock.listen(2048)
    run_server(settings, sockets=[sock])


def ask_supervisor_to_reload() -> None:
    """From a worker: have the supervisor relay a reload to every worker (no-op when not supervised)."""
    pid = os.environ.get(SUPERVISOR_ENV)
    if pid and pid.isdigit() and int(pid) != os.getpid():
        try:
            os.kill(int(pid), signal.SIGHUP)
        except OSError as e:
            log.warning("cannot ask the supervisor %s to reload the other workers: %s", pid, e)
