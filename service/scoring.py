"""NumPy math shared by export (calibration) and serving: preprocessing and anomaly scores.

No torch here: the service imports this. Scores are per row, computed in the
model's (preprocessed) space so that features on different scales weigh alike.
"""

from __future__ import annotations

import numpy as np

from training.manifest import Calibration, Preprocessing

EPS = 1e-7


def to_model_space(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(B, F) raw feature values -> (B, F) model inputs."""
    offset = np.asarray(prep.offset, dtype=np.float32)
    scale = np.asarray(prep.scale, dtype=np.float32)
    z = (x.astype(np.float32, copy=False) - offset) / scale
    if prep.clip:
        np.clip(z, 0.0, 1.0, out=z)
    return z


def to_raw_space(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(B, F) model outputs -> (B, F) raw feature values."""
    offset = np.asarray(prep.offset, dtype=np.float32)
    scale = np.asarray(prep.scale, dtype=np.float32)
    return x * scale + offset


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


def gan_score(logit: np.ndarray) -> np.ndarray:
    """gan score: −log D(x) = softplus(−logit), computed from the logit for stability."""
    return softplus(-logit.reshape(-1))


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
