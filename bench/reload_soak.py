"""Memory across reloads: publish and remove a version 50 times under traffic; RSS must stay flat.

    .venv/bin/python -m bench.reload_soak --models DIR [--cycles 50] [--out FILE]

Copies digits-ae and digits-vae from DIR into a scratch repository, serves it with an API key, keeps
4 clients posting, and `--cycles` times publishes digits-vae version 2 (a copy of version 1), reloads
(`POST /admin/reload`), removes it and reloads again. Reports the server's resident memory after the
first cycle and after the last (a removed version must free its ONNX sessions), and every failed
request (there must be none).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.serve import Server

KEY = "reload-soak-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reload_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("LATENTSERVE_MODELS", "model_repository"))
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--out", default="bench/reload_soak_results.md")
    args = parser.parse_args(argv)
    source = Path(args.models)
    with tempfile.TemporaryDirectory(prefix="reload-soak-") as tmp:
        root = Path(tmp) / "repository"
        for name in ("digits-ae", "digits-vae"):
            shutil.copytree(source / name / "1", root / name / "1")
        env = {**os.environ, "LATENTSERVE_API_KEY": KEY, "LATENTSERVE_THREADS": "1"}
        command = [sys.executable, "-m", "service", "serve", "--models", str(root), "--log-level", "warning"]
        server = Server("soak", command, env, Path(tmp))
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()
        row = json.loads((source / "digits-ae" / "1" / "manifest.json").read_text())["n_features"] * [1.0]

        def traffic(model: str) -> None:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/anomaly-score", json={"model": model, "inputs": [row] * 8})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:200]}")
                        answered[0] += 1
                    except httpx.HTTPError as e:
                        failures.append(repr(e))

        threads = [threading.Thread(target=traffic, args=(m,)) for m in ("digits-ae", "digits-vae") * 2]
        for t in threads:
            t.start()
        rss: list[float] = []
        start = time.monotonic()
        try:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as admin:
                for _ in range(args.cycles):
                    shutil.copytree(root / "digits-vae" / "1", root / "digits-vae" / "2")
                    manifest = json.loads((root / "digits-vae" / "2" / "manifest.json").read_text())
                    manifest["version"] = 2
                    (root / "digits-vae" / "2" / "manifest.json").write_text(json.dumps(manifest))
                    assert admin.post("/admin/reload").json()["loaded"] == ["digits-vae 2"]
                    shutil.rmtree(root / "digits-vae" / "2")
                    assert admin.post("/admin/reload").json()["removed"] == ["digits-vae 2"]
                    rss.append(rss_mib(server.process.pid))
        finally:
            stop.set()
            for t in threads:
                t.join()
            server.stop()
        took = time.monotonic() - start
    change = 100 * (rss[-1] / rss[0] - 1)
    text = "\n".join(
        [
            "# Reload soak (`python -m bench.reload_soak`)",
            "",
            f"{args.cycles} cycles of publish + reload + remove + reload of digits-vae version 2, in {took:.0f} s,",
            f"under 4 clients posting 8-row /anomaly-score requests ({answered[0]} answered, {len(failures)} failed).",
            "",
            "| RSS after cycle 1 | RSS after the last | change |",
            "|---:|---:|---:|",
            f"| {rss[0]:.1f} MiB | {rss[-1]:.1f} MiB | {change:+.1f} % |",
            "",
            f"RSS after each cycle (MiB): {', '.join(f'{v:.0f}' for v in rss)}",
            *([f"First failures: {failures[:3]}"] if failures else []),
        ]
    )
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if not failures and abs(change) <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
