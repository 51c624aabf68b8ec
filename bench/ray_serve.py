"""Ray Serve benchmark: `latentserve serve --engine ray --replicas 1|2` against `latentserve serve`.

    nice -n 10 .venv/bin/python -m bench.ray_serve --models DIR [--duration S] [--out FILE]

For each system, started fresh as a subprocess on loopback: the time from the command to
/readyz answering 200 (for Ray: starting the cluster, Serve and the replicas), the resident
memory of the whole process tree (for Ray: GCS, raylet, controller, proxy, replicas, ...), and
wrk's requests/s for /encode with 1-row and 256-row JSON bodies at 8 connections (rows/s =
requests/s x rows). Ratios are against the plain process, measured in the same run. Any
non-2xx answer fails the run. Needs wrk (`apt-get install wrk`) and latentserve[ray].
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

SYSTEMS = {
    "serve": [],
    "ray-1": ["--engine", "ray", "--replicas", "1"],
    "ray-2": ["--engine", "ray", "--replicas", "2"],
    # Ray's proxy straight to the replicas: the gateway's hop (and its retry) measured by difference
    "ray-1-direct": ["--engine", "ray", "--replicas", "1", "--no-gateway"],
    "ray-2-direct": ["--engine", "ray", "--replicas", "2", "--no-gateway"],
}
ROWS = (1, 256)
CONNECTIONS = 8
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total_kib = 0
    for p in family:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total_kib += int(match.group(1)) if match else 0
    return total_kib / 1024


def wrk(url: str, rows: int, duration: float, workdir: Path) -> float:
    body = orjson.dumps({"model": "digits-ae", "inputs": [[8.0] * 64] * rows}).decode()
    script = workdir / f"post{rows}.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [=[{body}]=]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "-s", str(script), f"{url}/encode"],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def run_system(name: str, flags: list[str], models: Path, duration: float, workdir: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSERVE_")}
    command = [sys.executable, "-m", "service", "serve", "--models", str(models), "--port", str(port), *flags]
    log = open(workdir / f"{name}.log", "wb")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                raise SystemExit(f"{name} did not start:\n{(workdir / f'{name}.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        result = {"ready_s": time.monotonic() - started}
        wrk(url, 1, 1.0, workdir)  # warm-up
        for rows in ROWS:
            result[f"rps_{rows}"] = wrk(url, rows, duration, workdir)
        result["rss_mib"] = tree_rss_mib(process.pid)
        return result
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def report(results: dict[str, dict[str, float]], duration: float) -> str:
    base = results["serve"]
    lines = [
        f"/encode, JSON, {CONNECTIONS} connections, {duration:g} s per cell (wrk -t1), digits-ae, "
        f"{os.cpu_count()} CPUs; ratio = against `latentserve serve` in the same run.",
        "",
        "| system | ready after (s) | memory, process tree (MiB) | 1-row req/s | ratio | 256-row req/s | rows/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['ready_s']:.1f} | {r['rss_mib']:.0f} | {r['rps_1']:.0f} | {r['rps_1'] / base['rps_1']:.2f} "
            f"| {r['rps_256']:.0f} | {r['rps_256'] * 256:.0f} | {r['rps_256'] / base['rps_256']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        results = {
            name: run_system(name, flags, args.models, args.duration, Path(tmp)) for name, flags in SYSTEMS.items()
        }
    text = report(results, args.duration)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
