"""Inference off the event loop: probe latency under the heaviest scoring, and what it costs.

    .venv/bin/python -m bench.loop --models DIR [--baseline REV] [--seconds S] [--out FILE]

Runs two `latentserve serve` processes side by side on the same repository: this checkout, and
`--baseline` (a git revision, default 5ba0ac6: inference on the event loop), checked out into a
temporary worktree. For each, taking turns:
  1. probes under load: `--clients` (default 64 = max_concurrency) clients post 10,000-row .npy
     /anomaly-score requests to digits-vae (16 posterior draws) and digits-gan (latent search)
     back to back, while /healthz and /readyz are polled every 20 ms; probe p50/p99/max;
  2. one-row /encode requests/s at 32 clients (wrk);
  3. every kind's default score: 256-row .npy /anomaly-score rows/s at 8 clients (wrk).
Writes a markdown table with the ratios (ours / baseline). Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.serve import Load, Server

KINDS = ("digits-ae", "digits-rae", "digits-vae", "digits-gan")
HEAVY = ("digits-vae", "digits-gan")


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    return buf.getvalue()


def probes_under_load(url: str, x: np.ndarray, clients: int, seconds: float, load: Load) -> dict[str, float]:
    """Probe latencies (ms) while wrk keeps `clients` 10,000-row scoring requests in flight (half to
    each heavy model); wrk is C, so the load generator takes little of the CPU the server needs."""
    lua = load.script(npy(np.resize(x, (10_000, x.shape[1]))), npy=True, limit=0)
    duration = int(seconds) + 4
    wrks = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{clients // len(HEAVY)}",
                f"-d{duration}s",
                "--timeout",
                "60s",
                "-s",
                str(lua),
                f"{url}/anomaly-score?model={model}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for model in HEAVY
    ]
    time.sleep(2.0)  # every connection has a request in flight
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=300) as c:  # the baseline's loop can stall for tens of seconds
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for path in ("/healthz", "/readyz"):
                start = time.perf_counter()
                assert c.get(path).status_code == 200
                latencies.append(1000 * (time.perf_counter() - start))
            time.sleep(0.02)
    heavy = bad = 0
    for w in wrks:
        out = w.communicate(timeout=duration + 120)[0]
        found = re.search(r"RESULT requests=(\d+) bad=(\d+) errors=(\d+)", out)
        assert found, out
        heavy += int(found.group(1))
        bad += int(found.group(2)) + int(found.group(3))
    with httpx.Client(base_url=url, timeout=30) as c:  # requests wrk gave up on still run: wait them out
        for _ in range(600):
            if "latentserve_requests_in_flight 0.0" in c.get("/metrics").text:
                break
            time.sleep(0.2)
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)],  # nearest rank
        "max": latencies[-1],
        "probes": len(latencies),
        "heavy_requests": heavy,
        "heavy_non_200": bad,
    }


def start(name: str, root: Path, models: Path, logs: Path) -> Server:
    """`python -m service serve` from `root` (ours, or the baseline's worktree) on a free port."""
    env = {**os.environ, "PYTHONPATH": str(root), "LATENTSERVE_THREADS": "1"}
    # -P: not the current folder first on sys.path, PYTHONPATH (the checkout to run) instead
    command = [sys.executable, "-P", "-m", "service", "serve", "--models", str(models), "--log-level", "warning"]
    return Server(name, command, env, logs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("LATENTSERVE_MODELS", "model_repository"))
    parser.add_argument("--baseline", default="5ba0ac6", help="git revision to compare with (default %(default)s)")
    parser.add_argument("--clients", type=int, default=64, help="heavy clients (default 64 = max_concurrency)")
    parser.add_argument("--seconds", type=float, default=8.0, help="probe-polling time per system")
    parser.add_argument("--out", default="bench/loop_results.md")
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    models = Path(args.models).resolve()
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        subprocess.run(
            ["git", "-C", str(here), "worktree", "add", "--detach", str(baseline), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            results = run(args, {"ours": here, "baseline": baseline}, models, x, work)
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(baseline)], check=False)
    text = render(args, results)
    Path(args.out).write_text(text)
    print(text)
    return 0


def run(args, roots: dict[str, Path], models: Path, x: np.ndarray, work: Path) -> dict[str, dict]:
    load = Load(work)
    results: dict[str, dict] = {name: {} for name in roots}
    for name, root in roots.items():
        server = start(name, root, models, work)
        try:
            url = server.url
            results[name]["probes"] = probes_under_load(url, x, args.clients, args.seconds, load)
            one = {"model": "digits-ae", "inputs": x[:1].tolist()}
            results[name]["encode_1_c32"] = load.run(url + "/encode", orjson.dumps(one), 1, 32, 3).rps
            for model in KINDS:
                body = npy(x[:256])
                r = load.run(url + f"/anomaly-score?model={model}", body, 256, 8, 3, npy=True)
                results[name][f"score_{model}"] = r.rows_per_s
        finally:
            server.stop()
    return results


def render(args, results: dict[str, dict]) -> str:
    ours, base = results["ours"], results["baseline"]
    lines = [
        f"# Inference off the event loop (`python -m bench.loop`, baseline {args.baseline})",
        "",
        f"Probes under load: {args.clients} clients posting 10,000-row .npy /anomaly-score requests to "
        f"{' and '.join(HEAVY)} back to back; /healthz and /readyz polled every 20 ms for {args.seconds:g} s.",
        "",
        "| measure | ours | baseline | ours / baseline |",
        "|---|---:|---:|---:|",
    ]
    lines.append(
        f"| probes answered in {args.seconds:g} s | {ours['probes']['probes']} | {base['probes']['probes']} | |"
    )
    for key in ("p50", "p99", "max"):
        a, b = ours["probes"][key], base["probes"][key]
        lines.append(f"| probe latency {key} (ms) | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    lines.append(
        f"| heavy requests answered (non-200 or errors) | {ours['probes']['heavy_requests']} "
        f"({ours['probes']['heavy_non_200']}) | {base['probes']['heavy_requests']} "
        f"({base['probes']['heavy_non_200']}) | |"
    )
    a, b = ours["encode_1_c32"], base["encode_1_c32"]
    lines.append(f"| 1-row /encode, c=32 (req/s) | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    for model in KINDS:
        a, b = ours[f"score_{model}"], base[f"score_{model}"]
        lines.append(f"| 256-row .npy /anomaly-score {model}, c=8 (rows/s) | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
