"""Cost functions of ../shared/SPEC.md as pure functions returning per-sample values.

Every function returns a tensor of shape (B,) — one value per row — and the
caller takes the batch mean. Each cites the SPEC equation it implements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """SPEC §1: ||x − g(f(x))||² per sample, summed over features. (B, F) -> (B,)"""
    return ((x - x_hat) ** 2).sum(dim=1)


def bce(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """SPEC §2: l(x, x̂) = −Σ_i [x_i log x̂_i + (1 − x_i) log(1 − x̂_i)], x and x̂ in [0, 1]. (B,)"""
    p = x_hat.clamp(eps, 1.0 - eps)
    return -(x * torch.log(p) + (1.0 - x) * torch.log1p(-p)).sum(dim=1)


def bce_with_logits(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """SPEC §2 BCE, computed from the decoder's pre-sigmoid output for numerical stability. (B,)"""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)


def penalised_weights(modules: list[nn.Module]) -> list[torch.Tensor]:
    """The weight matrices Ω(W) sums over: every Linear layer's, never a bias."""
    return [m.weight for mod in modules for m in mod.modules() if isinstance(m, nn.Linear)]


def weight_penalty(modules: list[nn.Module], norm: str) -> torch.Tensor:
    """SPEC §2: Ω_L1(W) = Σ|W_ij| or Ω_L2(W) = Σ W_ij² over the weight matrices only (never biases).

    A scalar: the penalty belongs to the parameters, not to a sample; the RAE cost adds λ·Ω
    to the batch mean of the reconstruction cost.
    """
    weights = penalised_weights(modules)
    if norm == "l1":
        return sum((w.abs().sum() for w in weights), torch.zeros(()))
    if norm == "l2":
        return sum(((w**2).sum() for w in weights), torch.zeros(()))
    raise ValueError(f"penalty must be 'l1' or 'l2', got {norm!r}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """SPEC §3: KL(N(μ, σ²) || N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1). (B, L) -> (B,)"""
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1.0).sum(dim=1)


def gaussian_nll(x: torch.Tensor, x_hat: torch.Tensor, logvar_x: torch.Tensor | None = None) -> torch.Tensor:
    """SPEC §3, −log p(x|z) for a Gaussian decoder N(x̂, diag(σ²)), the constant ½ log 2π dropped. (B,)

    Unit variance (logvar_x None): ½ ||x − x̂||². Learned variance (logvar_x (F,) or (1,), log σ²):
    ½ Σ_f [(x_f − x̂_f)² / σ_f² + log σ_f²].
    """
    if logvar_x is None:
        return 0.5 * mse(x, x_hat)
    return 0.5 * (((x - x_hat) ** 2) * torch.exp(-logvar_x) + logvar_x).sum(dim=1)


def negative_elbo(
    x: torch.Tensor,
    decoded: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    likelihood: str,
    beta: float = 1.0,
    logvar_x: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPEC §3: L = −E_z[log p(x|z)] + β·KL(q(z|x) || p(z)) (β = 1 is the ELBO).

    `decoded` is the decoder's mean for a Gaussian likelihood and its logits for a Bernoulli one;
    `logvar_x` the Gaussian's log-variance (None: unit variance).
    Returns (loss, reconstruction, kl), each (B,).
    """
    if likelihood == "gaussian":
        rec = gaussian_nll(x, decoded, logvar_x)
    elif likelihood == "bernoulli":
        rec = bce_with_logits(x, decoded)
    else:
        raise ValueError(f"likelihood must be 'gaussian' or 'bernoulli', got {likelihood!r}")
    kl = gaussian_kl(mu, logvar)
    return rec + beta * kl, rec, kl


def trimmed_mean(values: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean of the per-sample costs without the `trim` share of highest ones. (B,) -> scalar

    Least trimmed squares for the reconstruction costs: the training rows may hold outliers, and a
    model that fits them too reconstructs them too well to flag them (trim 0 is the plain mean).
    """
    if trim <= 0:
        return values.mean()
    keep = max(1, math.ceil((1.0 - trim) * values.shape[0]))
    return torch.topk(values, keep, largest=False, sorted=False).values.mean()


def discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """SPEC §4: L_D = −log D(x) − log(1 − D(G(z))), per pair of real and generated rows. (B,)

    With D = sigmoid(logit): −log D = softplus(−logit), −log(1 − D) = softplus(logit).
    """
    return F.softplus(-logit_real).reshape(-1) + F.softplus(logit_fake).reshape(-1)


def generator_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """SPEC §4, non-saturating form: L_G = −log D(G(z)) = softplus(−logit). (B,)"""
    return F.softplus(-logit_fake).reshape(-1)
