"""Data-parallel training throughput and memory: rows/s and peak RSS per rank with 1, 2, ... N
processes under torchrun, on a generated (rows × features) float32 .npy (written to a temporary
folder, never committed), through the real `training.pipeline.prepare` + `training.train.fit`.

    python -m bench.distributed                         # CPU: 1 and 2 processes, one thread each
    python -m bench.distributed --device cuda --procs 1,2,4,8 --batch-size 8192   # N GPUs, NCCL

Each configuration runs the large-data path (memory-mapped .npy) and, for comparison, the in-memory
path (`LATENTSERVE_MAP_BYTES` above the file size). Results: bench/distributed_results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Peak RssAnon (private memory) and RssFile (mapped file pages, shared with the page cache)."""

    def __init__(self, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.every_s, self.anon, self.file, self.stopped = every_s, 0, 0, False

    def run(self) -> None:
        while not self.stopped:
            self.anon = max(self.anon, _status_kib("RssAnon"))
            self.file = max(self.file, _status_kib("RssFile"))
            time.sleep(self.every_s)


def worker(args: argparse.Namespace) -> int:
    """One rank: prepare + fit for --epochs, report rows/s and peak memory as JSON."""
    sampler = RssSampler()
    sampler.start()
    import torch

    from training import pipeline
    from training.config import TrainConfig
    from training.distributed import Context
    from training.train import fit

    torch.set_num_threads(1)
    ctx = Context.from_env(args.device, args.batch_size)
    cfg = TrainConfig(
        kind=args.kind, name="bench", data=args.data, epochs=args.epochs, batch_size=args.batch_size,
        device=args.device, threads=1,
    )  # fmt: skip
    cfg, _, _, x_train, x_val = pipeline.prepare(cfg, ctx)
    ctx.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    fit(cfg, x_train, x_val, progress=False, ctx=ctx)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    ctx.barrier()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    sampler.stopped = True
    steps = cfg.epochs * (len(x_train) // cfg.batch_size)
    report = {
        "rank": ctx.rank,
        "world": ctx.world_size,
        "rows_per_s": steps * cfg.batch_size / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this rank's CPU time in fit: what it costs without contention
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_anon_mib": sampler.anon / 1024,
        "peak_file_mib": sampler.file / 1024,
    }
    Path(args.out, f"rank{ctx.rank}.json").write_text(json.dumps(report))
    ctx.close()
    return 0


def launch(args: argparse.Namespace, procs: int, mapped: bool, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    env["LATENTSERVE_MAP_BYTES"] = "0" if mapped else str(2**50)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    cmd += ["-m", "bench.distributed", "--worker", "--out", str(folder), "--data", args.data]
    cmd += ["--kind", args.kind, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    cmd += ["--device", args.device]
    subprocess.run(cmd, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(procs)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--procs", default="1,2", help="comma-separated process counts")
    p.add_argument("--kind", default="ae")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=512, help="global batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-in-memory", action="store_true", help="only the memory-mapped path")
    p.add_argument("--results", default=str(ROOT / "bench" / "distributed_results.md"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        args.data = str(Path(tmp) / "rows.npy")
        rng = np.random.default_rng(0)
        x = np.lib.format.open_memmap(args.data, mode="w+", dtype=np.float32, shape=(args.rows, args.features))
        mix = rng.normal(size=(args.features, args.features)).astype(np.float32)
        for a in range(0, args.rows, 100_000):  # correlated columns, written in blocks
            b = min(args.rows, a + 100_000)
            x[a:b] = rng.normal(size=(b - a, args.features)).astype(np.float32) @ mix
        x.flush()
        del x
        size_mib = Path(args.data).stat().st_size / 2**20
        rows = []
        for procs in [int(n) for n in args.procs.split(",")]:
            for mapped in (True,) if args.no_in_memory else (True, False):
                reports = launch(args, procs, mapped, Path(tmp) / f"{procs}-{mapped}")
                rows.append((procs, mapped, reports))
                print(procs, "mapped" if mapped else "in-memory", json.dumps(reports), flush=True)
    write_results(args, size_mib, rows)
    return 0


def write_results(args: argparse.Namespace, size_mib: float, rows: list) -> None:
    import torch

    base = {m: r[0]["rows_per_s"] for n, m, r in rows if n == 1}
    lines = [
        "# Distributed training: rows/s and peak RSS per rank",
        "",
        f"`python -m bench.distributed {' '.join(sys.argv[1:])}`: {args.kind}, {args.rows:,} × {args.features} "
        f"float32 .npy ({size_mib:.0f} MiB), global batch {args.batch_size}, {args.epochs} epoch(s) (training "
        f"rows and one validation pass), device {args.device}, one thread per process, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs (shared with other users while it ran).",
        "",
        "| processes | data path | rows/s (all ranks) | vs 1 process | CPU s per rank in fit | peak RSS per rank (MiB) | of which private (RssAnon) | mapped file pages (RssFile) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for procs, mapped, reports in rows:
        rate = reports[0]["rows_per_s"]
        speedup = rate / base[mapped] if mapped in base else float("nan")
        rss = " / ".join(f"{r['peak_rss_mib']:.0f}" for r in reports)
        anon = " / ".join(f"{r['peak_anon_mib']:.0f}" for r in reports)
        file = " / ".join(f"{r['peak_file_mib']:.0f}" for r in reports)
        cpu = " / ".join(f"{r['cpu_seconds']:.1f}" for r in reports)
        lines.append(
            f"| {procs} | {'memory-mapped' if mapped else 'in memory'} | {rate:,.0f} | {speedup:.2f}× | "
            f"{cpu} | {rss} | {anon} | {file} |"
        )
    Path(args.results).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    sys.exit(main())
