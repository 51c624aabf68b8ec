"""One rank of the 2-process parity test (tests/test_distributed.py): trains every case of
`CASES` through `training.train.fit` inside torchrun's environment and writes rank 0's parameters
and history (and every rank's validation history) to an .npz. Run with WORLD_SIZE=1 it is the
single-process reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from training import pipeline
from training.config import TrainConfig
from training.distributed import Context
from training.passes import training_stats
from training.rows import MappedRows
from training.train import fit, fold_noise

STEPS_ROWS = 960  # training rows: 15 global batches of 64, 2 epochs = 30 steps
CASES = {
    "ae": {"kind": "ae", "trim": 0.0},
    "ae-trim": {"kind": "ae", "trim": 0.1},
    "rae-l1": {"kind": "rae", "penalty": "l1", "lam": 1e-3, "trim": 0.1},
    "rae-l2": {"kind": "rae", "penalty": "l2", "lam": 1e-3, "trim": 0.0},
    "vae": {"kind": "vae", "trim": 0.1},
    "gan": {"kind": "gan"},
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# the large-data path (run with LATENTSERVE_MAP_BYTES=0): file, kind, scaling; ae on standardised data
# folds σ and fits the latent prior, both computed in chunks shared among the ranks
MAPPED_CASES = {"npy-ae": ("table.npy", "ae", "standard"), "csv-vae": ("table.csv", "vae", "robust")}


def main(out: str, tables: str | None = None) -> int:
    torch.set_num_threads(1)
    ctx = Context.from_env("cpu", batch_size=64)
    results: dict[str, np.ndarray] = {}
    for name, options in CASES.items():
        base = TrainConfig(name=name, epochs=2, batch_size=64, **options)
        cfg, _, _, x_train, x_val = pipeline.prepare(base)
        for dname, dtype in DTYPES.items():
            result = fit(cfg, x_train[:STEPS_ROWS], x_val, progress=False, ctx=ctx, dtype=dtype)
            params = [p.detach().double().reshape(-1) for p in result.model.state_dict().values()]
            results[f"{name}/{dname}/params"] = torch.cat(params).numpy()
            results[f"{name}/{dname}/history"] = np.array(json.dumps(result.history))
            results[f"{name}/{dname}/best_epoch"] = np.array(result.best_epoch)
    for name, (file, kind, scaling) in MAPPED_CASES.items() if tables else ():
        base = TrainConfig(kind=kind, name=name, data=str(Path(tables) / file), epochs=2, scaling=scaling)
        cfg, _, prep, x_train, x_val = pipeline.prepare(base, ctx)
        assert isinstance(x_train, MappedRows), "expected the memory-mapped path"
        result = fit(cfg, x_train, x_val, progress=False, ctx=ctx)
        prep, x_train, x_val = fold_noise(cfg, result, prep, x_train, x_val, ctx)
        stats = training_stats(cfg, result.model, x_train, ctx)
        params = [p.detach().double().reshape(-1) for p in result.model.state_dict().values()]
        results[f"{name}/params"] = torch.cat(params).numpy()
        results[f"{name}/scaling"] = np.array([prep.offset, prep.scale])
        results[f"{name}/stats"] = np.concatenate([stats.mean, stats.minimum, stats.maximum])
        prior = stats.prior or {"mean": [], "cholesky": []}
        results[f"{name}/prior"] = np.concatenate([np.ravel(prior["mean"]), np.ravel(prior["cholesky"])])
    np.savez(Path(out) / f"rank{ctx.rank}.npz", **results)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
