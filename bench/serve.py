"""Serving benchmark: the service as shipped against the app a user would write, the runtime in
process (the ceiling) and an endpoint that only parses the body (the transport ceiling).

    .venv/bin/python -m bench.serve [--models DIR] [--duration S] [--repeat R] [--out FILE]

Reports requests/s, rows/s and p50/p95/p99 latency for /encode and /anomaly-score at
concurrency 1, 8 and 32 with 1-row and 256-row requests, for:
  service       `latentserve serve` as shipped (default settings), JSON bodies
  service-npy   the same process, application/x-npy request and response bodies
  naive         bench/naive_app.py: FastAPI + pydantic `list[list[float]]` + torch eager
  transport     FastAPI endpoint that orjson-parses the same JSON body, returns a constant
  transport-npy the same endpoint given the .npy body: np.load, then the constant
  in-process    the runtime called in this process on NumPy arrays (one thread, back to back)
then the ratios the issue sets as targets, start-up time and resident memory.

Everything runs on loopback; every server is a subprocess under uvicorn with its defaults
(uvloop and httptools when installed). The load generator is wrk (`apt-get install wrk`),
one thread, with a Lua script that counts non-2xx responses: any, and the run fails. Each
cell runs `--repeat` times, the systems taking turns, so that ratios are measured side by
side; every loop is bounded in time and count. Default models: `python -m training.defaults
--models DIR`.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

ENDPOINTS = ("/encode", "/anomaly-score")
ROWS = (1, 256)
CONCURRENCY = (1, 8, 32)
SYSTEMS = ("service", "service-npy", "naive", "transport", "transport-npy")
RSS_REQUESTS = 100_000
START_TIMEOUT_S = 60

# The transport ceiling: `uvicorn bench.serve:transport`.
transport = FastAPI()


@transport.post("/encode")
@transport.post("/anomaly-score")
async def parse_only(request: Request) -> Response:
    body = await request.body()
    if request.headers.get("content-type") == "application/x-npy":
        np.load(io.BytesIO(body), allow_pickle=False)
    else:
        orjson.loads(body)
    return Response(b'{"ok":true}', media_type="application/json")


@transport.get("/readyz")
async def transport_ready() -> dict[str, str]:
    return {"status": "ready"}


LUA = """
local f = io.open("{body}", "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Content-Type"] = "{content_type}"
{accept}
local bad, count, limit = 0, 0, {limit}
response = function(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
  count = count + 1
  if limit > 0 and count >= limit then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d bad=%d errors=%d p50=%d p95=%d p99=%d\\n", summary.requests, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass
class Result:
    rps: float
    rows: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A subprocess on a free loopback port; `started_s` is spawn -> /readyz 200."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        start = time.perf_counter()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = start + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{name} exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.005)
        else:
            self.stop()
            raise SystemExit(f"{name} was not ready within {START_TIMEOUT_S} s:\n{self.log.read_text()}")
        self.started_s = time.perf_counter() - start

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Load:
    """wrk runs against one server: request bodies written once, a Lua script per kind."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def script(self, body: bytes, npy: bool, limit: int) -> Path:
        name = f"{abs(hash(body))}-{npy}-{limit}"
        body_file, lua = self.work / f"{name}.body", self.work / f"{name}.lua"
        if not lua.exists():
            body_file.write_bytes(body)
            lua.write_text(
                LUA.format(
                    body=body_file,
                    content_type="application/x-npy" if npy else "application/json",
                    accept='wrk.headers["Accept"] = "application/x-npy"' if npy else "",
                    limit=limit,
                )
            )
        return lua

    def run(self, url: str, body: bytes, rows: int, concurrency: int, seconds: int, npy=False, limit=0) -> Result:
        lua = self.script(body, npy, limit)
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua), url]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
        found = re.search(r"RESULT requests=(\d+) bad=(\d+) errors=(\d+) p50=(\d+) p95=(\d+) p99=(\d+)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found or not rps:
            raise SystemExit(f"wrk gave no result for {url}:\n{out}")
        requests, bad, errors, p50, p95, p99 = (int(g) for g in found.groups())
        if bad or errors or not requests:
            raise SystemExit(f"{url}: {bad} non-2xx responses and {errors} errors of {requests} requests")
        return Result(float(rps.group(1)), rows, p50 / 1000, p95 / 1000, p99 / 1000, requests)


def load_runtime(models: Path, model: str):
    from artifact.graphs import Backend
    from service.repository import ModelRepository

    backend = Backend("onnx", "cpu", threads=1)
    backend.check()
    repository = ModelRepository(models, backend)
    repository.load_all()
    return repository.get(model)


def in_process(runtime, endpoint: str, x: np.ndarray, seconds: float) -> Result:
    """The runtime's own ceiling: back-to-back calls on arrays, one intra-op thread, at most 100k calls."""
    call = runtime.encode if endpoint == "/encode" else runtime.anomaly_score
    for _ in range(100):
        call(x)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(times) < 100_000:
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    q = np.percentile(times, [50, 95, 99]) * 1000
    return Result(len(times) / sum(times), len(x), *(float(v) for v in q), len(times))


def bodies(model: str, rows: int, x: np.ndarray) -> dict[str, bytes]:
    buffer = io.BytesIO()
    np.save(buffer, x[:rows], allow_pickle=False)
    return {"json": orjson.dumps({"model": model, "inputs": x[:rows].tolist()}), "npy": buffer.getvalue()}


def sample_rows(models: Path, model: str, n: int) -> np.ndarray:
    """Real digits rows for the default models, else standard normal rows of the model's width."""
    from artifact.manifest import Manifest, list_versions

    manifest = Manifest.read(models / model / str(max(list_versions(models, model))))
    if manifest.n_features == 64 and manifest.data.get("source") == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data[:n].astype(np.float32)
    return np.random.default_rng(0).standard_normal((n, manifest.n_features)).astype(np.float32)


def check_parity(service: Server, naive: Server, model: str, x: np.ndarray) -> float:
    """The naive app does the same work: its answers match the service's (max abs difference)."""
    worst = 0.0
    for endpoint, field in (("/encode", "latents"), ("/anomaly-score", "scores")):
        body = {"model": model, "inputs": x[:8].tolist()}
        a = httpx.post(service.url + endpoint, json=body, timeout=10).json()[field]
        b = httpx.post(naive.url + endpoint, json=body, timeout=10).json()[field]
        worst = max(worst, float(np.max(np.abs(np.array(a) - np.array(b)))))
    if worst > 1e-3:
        raise SystemExit(f"the naive app and the service disagree by {worst}: not the same work")
    return worst


def model_requests(server: Server) -> float:
    """Requests counted by the service's own metrics on the model endpoints."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.findall(r'latentserve_requests_total\{endpoint="/(?:encode|anomaly-score)",[^}]*\} ([\d.e+]+)', text)
    return sum(float(v) for v in found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("LATENTSERVE_MODELS", "model_repository"))
    parser.add_argument("--model", default="digits-ae", help="an ae or rae model (the naive app serves those)")
    parser.add_argument("--duration", type=int, default=1, help="whole seconds per wrk run (default 1)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell, systems taking turns (median)")
    parser.add_argument("--out", default="bench/serve_results.md", help="markdown results (default %(default)s)")
    args = parser.parse_args(argv)
    models = Path(args.models)
    if not any(models.glob(f"{args.model}/*/manifest.json")):
        raise SystemExit(f"no model {args.model} in {models}: python -m training.defaults --models {models}")
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSERVE_")}  # "as shipped"
    env["LATENTSERVE_MODELS"] = str(models)
    python = sys.executable
    serve = [python, "-m", "service", "serve", "--log-level", "warning"]
    uvicorn = [python, "-m", "uvicorn", "--log-level", "warning"]
    x = sample_rows(models, args.model, max(ROWS))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        starts = []
        for _ in range(3):  # start-up: spawn -> /readyz 200, every model loaded and warm
            s = Server("service-start", serve, env, work)
            starts.append(s.started_s)
            s.stop()
        servers: dict[str, Server] = {}
        try:  # every server started is stopped, whatever fails
            servers["service"] = Server("service", serve, env, work)
            servers["naive"] = Server("naive", [*uvicorn, "bench.naive_app:app"], env, work)
            servers["transport"] = Server("transport", [*uvicorn, "bench.serve:transport"], env, work)
            servers["service-npy"], servers["transport-npy"] = servers["service"], servers["transport"]
            results, rss, parity, warm_count = run_all(args, servers, Load(work), models, x, env)
        finally:
            for s in servers.values():
                s.stop()
    load = (load_before, os.getloadavg()[0])
    report = render(args, results, starts, rss, parity, warm_count, load)
    print(report)
    Path(args.out).write_text(report)
    print(f"written to {args.out}")
    return 0


def run_all(args, servers: dict[str, Server], load: Load, models: Path, x: np.ndarray, env: dict[str, str]):
    service = servers["service"]
    warm_count = model_requests(service)  # the model warm-up at load must not count
    parity = check_parity(service, servers["naive"], args.model, x)
    cells = [(e, r, c) for e in ENDPOINTS for r in ROWS for c in CONCURRENCY]
    runtime = load_runtime(models, args.model)
    kinds = {r: bodies(args.model, r, x) for r in ROWS}

    def url(system: str, endpoint: str) -> str:
        query = f"?model={args.model}" if system == "service-npy" else ""
        return servers[system].url + endpoint + query

    def hit(system: str, endpoint: str, rows: int, concurrency: int, seconds: int, limit: int = 0) -> Result:
        npy = system.endswith("-npy")
        body = kinds[rows]["npy" if npy else "json"]
        return load.run(url(system, endpoint), body, rows, concurrency, seconds, npy=npy, limit=limit)

    for system in SYSTEMS:  # warm-up, not recorded
        for endpoint in ENDPOINTS:
            for rows in ROWS:
                hit(system, endpoint, rows, 8, 1)
    served = 0
    rss = {"after warm-up": service.rss_mib()}
    results: dict[tuple, Result] = {}
    for endpoint, rows, concurrency in cells:
        runs: dict[str, list[Result]] = {s: [] for s in SYSTEMS}
        for _ in range(args.repeat):
            for system in SYSTEMS:
                runs[system].append(hit(system, endpoint, rows, concurrency, args.duration))
        for system, rs in runs.items():
            results[(system, endpoint, rows, concurrency)] = median(rs)
            if system.startswith("service"):
                served += sum(r.requests for r in rs)
        if concurrency == 1:
            results[("in-process", endpoint, rows, 1)] = in_process(runtime, endpoint, x[:rows], args.duration)
        print(
            f"{endpoint} rows={rows} c={concurrency}: "
            + ", ".join(f"{s} {results[(s, endpoint, rows, concurrency)].rps:.0f}/s" for s in SYSTEMS),
            flush=True,
        )
    top_up = RSS_REQUESTS - served
    if top_up > 0:  # at least 100,000 requests since warm-up, then resident memory again
        hit("service", "/encode", 1, 32, 120, limit=top_up)
        served += top_up
    rss["after requests"] = service.rss_mib()
    rss["requests"] = served
    return results, rss, parity, warm_count


def median(runs: list[Result]) -> Result:
    by_rps = sorted(runs, key=lambda r: r.rps)
    middle = by_rps[len(by_rps) // 2]
    return Result(
        statistics.median(r.rps for r in runs),
        middle.rows,
        middle.p50_ms,
        middle.p95_ms,
        middle.p99_ms,
        sum(r.requests for r in runs),
    )


def render(args, results, starts, rss, parity, warm_count, load) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Serving benchmark (`python -m bench.serve`)",
        "",
        f"Model `{args.model}`; wrk, one thread, {args.duration} s per run, median of {args.repeat} runs per cell, "
        "systems taking turns; loopback; rows/s = requests/s x rows per request.",
        f"Commit {commit or '?'}; {os.cpu_count()} CPUs, load average {load[0]:.1f} before and {load[1]:.1f} after "
        "(other jobs share the machine: compare ratios within a run, not absolute figures across runs).",
        "",
        "| endpoint | rows | c | system | requests/s | rows/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for endpoint in ENDPOINTS:
        for rows in ROWS:
            for c in CONCURRENCY:
                for system in (*SYSTEMS, "in-process"):
                    r = results.get((system, endpoint, rows, c))
                    if r is not None:
                        lines.append(
                            f"| {endpoint} | {rows} | {c if system != 'in-process' else '-'} | {system} | {r.rps:,.0f} "
                            f"| {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} |"
                        )
    lines += [
        "",
        "## Ratios",
        "",
        "| endpoint | rows | c | service / naive | service / transport | "
        "service-npy / naive | service-npy / transport-npy | service-npy / in-process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint in ENDPOINTS:
        for rows in ROWS:
            inproc = results[("in-process", endpoint, rows, 1)]
            for c in CONCURRENCY:
                s, n, t, b, tb = (
                    results[(k, endpoint, rows, c)]
                    for k in ("service", "naive", "transport", "service-npy", "transport-npy")
                )
                lines.append(
                    f"| {endpoint} | {rows} | {c} | {s.rps / n.rps:.2f} | {s.rps / t.rps:.2f} | {b.rps / n.rps:.2f} "
                    f"| {b.rps / tb.rps:.2f} | {b.rows_per_s / inproc.rows_per_s:.2f} |"
                )
    lines += ["", "## Targets", ""] + targets(results, starts, rss)
    lines += [
        "",
        f"Start-up (spawn to `/readyz` 200, {len(starts)} starts): "
        + ", ".join(f"{s:.2f} s" for s in starts)
        + f". Model-endpoint requests in the service's metrics after start-up: {warm_count:.0f} (warm-up excluded).",
        f"Naive app vs service on the same rows: max abs difference {parity:.1e} (same work).",
    ]
    return "\n".join(lines) + "\n"


def targets(results, starts, rss) -> list[str]:
    r = results
    enc = [r[(s, "/encode", 1, 32)] for s in ("service", "naive", "transport")]
    ano = [r[(s, "/anomaly-score", 256, 32)] for s in ("service", "naive", "service-npy")]
    inproc = r[("in-process", "/anomaly-score", 256, 1)]
    c1 = [(k, v) for k, v in r.items() if k[0].startswith("service") and k[3] == 1]
    worst = max(c1, key=lambda kv: kv[1].p99_ms / kv[1].p50_ms)
    reference = max(v.p99_ms / v.p50_ms for k, v in r.items() if k[0].startswith("transport") and k[3] == 1)
    growth = rss["after requests"] / rss["after warm-up"] - 1
    checks = [
        ("1-row /encode, c=32: service >= 2x naive requests/s", enc[0].rps / enc[1].rps, 2.0),
        ("1-row /encode, c=32: service >= 0.7x transport requests/s", enc[0].rps / enc[2].rps, 0.7),
        ("256-row /anomaly-score, c=32: service (JSON) >= 4x naive rows/s", ano[0].rows_per_s / ano[1].rows_per_s, 4.0),
        (
            "256-row /anomaly-score, c=32: service-npy >= 0.5x in-process rows/s",
            ano[2].rows_per_s / inproc.rows_per_s,
            0.5,
        ),
    ]
    lines = [f"- {'met' if v >= want else 'NOT met'}: {what}: {v:.2f}x" for what, v, want in checks]
    ratio = worst[1].p99_ms / worst[1].p50_ms
    lines.append(
        f"- {'met' if ratio <= 3 else 'NOT met'}: p99 <= 3x p50 at c=1, every service cell: worst {ratio:.2f}x "
        f"({worst[0][0]} {worst[0][1]} {worst[0][2]} rows); the transport ceiling's worst in the same run: "
        f"{reference:.2f}x"
    )
    lines.append(
        f"- {'met' if abs(growth) <= 0.10 else 'NOT met'}: resident memory {rss['after warm-up']:.0f} MiB after "
        f"warm-up, {rss['after requests']:.0f} MiB after {rss['requests']:,} more requests ({growth:+.1%})"
    )
    lines.append(f"- {'met' if max(starts) <= 1 else 'NOT met'}: ready within 1 s: slowest start {max(starts):.2f} s")
    return lines


if __name__ == "__main__":
    sys.exit(main())
