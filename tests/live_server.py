"""A real `latentserve serve` process on a free loopback port, for the tests that need one
(signals, slow clients, fuzzing), and a slow client to keep requests in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson

START_TIMEOUT_S = 60


def latentserve() -> list[str]:
    script = Path(sys.executable).with_name("latentserve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "latentserve"]


def client_for(app) -> httpx.AsyncClient:
    """An httpx client on an app in process (the ASGI transport, no socket)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, models: Path, log: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # The developer's own LATENTSERVE_* variables (an API key, say) must not change the tests.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSERVE_")}
        environment = {**inherited, "LATENTSERVE_THREADS": "1", **(env or {})}
        command = [*latentserve(), "serve", "--models", str(models), "--port", str(self.port), *flags]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait(
        self, path: str = "/readyz", status: int = 200, until: Callable[[httpx.Response], bool] | None = None
    ) -> httpx.Response:
        """Poll `path` until it answers `status` (and, when given, `until(response)` holds)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                r = self.client.get(path)
                if r.status_code == status and (until is None or until(r)):
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def slow_body(payload: dict, seconds: float, chunks: int = 10) -> Iterator[bytes]:
    """The JSON body in `chunks` pieces spread over `seconds`: a request that stays in flight."""
    body = orjson.dumps(payload)
    size = -(-len(body) // chunks)
    for i in range(0, len(body), size):
        yield body[i : i + size]
        time.sleep(seconds / chunks)
