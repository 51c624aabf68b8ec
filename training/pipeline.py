"""One training run end to end: data → preprocessing → fit → metrics and plots → checkpoint → export.

Everything that can be refused (options, data) is checked before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from artifact import transforms
from training import data as data_mod
from training import plots as figures
from training import sources
from training.config import ConfigError, TrainConfig
from training.distributed import Context
from training.export import export_ensemble
from training.passes import TrainStats, training_stats
from training.train import Fit, fit, fold_noise, pick_device

log = logging.getLogger("latentserve.training")


@dataclass
class RunResult:
    artifact: Path  # <models>/<name>/<version>
    run_dir: Path
    metrics: dict
    fit_seconds: float = 0.0  # fitting every member (with its fold and metrics), not the files or the export


def prepare(cfg: TrainConfig, ctx: Context | None = None):
    """Load and check the data, resolve the config, split and scale: returns (cfg, ds, prep, x_train, x_val).

    Large .npy/.csv files (training/sources.py) come back as MappedRows, read batch by batch."""
    cfg.check()
    ds = sources.load(cfg.data, ctx, cfg.columns, cfg.drop_columns, cfg.image_shape, cfg.allow_constant)
    rest_idx, _cal_idx = data_mod.split_calibration_index(len(ds.x), cfg.calibration_fraction, cfg.seed)
    train_at, val_at = data_mod.split_index(len(rest_idx), cfg.val_fraction, cfg.seed)
    train_idx, val_idx = rest_idx[train_at], rest_idx[val_at]
    cfg = cfg.resolve(ds.x.shape[1], ds.is_pixels, len(train_idx), ctx.world_size if ctx is not None else 1)
    if len(train_idx) < cfg.batch_size:
        raise data_mod.DataError(
            f"{ds.source}: {len(train_idx)} training rows after the validation split, fewer than one "
            f"batch of {cfg.batch_size}: supply more rows or a smaller --batch-size"
        )
    if cfg.unit_range and cfg.scaling in ("standard",):
        raise ConfigError("binary cross-entropy / Bernoulli need --scaling minmax (or auto), not standard")
    if sources.is_mapped(ds):
        prep, x_train, x_val = sources.prepare_rows(ds, train_idx, val_idx, cfg, ctx)
        return cfg, ds, prep, x_train, x_val
    x_train_raw, x_val_raw = ds.x[train_idx], ds.x[val_idx]
    prep = data_mod.fit_preprocessing(ds, x_train_raw, cfg.scaling, cfg.allow_constant)
    x_train = transforms.to_graph_inputs(x_train_raw, prep)
    x_val = transforms.to_graph_inputs(x_val_raw, prep)
    if cfg.unit_range:
        data_mod.check_unit_range(x_train, ds.source)
    return cfg, ds, prep, x_train, x_val


def run(cfg: TrainConfig, progress: bool = True, ctx: Context | None = None, plots: bool = True) -> RunResult | None:
    """With N ranks (torchrun, training/distributed.py) every rank trains and joins the whole-data
    passes; only rank 0 writes the run folder and publishes, and the others return None at the end.
    `plots=False` leaves the run folder's figures out (benchmarks)."""
    ctx = ctx or Context(device=pick_device(cfg.device))
    cfg, ds, prep, x_train, x_val = prepare(cfg, ctx)
    if ctx.is_main:
        log.info("training %s", json.dumps(cfg.to_dict()))
        if ctx.distributed:
            log.info(
                "distributed: %d processes (%s on %s), global batch %d = %d rows per rank",
                ctx.world_size, "nccl" if ctx.device.type == "cuda" else "gloo", ctx.device.type,
                cfg.batch_size, ctx.local_batch(cfg.batch_size),
            )  # fmt: skip
    if cfg.ensemble > 1 and ctx.distributed:
        raise ConfigError("--ensemble trains its members one after the other: run it without torchrun")
    cal_idx = data_mod.split_calibration_index(len(ds.x), cfg.calibration_fraction, cfg.seed)[1]
    ckpts, firsts, fit_seconds = [], None, 0.0
    assert cfg.ensemble is not None  # resolved
    for i in range(cfg.ensemble):
        started = time.perf_counter()
        member = cfg.member(i)
        if cfg.ensemble > 1 and ctx.is_main:
            log.info("ensemble member %d of %d (seed %d)", i + 1, cfg.ensemble, member.seed)
        result = fit(member, x_train, x_val, progress=progress, ctx=ctx)
        m_prep, m_train, m_val = fold_noise(member, result, prep, x_train, x_val, ctx)
        stats = training_stats(member, result.model, m_train, ctx)
        if not ctx.is_main:
            continue
        m_val = np.asarray(m_val)  # the validation rows, in memory on rank 0 only (checkpoint, calibration)
        metrics = evaluate(member, result, m_train, m_val, stats)
        fit_seconds += time.perf_counter() - started
        ckpt = checkpoint(member, ds, m_prep, result, m_train, m_val, metrics, stats)
        ckpt["x_cal_raw"] = torch.from_numpy(np.asarray(ds.x[cal_idx], dtype=np.float32))
        ckpt["data"]["calibration_rows"] = int(len(cal_idx))
        ckpts.append(ckpt)
        if firsts is None:
            firsts = (result, m_prep, m_val, metrics)
    if not ctx.is_main:
        ctx.barrier()  # rank 0 writes and publishes meanwhile
        return None
    assert firsts is not None
    result, prep, x_val, metrics = firsts
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(cfg.runs) / f"{cfg.name}-{stamp}-seed{cfg.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ckpts[0], run_dir / "checkpoint.pt")
    for i, ckpt in enumerate(ckpts[1:], start=1):
        torch.save(ckpt, run_dir / f"checkpoint-member{i}.pt")
    (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": result.history}, indent=2))
    if plots:
        figures.save_all(run_dir, cfg, ds, result, x_val, prep)
    artifact = export_ensemble(ckpts, Path(cfg.models))
    ctx.barrier()
    return RunResult(artifact, run_dir, metrics, fit_seconds)


@torch.no_grad()
def evaluate(cfg: TrainConfig, result: Fit, x_train, x_val: np.ndarray, stats: TrainStats | None = None) -> dict:
    """Final metrics, each beside the baseline it should beat."""
    stats = stats or training_stats(cfg, result.model, x_train)
    model = result.model.cpu().eval()
    xv = torch.from_numpy(x_val)
    metrics: dict = {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_rows": len(x_train),
        "val_rows": len(x_val),
    }
    metrics.update({k: v for k, v in result.history[-1].items() if k != "epoch"})
    if cfg.kind == "gan":
        samples = model.generator(
            torch.randn(len(x_val), cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
        ).numpy()
        rng = np.random.default_rng(cfg.seed)
        noise = rng.uniform(stats.minimum, stats.maximum, size=samples.shape).astype(np.float32)
        metrics["sample_nn_distance"] = nn_distance(samples, x_val)
        metrics["uniform_noise_nn_distance"] = nn_distance(noise, x_val)
        return metrics
    out = model.encoder(xv)
    z = out[0] if isinstance(out, tuple) else out  # the vae reconstructs from mu
    x_hat = model.decoder(z).numpy()
    metrics["val_reconstruction_mse"] = float(np.mean((x_hat - x_val) ** 2))
    metrics["mean_predictor_mse"] = float(np.mean((stats.mean.astype(np.float32) - x_val) ** 2))
    return metrics


def nn_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance from each row of `a` to its nearest row of `b`."""
    d2 = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0)).mean())


def checkpoint(cfg, ds, prep, result: Fit, x_train, x_val, metrics, stats: TrainStats | None = None) -> dict:
    """A self-describing checkpoint (loadable with torch.load(weights_only=True))."""
    prior = (stats or training_stats(cfg, result.model, x_train)).prior
    return {
        "format": "latentserve-checkpoint-1",
        "config": cfg.to_dict(),
        "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
        "n_features": int(x_train.shape[1]),
        "feature_names": ds.feature_names,
        "image_shape": list(ds.image_shape) if ds.image_shape else None,
        "preprocessing": prep.model_dump(),
        "x_val": torch.from_numpy(x_val),
        "latent_prior": prior,
        "metrics": metrics,
        "data": {
            "source": ds.source,
            "rows": int(ds.x.shape[0]),
            "features": int(ds.x.shape[1]),
            "train_rows": int(len(x_train)),
            "val_rows": int(len(x_val)),
        },
    }
