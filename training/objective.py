"""The ae/rae/vae training cost as per-row values, and its trimmed mean cut over the global batch.

`RowCost` is the module DDP wraps (its forward runs every parameter, so gradient averaging sees all
of them); `trimmed_cost` turns one rank's rows into the loss it back-propagates, scaled so that DDP's
average over N ranks is the single-process trimmed mean (SPEC §1-3 costs, models/losses.trimmed_mean):

    J = (1/k) Σ_{i ∈ kept(global batch)} l_i + λΩ(W),   rank r back-propagates  N/k Σ_{i ∈ kept ∩ r} l_i + λΩ(W)

so that (1/N) Σ_r J_r = J: the k kept rows are the k lowest costs of the whole global batch. The
rae's L2 penalty reaches the weights as the optimizer's weight decay 2λW, the same gradient
(train.make_optimizer); its L1 penalty is back-propagated.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from models import ae, losses, vae
from training.config import TrainConfig
from training.distributed import Context


class RowCost(nn.Module):
    """forward(x (B, F), eps (B, L) or None) -> (costs (B,), terms (B, T), penalty scalar or None)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.kind, self.beta, self.reconstruction = cfg.kind, cfg.beta, cfg.reconstruction
        self.lam = cfg.lam if cfg.kind == "rae" else 0.0
        self.penalty = cfg.penalty
        # L2: its gradient 2λW is the optimizer's weight decay (train.make_optimizer), so the
        # batches' graphs leave the penalty out; its value is logged once per epoch (`with_decay`)
        # and enters the validation cost as before. L1 is back-propagated.
        self.decoupled = self.lam > 0 and self.penalty == "l2"
        self.term_names = ["reconstruction", "kl"] if cfg.kind == "vae" else ["reconstruction"]

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        if self.kind == "vae":
            loss, rec, kl = vae.row_costs(cast(vae.VAE, self.model), x, self.beta, eps)  # (B,) each
            return loss, torch.stack([rec, kl], dim=1), None
        rec = ae.reconstruction_cost(cast(ae.Autoencoder, self.model), x, self.reconstruction)  # (B,)
        penalty = None
        if self.lam > 0 and not self.decoupled:
            penalty = self.penalty_value().to(rec)
        return rec, rec[:, None], penalty

    def networks(self) -> list[nn.Module]:
        return [cast(nn.Module, self.model.encoder), cast(nn.Module, self.model.decoder)]

    def penalty_value(self) -> torch.Tensor:
        """λ·Ω(W) (SPEC §2), a scalar."""
        return self.lam * losses.weight_penalty(self.networks(), self.penalty)

    def decayed_weights(self) -> list[torch.Tensor]:
        """The weight matrices whose L2 penalty the optimizer applies as weight decay (else none)."""
        return losses.penalised_weights(self.networks()) if self.decoupled else []

    @torch.no_grad()
    def with_decay(self, logs: dict[str, float]) -> dict[str, float]:
        """An epoch's training logs with the decoupled penalty's value (at the epoch's end) added."""
        if not self.decoupled:
            return logs
        penalty = float(self.penalty_value())
        return {**logs, "loss": logs["loss"] + penalty, "penalty": penalty}

    @property
    def batch_log_names(self) -> list[str]:
        """Names of `trimmed_cost`'s log vector: the loss, each term, then the back-propagated penalty."""
        return ["loss", *self.term_names, *(["penalty"] if self.lam > 0 and not self.decoupled else [])]


def trimmed_cost(out, trim: float, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to back-propagate on this rank, log vector whose sum over the ranks is the global value)."""
    costs, terms, penalty = out
    mask, kept = ctx.keep_mask(costs, trim)
    if kept == len(costs) * ctx.world_size:
        kept_costs, kept_terms = costs, terms
    else:
        kept_costs, kept_terms = costs[mask], terms[mask]
    part = kept_costs.sum() / kept  # this rank's share of (1/k) Σ kept
    loss = kept_costs.sum() * ctx.world_size / kept  # × N: DDP divides the summed gradient by N
    logs = [part, *(kept_terms.sum(dim=0) / kept)]
    if penalty is not None:
        loss = loss + penalty
        logs[0] = logs[0] + penalty / ctx.world_size
        logs.append(penalty / ctx.world_size)
    return loss, torch.stack([v.detach() for v in logs]).double()


@torch.no_grad()
def validation_cost(cost: RowCost, cfg: TrainConfig, rows, ctx: Context, chunk: int = 16384) -> dict[str, float]:
    """The trimmed cost over all validation rows, each rank computing its shard; every rank returns
    the same numbers. The vae draws a fixed-seed ε for all validation rows (reproducible early stopping)."""
    cost.eval()
    start, stop = ctx.shard(len(rows))
    eps_all = None
    if cfg.kind == "vae":
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        eps_all = torch.randn(len(rows), int(cfg.latent_dim or 0), generator=gen, dtype=rows.dtype)  # (N_val, L)
    parts_c, parts_t, penalty = [], [], None
    for a in range(start, stop, chunk):
        b = min(stop, a + chunk)
        eps = eps_all[a:b].to(ctx.device) if eps_all is not None else None
        c, t, penalty = cost(rows.take(a, b), eps)
        if cost.decoupled:
            penalty = cost.penalty_value().to(c)
        parts_c.append(c)
        parts_t.append(t)
    if not parts_c:  # a rank with no validation rows (fewer rows than ranks)
        width = len(cost.term_names)
        parts_c, parts_t = (
            [torch.zeros(0, device=ctx.device, dtype=rows.dtype)],
            [torch.zeros(0, width, device=ctx.device, dtype=rows.dtype)],
        )
        if cost.lam > 0:
            penalty = cost.penalty_value().to(parts_c[0])
    costs = ctx.gather_rows(torch.cat(parts_c))  # (N_val,) every rank alike
    terms = ctx.gather_rows(torch.cat(parts_t))  # (N_val, T)
    trim = float(cfg.trim or 0.0)
    kept = len(costs) if trim <= 0 else max(1, int(np.ceil((1.0 - trim) * len(costs))))
    order = torch.sort(costs, stable=True).indices[:kept]
    loss = costs[order].mean()
    values = {"val_loss": loss, **{f"val_{n}": terms[order, j].mean() for j, n in enumerate(cost.term_names)}}
    if penalty is not None:
        values["val_loss"] = loss + penalty
        values["val_penalty"] = penalty
    return {k: ctx.agree(float(v)) for k, v in values.items()}
