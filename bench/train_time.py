"""Training seconds per kind with the defaults on a 10,000 × 100 table (the issue's 30 s bound on 2 cores).

    python -m bench.train_time [--rows 10000] [--features 100] [--kinds ae rae vae gan]

The table: rows on a 10-dimensional linear subspace plus noise, 5 % uniform outliers. Timed is
what `latentserve train` does before export: preparation (split, scaling), the fit and the
noise fold, one torch thread. Export (ONNX + TorchScript + parity checks) is timed apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def table(rows: int, features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10)) @ rng.normal(size=(10, features)) + 0.1 * rng.normal(size=(rows, features))
    n_out = rows // 20
    x[:n_out] = rng.uniform(x.min(0), x.max(0), size=(n_out, features))
    return x.astype(np.float32)


def time_kind(kind: str, data: Path, workdir: Path) -> tuple[float, float, int, int]:
    """(fit seconds, export seconds, epochs, members) for one kind with the defaults, as
    `latentserve train` runs it (pipeline.run without the run folder's figures). Fit: preparation,
    every ensemble member's fit and noise fold; export: the rest (evaluation, ONNX + TorchScript,
    parity checks, calibration)."""
    from artifact.manifest import Manifest
    from training import pipeline
    from training.config import TrainConfig

    cfg = TrainConfig(kind=kind, name=f"t-{kind}", data=str(data), models=str(workdir / "m"), runs=str(workdir / "r"))
    start = time.perf_counter()
    result = pipeline.run(cfg, progress=False, plots=False)
    total = time.perf_counter() - start
    assert result is not None
    manifest = Manifest.read(result.artifact)
    members = len(manifest.ensemble.members) if manifest.ensemble is not None else 1
    return result.fit_seconds, total - result.fit_seconds, int(manifest.training["epochs"]), members


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_time", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", default=["ae", "rae", "vae", "gan"])
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="train-time-") as tmp:
        data = Path(tmp) / "table.npy"
        np.save(data, table(args.rows, args.features))
        print(f"{args.rows} x {args.features} table, defaults, one torch thread")
        print("| kind | members | epochs | fit s | export s |\n|---|---|---|---|---|")
        for kind in args.kinds:
            fit_s, export_s, epochs, members = time_kind(kind, data, Path(tmp))
            print(f"| {kind} | {members} | {epochs} | {fit_s:.1f} | {export_s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
