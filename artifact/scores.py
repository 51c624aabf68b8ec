"""Anomaly scores and their calibration: the NumPy math that export (calibration) and serving share.

Scores are per row, computed in the model's (preprocessed) space so that features on different
scales weigh alike. Inputs are never clipped before scoring: squared-error terms see how far a row
lies outside the training range by themselves, and models whose graphs take [0, 1] (min-max and
image scaling) are fed clipped rows with an out-of-range term added to the score, so that a row
far outside the training range scores above every calibration row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from artifact.manifest import SCORE_METHODS, Calibration, LatentPrior
from artifact.transforms import clip_to_unit, range_excess

EPS = 1e-7
# The gan's latent search: a fixed bank of latents (NumPy's generator, so that every backend
# draws the same), decoded by the generator; part of the "gan-latent-search" method's definition.
GAN_SEARCH_LATENTS = 2048
GAN_SEARCH_SEED = 0
# The vae's "posterior-draws" score: the same fixed ε for every row and call (deterministic).
VAE_DRAWS = 16
VAE_DRAWS_SEED = 0


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def reconstruction_terms(x: np.ndarray, x_hat: np.ndarray, likelihood: str) -> np.ndarray:
    """Per-feature reconstruction cost (B, F) for ae/rae (mse, bce) and vae (gaussian, bernoulli).

    mse/gaussian: squared error (the Gaussian NLL up to the constant and factor 1/2 for vae,
    which keeps the SPEC's ½ in the vae score below); bce/bernoulli: cross-entropy.
    """
    if likelihood in ("mse", "gaussian"):
        return (x - x_hat) ** 2
    if likelihood in ("bce", "bernoulli"):
        p = np.clip(x_hat, EPS, 1.0 - EPS)
        return -(x * np.log(p) + (1.0 - x) * np.log(1.0 - p))
    raise ValueError(f"no reconstruction term for likelihood {likelihood!r}")


def gaussian_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row: ½ Σ_j (mu² + σ² − log σ² − 1) (SPEC §3)."""
    return 0.5 * np.sum(mu**2 + np.exp(logvar) - logvar - 1.0, axis=1)


def ae_score(x: np.ndarray, x_hat: np.ndarray, likelihood: str) -> tuple[np.ndarray, np.ndarray]:
    """ae/rae score: mean per-feature reconstruction cost; returns (scores (B,), contributions (B, F))."""
    terms = reconstruction_terms(x, x_hat, likelihood) / x.shape[1]
    return terms.sum(axis=1), terms


def vae_score(
    x: np.ndarray, x_hat: np.ndarray, mu: np.ndarray, logvar: np.ndarray, likelihood: str
) -> tuple[np.ndarray, np.ndarray]:
    """vae score: negative ELBO at the posterior mean (z = mu, deterministic).

    Gaussian likelihood with unit variance: ½ Σ (x − x̂)² (constant dropped); Bernoulli: Σ BCE;
    plus the closed-form KL. Contributions are the per-feature reconstruction terms (the KL
    belongs to no single feature).
    """
    terms = reconstruction_terms(x, x_hat, likelihood)
    if likelihood == "gaussian":
        terms = 0.5 * terms
    return terms.sum(axis=1) + gaussian_kl(mu, logvar), terms


def vae_draws(latent_dim: int) -> np.ndarray:
    """The fixed ε of the "posterior-draws" method: (VAE_DRAWS, L) float32 standard normal."""
    return np.random.default_rng(VAE_DRAWS_SEED).standard_normal((VAE_DRAWS, latent_dim)).astype(np.float32)


def vae_draws_score(
    x: np.ndarray, decode: Callable[[np.ndarray], np.ndarray], mu: np.ndarray, logvar: np.ndarray, likelihood: str
) -> tuple[np.ndarray, np.ndarray]:
    """vae score: negative ELBO with its expected reconstruction term E_q[−log p(x|z)] estimated
    from VAE_DRAWS fixed draws z = mu + σ ⊙ ε (SPEC §3's reparameterisation), plus the closed-form
    KL. Closer to −ELBO than decoding mu alone, which ignores how wide the posterior is.
    Contributions: the per-feature expected reconstruction terms."""
    std = np.exp(0.5 * logvar)  # (B, L)
    terms = np.zeros_like(x, dtype=np.float64)
    for eps in vae_draws(mu.shape[1]):  # (L,) each
        z = (mu + std * eps).astype(np.float32)
        terms += reconstruction_terms(x, decode(z), likelihood)
    terms /= VAE_DRAWS
    if likelihood == "gaussian":
        terms = 0.5 * terms
    return terms.sum(axis=1) + gaussian_kl(mu, logvar), terms


def ae_joint_score(
    x: np.ndarray, x_hat: np.ndarray, z: np.ndarray, prior: LatentPrior
) -> tuple[np.ndarray, np.ndarray]:
    """ae/rae score on standardised data: −log p(x, z) of the autoencoder read as a generative model,
    z ~ N(mean, C) (the latent Gaussian fitted to the training codes, the one /sample draws from) and
    x | z ~ N(g(z), σ²I), σ folded into the preprocessing at training time so that σ = 1 here: the
    training residual's RMS ("joint"), or that σ rescaled so that both terms below have the same
    median on the training rows ("balanced", the ae's default). Constants dropped:

        ½ ||x − x̂||² + ½ (z − mean)ᵀ C⁻¹ (z − mean)

    The first term flags rows the decoder cannot rebuild, the second rows whose code lies far out in
    the training codes' distribution (rebuilt well, but extreme). Contributions: the per-feature
    reconstruction terms (the latent term belongs to no single feature).
    """
    terms = 0.5 * (x - x_hat) ** 2  # (B, F)
    mean = np.asarray(prior.mean, dtype=np.float64)
    chol = np.asarray(prior.cholesky, dtype=np.float64)  # (L, L) lower-triangular, C = chol cholᵀ
    white = np.linalg.solve(chol, (z.astype(np.float64) - mean).T)  # (L, B)
    return terms.sum(axis=1) + 0.5 * (white**2).sum(axis=0), terms


def gan_score(logit: np.ndarray) -> np.ndarray:
    """gan score ("neg-log-discriminator"): −log D(x) = softplus(−logit), computed from the logit.

    A weak anomaly score: once G covers the data's bulk, D is unsure there and confident nowhere
    in particular elsewhere; on the ODDS benchmark it ranks outliers *below* inliers. Kept for
    artifacts calibrated with it; new gans use `gan_search_score`.
    """
    return softplus(-logit.reshape(-1))


def gan_search_latents(latent_dim: int) -> np.ndarray:
    """The fixed latent bank of the "gan-latent-search" method: (GAN_SEARCH_LATENTS, L) float32."""
    rng = np.random.default_rng(GAN_SEARCH_SEED)
    return rng.standard_normal((GAN_SEARCH_LATENTS, latent_dim)).astype(np.float32)


def gan_search_score(x: np.ndarray, generated: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """gan score ("gan-latent-search"): reconstruction through a latent search, min_z ||x − G(z)||² / F,
    the search an enumeration of the fixed bank (`generated` = G(gan_search_latents(L)), (K, F)).

    AnoGAN's residual score (Schlegl et al. 2017) without its gradient descent, which the exported
    graphs cannot do: a row far from everything the generator makes is anomalous. Returns (scores
    (B,), contributions (B, F): the per-feature squared residual to the nearest generated row, / F).
    """
    g = generated.astype(np.float32)
    g_sq = (g**2).sum(axis=1)  # (K,)
    nearest = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):  # (chunk, K) distances at a time: bounded memory
        xb = x[start : start + chunk].astype(np.float32)
        d2 = (xb**2).sum(axis=1, keepdims=True) - 2.0 * xb @ g.T + g_sq  # (b, K)
        nearest[start : start + chunk] = d2.argmin(axis=1)
    terms = (x - g[nearest]) ** 2 / x.shape[1]  # (B, F), exact (no cancellation) for the chosen row
    return terms.sum(axis=1), terms


# ----- the score a manifest names --------------------------------------------------------------
# Graph runner: (role, input) -> the graph's outputs in the manifest's order.
RunGraph = Callable[[str, np.ndarray], Sequence[np.ndarray]]
METHODS = tuple(SCORE_METHODS)


def anomaly_scores(
    method: str,
    run: RunGraph,
    x: np.ndarray,
    latent_dim: int,
    latent_prior: LatentPrior | None = None,
    clip: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (B,) and per-feature contributions (B, F) or None of model-space rows `x`, by the
    calibration method a manifest names (`manifest.calibration.method`): the one place that turns
    graph outputs into scores, for the export's calibration and for the service alike.

    `clip` (the preprocessing's): the graphs see `x` clipped to [0, 1]; cross-entropy terms are
    taken on the clipped rows plus the squared distance outside [0, 1] (`range_excess`), squared
    errors on the rows as they are. Either way a value far outside the range raises the score."""
    xin = clip_to_unit(x) if clip else x
    if method in ("reconstruction-mse", "reconstruction-bce"):
        likelihood = method.removeprefix("reconstruction-")
        x_hat = run("decoder", run("encoder", xin)[0])[0]
        scores, terms = ae_score(_target(x, xin, likelihood), x_hat, likelihood)
        return _with_excess(scores, terms, x, xin, likelihood, 1.0 / x.shape[1])
    if method == "ae-joint-gaussian":
        if latent_prior is None:
            raise ValueError("the ae-joint-gaussian score needs the manifest's latent_prior")
        z = run("encoder", xin)[0]
        return ae_joint_score(x, run("decoder", z)[0], z, latent_prior)
    if method.startswith("negative-elbo-"):
        likelihood = method.split("-")[2]
        mu, logvar = run("encoder", xin)[:2]
        target = _target(x, xin, likelihood)
        if method.endswith("-posterior-draws"):
            scores, terms = vae_draws_score(target, lambda z: run("decoder", z)[0], mu, logvar, likelihood)
        else:
            scores, terms = vae_score(target, run("decoder", mu)[0], mu, logvar, likelihood)
        return _with_excess(scores, terms, x, xin, likelihood, 1.0)
    if method == "neg-log-discriminator":
        scores = gan_score(run("discriminator", xin)[0])
        return (scores + range_excess(x, xin).sum(axis=1) if clip else scores), None
    if method == "gan-latent-search":
        return gan_search_score(x, run("generator", gan_search_latents(latent_dim))[0])
    raise ValueError(f"unknown anomaly score method {method!r}: expected one of {', '.join(METHODS)}")


def _target(x: np.ndarray, xin: np.ndarray, likelihood: str) -> np.ndarray:
    """What the reconstruction is compared with: the rows as they are for squared errors, the
    clipped rows for cross-entropies (defined on [0, 1] only)."""
    return x if likelihood in ("mse", "gaussian") else xin


def _with_excess(
    scores: np.ndarray, terms: np.ndarray, x: np.ndarray, xin: np.ndarray, likelihood: str, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Add the out-of-range term (weighted like the score's own per-feature terms) to a cross-entropy
    score and its contributions when the graphs saw clipped rows (`xin` is not `x`); squared-error
    scores already include it."""
    if xin is x or likelihood in ("mse", "gaussian"):
        return scores, terms
    excess = weight * range_excess(x, xin)
    return scores + excess.sum(axis=1), terms + excess


def calibrate(
    scores: np.ndarray, contamination: float, method: str, description: str, n_levels: int = 1001
) -> Calibration:
    """Store the score distribution at `n_levels` evenly spaced probability levels."""
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, n_levels)
    quantiles = np.quantile(scores, levels)
    threshold = float(np.quantile(scores, 1.0 - contamination))
    return Calibration(
        method=method,
        description=description,
        n_rows=int(scores.size),
        levels=[float(v) for v in levels],
        quantiles=[float(v) for v in quantiles],
        contamination=contamination,
        threshold=threshold,
    )


def percentiles(scores: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Percentile (0-100) of each score among the calibration rows; monotone in the score."""
    q = np.asarray(calibration.quantiles)
    levels = np.asarray(calibration.levels)
    # np.interp needs increasing x; quantiles can repeat, which interp handles (takes the last).
    return 100.0 * np.interp(scores, q, levels, left=0.0, right=1.0)
