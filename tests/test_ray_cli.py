"""`latentserve serve --engine ray` as a user runs it: a real process starting its own Ray cluster.

Marker `ray` (about 60 s here: the cluster starts and stops once).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.ray


def _command(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _niceness(proc: Path) -> int:
    return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_ray_cli_serves_reloads_on_sighup_and_stops_on_sigterm(copy_model, tmp_path: Path) -> None:
    root = tmp_path / "repository"
    copy_model("digits-ae", root)
    server = LiveServer(root, tmp_path / "serve.log", "--engine", "ray", "--replicas", "1")
    try:
        ready = server.wait()  # through Ray's proxy, on the port given
        assert ready.json()["models"] == {"digits-ae": [1]}
        deadline = time.monotonic() + 30  # the proxy may answer before the command prints its line
        while "with 1 replicas (Ray)" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "with 1 replicas (Ray)" in server.output()
        # Ray's workers run at our niceness, not Ray's default 15 (starved beside any busy process)
        replicas = [p for p in Path("/proc").glob("[0-9]*") if _command(p).startswith("ray::ServeReplica")]
        assert replicas, "no ray::ServeReplica process found"
        assert {_niceness(p) for p in replicas} == {os.nice(0)}
        r = server.client.post("/encode", json={"model": "digits-ae", "inputs": [[1.0] * 64]})
        assert r.status_code == 200 and r.json()["version"] == 1
        copy_model("digits-ae", root, version=2)
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = server.client.post("/encode", json={"model": "digits-ae", "inputs": [[1.0] * 64]})
            assert r.status_code == 200, r.text
            if r.json()["version"] == 2:
                break
            time.sleep(0.5)
        assert r.json()["version"] == 2, "SIGHUP did not load the new version"
        assert "SIGHUP: reloading the model repository (generation 1)" in server.output()
    finally:
        code = server.stop(timeout=90)
    assert code == 0, server.output()[-2000:]
