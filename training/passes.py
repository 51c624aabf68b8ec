"""Whole-training-set statistics after the fit, read in chunks and shared among the ranks: the
per-feature mean, min and max of the model-space rows (the metrics' baselines) and, for ae/rae, the
Gaussian latent prior N(mean, LLᵀ) of the encoded training rows. With N ranks each reads its shard
and every rank gets the same numbers; no whole-data tensor is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from training import rows as rows_mod
from training.config import TrainConfig
from training.distributed import Context

PRIOR_JITTER = 1e-6  # added to the covariance's diagonal: a collapsed latent axis stays invertible


@dataclass(frozen=True)
class TrainStats:
    rows: int
    mean: np.ndarray  # (F,) float64, model space
    minimum: np.ndarray  # (F,) float32
    maximum: np.ndarray  # (F,) float32
    prior: dict | None  # {"mean": [L], "cholesky": [[L]]} for ae/rae


@torch.no_grad()
def training_stats(cfg: TrainConfig, model: nn.Module, x_train: rows_mod.Source, ctx: Context | None = None):
    ctx = ctx or Context()
    param = next(model.parameters())
    encode = cfg.kind in ("ae", "rae")
    latent_dim = int(cfg.latent_dim or 0)
    encoder = cast(nn.Module, model.encoder) if encode else None
    model.eval()

    def latents(x: np.ndarray) -> torch.Tensor:
        assert encoder is not None
        return encoder(torch.from_numpy(x).to(param)).double().cpu()  # (C, L)

    n_features = x_train.shape[1]
    total = torch.zeros(n_features, dtype=torch.float64)
    lo = torch.full((n_features,), float("inf"), dtype=torch.float64)
    hi = torch.full((n_features,), float("-inf"), dtype=torch.float64)
    z_total = torch.zeros(latent_dim, dtype=torch.float64)
    for x in rows_mod.chunks(x_train, ctx):
        xt = torch.from_numpy(x).double()
        total += xt.sum(0)
        lo, hi = torch.minimum(lo, xt.min(0).values), torch.maximum(hi, xt.max(0).values)
        if encode:
            z_total += latents(x).sum(0)
    dev = ctx.device
    total, z_total = ctx.sum(total.to(dev)).cpu(), ctx.sum(z_total.to(dev)).cpu()
    lo, hi = ctx.sum(lo.to(dev), "min").cpu(), ctx.sum(hi.to(dev), "max").cpu()
    n = len(x_train)
    prior = None
    if encode:  # second pass: the centred scatter, as torch.cov computes it
        z_mean = z_total / n
        scatter = torch.zeros(latent_dim, latent_dim, dtype=torch.float64)
        for x in rows_mod.chunks(x_train, ctx):
            zc = latents(x) - z_mean  # (C, L)
            scatter += zc.T @ zc
        scatter = ctx.sum(scatter.to(dev)).cpu()
        cov = scatter / max(n - 1, 1) + PRIOR_JITTER * torch.eye(latent_dim, dtype=torch.float64)
        prior = {"mean": z_mean.tolist(), "cholesky": torch.linalg.cholesky(cov).tolist()}
    return TrainStats(
        rows=n,
        mean=(total / n).numpy(),
        minimum=lo.numpy().astype(np.float32),
        maximum=hi.numpy().astype(np.float32),
        prior=prior,
    )
