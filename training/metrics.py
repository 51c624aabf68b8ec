"""Evaluation metrics as plain functions: NumPy/SciPy/scikit-learn arrays in, numbers out; no torch, no I/O.

`latentserve evaluate` (training/evaluate.py) is a view over these; tests call them directly.
Conventions: rows are (N, F) float arrays; `labels` are 0/1 with 1 = anomaly; a higher score is more
anomalous and a row is flagged when `score > threshold`, as the service does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

LOG_2PI = math.log(2.0 * math.pi)
BERNOULLI_EPS = 1e-7  # the clip artifact.scores uses for the Bernoulli cross-entropy


# ----- distances ---------------------------------------------------------------------------------
def pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, F), (B, F) -> (A, B) squared Euclidean distances, float64, never negative."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def nearest_distances(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(A,) Euclidean distance from each row of `a` to its nearest row of `b`."""
    out = np.empty(len(a))
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = np.sqrt(pairwise_sq_distances(a[s : s + chunk], b).min(axis=1))
    return out


def knn_radii(x: np.ndarray, k: int = 3, chunk: int = 2048) -> np.ndarray:
    """(N,) distance from each row to its k-th nearest other row of the same set."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be between 1 and {len(x) - 1} for {len(x)} rows, got {k}")
    out = np.empty(len(x))
    for s in range(0, len(x), chunk):
        d2 = pairwise_sq_distances(x[s : s + chunk], x)  # (b, N); column s+i is row i itself (0)
        out[s : s + chunk] = np.sqrt(np.partition(d2, k, axis=1)[:, k])  # index 0 is the row itself
    return out


def _share_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> float:
    """Share of `points` inside at least one ball (centre, radius)."""
    inside = np.empty(len(points), dtype=bool)
    for s in range(0, len(points), chunk):
        d2 = pairwise_sq_distances(points[s : s + chunk], centres)
        inside[s : s + chunk] = (d2 <= radii[None, :] ** 2).any(axis=1)
    return float(inside.mean())


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of distributions (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its rows, each ball reaching the row's k-th
    nearest neighbour. Precision: share of generated rows inside the real manifold (fidelity);
    recall: share of real rows inside the generated manifold (coverage; mode dropping lowers it).
    """
    precision = _share_inside(fake, real, knn_radii(real, k))
    recall = _share_inside(real, fake, knn_radii(fake, k))
    return precision, recall


# ----- Fréchet distance --------------------------------------------------------------------------
def frechet_distance_gaussians(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> tuple[float, float, float]:
    """Fréchet (2-Wasserstein²) distance of N(mu1, cov1) and N(mu2, cov2); returns (total, mean term,
    covariance term): ||mu1 − mu2||² + Tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½) (Dowson & Landau 1982).

    The trace of the matrix square root comes from the eigenvalues of the symmetric C1^½ C2 C1^½,
    which stays real where scipy.linalg.sqrtm(C1 C2) returns complex round-off.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    w, v = np.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # C1^½
    middle = root1 @ cov2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    mean_term = float(((mu1 - mu2) ** 2).sum())
    cov_term = float(max(np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt, 0.0))
    return mean_term + cov_term, mean_term, cov_term


def frechet_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Fréchet distance between the Gaussians fitted to two sets of feature rows: (total, mean, covariance)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return frechet_distance_gaussians(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ----- two-sample classifier and memorisation ----------------------------------------------------
def classifier_two_sample_auc(real: np.ndarray, fake: np.ndarray, seed: int = 0, test_fraction: float = 0.5) -> float:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): held-out ROC AUC of gradient-boosted trees
    told to separate real from generated rows. 0.5: indistinguishable; 1.0: always told apart."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    x = np.vstack([real, fake]).astype(np.float64)
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(x_tr, y_tr)
    return roc_auc(y_te, clf.predict_proba(x_te)[:, 1])


def memorisation(samples: np.ndarray, reference: np.ndarray, holdout: np.ndarray) -> dict[str, float]:
    """Distances from generated rows to their nearest reference row, against the same for held-out real
    rows. A generator that copies its training rows sits much closer to them than new real rows do:
    `near_copy_share` is the share of samples closer than the 1st percentile of real-to-reference distances
    (about 0.01 for a model that does not copy)."""
    d_fake = nearest_distances(samples, reference)
    d_real = nearest_distances(holdout, reference)
    cut = float(np.quantile(d_real, 0.01))
    return {
        "sample_to_reference_median": float(np.median(d_fake)),
        "real_to_reference_median": float(np.median(d_real)),
        "median_ratio": float(np.median(d_fake) / max(np.median(d_real), 1e-12)),
        "near_copy_cutoff": cut,
        "near_copy_share": float((d_fake < cut).mean()),
    }


# ----- likelihood (vae) --------------------------------------------------------------------------
def log_normal(z: np.ndarray, mu: np.ndarray | float = 0.0, logvar: np.ndarray | float = 0.0) -> np.ndarray:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mu) ** 2 / np.exp(logvar), axis=-1)


def log_likelihood(x: np.ndarray, x_hat: np.ndarray, likelihood: str) -> np.ndarray:
    """log p(x|z) per row (B,) from the decoder's output: a unit-variance Gaussian mean (the exported vae
    works in units where σ = 1) or Bernoulli means, clipped as the service clips them."""
    if likelihood == "gaussian":
        return -0.5 * np.sum((x - x_hat) ** 2 + LOG_2PI, axis=-1)
    if likelihood == "bernoulli":
        p = np.clip(x_hat, BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
        return np.sum(x * np.log(p) + (1.0 - x) * np.log(1.0 - p), axis=-1)
    raise ValueError(f"likelihood must be 'gaussian' or 'bernoulli', got {likelihood!r}")


def importance_log_weights(
    x: np.ndarray,
    mu: np.ndarray,
    logvar: np.ndarray,
    decode: Callable[[np.ndarray], np.ndarray],
    likelihood: str,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, K) log w = log p(x|z) + log p(z) − log q(z|x), z = mu + σ ⊙ ε drawn from q (SPEC §3).

    `decode` maps (B, L) latents to decoder outputs (B, F): the exported decoder graph."""
    std = np.exp(0.5 * logvar)
    log_w = np.empty((len(x), k))
    for j in range(k):
        z = mu + std * rng.standard_normal(mu.shape)  # (B, L)
        x_hat = decode(z.astype(np.float32)).astype(np.float64)
        log_w[:, j] = log_likelihood(x, x_hat, likelihood) + log_normal(z) - log_normal(z, mu, logvar)
    return log_w


def iwae_bound(log_w: np.ndarray) -> np.ndarray:
    """(B, K) log weights -> (B,) importance-weighted bound log (1/K) Σ_k w_k (Burda et al. 2016);
    K = 1 is the ELBO, and the bound tightens towards log p(x) as K grows."""
    return logsumexp(log_w, axis=1) - math.log(log_w.shape[1])


def elbo(log_w: np.ndarray) -> np.ndarray:
    """(B, K) log weights -> (B,) Monte-Carlo ELBO, the mean of log w over the K draws."""
    return log_w.mean(axis=1)


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """(L,) mean over rows of KL(q(z_j|x) || N(0, 1)) = ½ (mu² + σ² − log σ² − 1) per latent dimension."""
    return 0.5 * np.mean(mu**2 + np.exp(logvar) - logvar - 1.0, axis=0)


def active_units(mu: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """(L,) bool: a unit is active when its posterior mean varies across rows, Cov_x(E_q[z_j]) > 0.01
    (Burda et al. 2016); an inactive unit's posterior is the prior whatever the row."""
    return np.var(mu, axis=0) > threshold


# ----- anomaly detection -------------------------------------------------------------------------
def _checked_labels(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels), np.asarray(scores, np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be two (N,) arrays")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError(f"labels must hold both classes; they hold only {int(y[0])}s")
    return y, s


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of an anomaly > score of a normal row), ties counted ½."""
    y, s = _checked_labels(labels, scores)
    ranks = rankdata(s)  # average ranks for ties
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score t (descending): true and false positives when flagging score >= t."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps, s[last]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), flagging score >= threshold, from (0, 0) at +inf to (1, 1)."""
    y, s = _checked_labels(labels, scores)
    tps, fps, thr = _counts(y, s)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]], np.r_[np.inf, thr]


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), flagging score >= threshold, by decreasing threshold."""
    y, s = _checked_labels(labels, scores)
    tps, fps, thr = _counts(y, s)
    return tps / (tps + fps), tps / tps[-1], thr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = Σ_n (R_n − R_{n−1}) P_n over distinct thresholds (no interpolation; scikit-learn's definition).
    A random ranking scores the base rate (the share of anomalies)."""
    precision, recall, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_f1(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) when flagging score > threshold, the service's `is_anomaly`."""
    y, s = _checked_labels(labels, scores)
    flagged = s > threshold
    tp = int((flagged & y).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else 0.0
    recall = tp / int(y.sum())
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return precision, recall, f1


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1 over all thresholds, that threshold). The threshold lies halfway between the lowest
    flagged score and the next lower one, so that `score > threshold` flags exactly those rows."""
    precision, recall, thr = pr_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    i = int(np.argmax(f1))
    below = thr[i + 1] if i + 1 < len(thr) else thr[i] - 1.0
    return float(f1[i]), float((thr[i] + below) / 2)


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The highest true-positive rate of any threshold whose false-positive rate is at most `fpr`."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr + 1e-12].max())


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric(labels, scores)`, resampling rows within each class
    (stratified: every resample holds both classes, in the data's proportions)."""
    y, s = _checked_labels(labels, scores)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        values[b] = metric(y[idx].astype(int), s[idx])
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# ----- threshold check ---------------------------------------------------------------------------
def flagged_share(scores: np.ndarray, threshold: float) -> float:
    """Share of rows the service flags (score > threshold)."""
    return float((np.asarray(scores) > threshold).mean())


def empirical_percentiles(scores: np.ndarray) -> np.ndarray:
    """(N,) each score's rank on this data as a percentile, 0-100 (ties share the mean rank)."""
    return 100.0 * (rankdata(scores) - 0.5) / len(scores)


def percentile_agreement(
    scores: np.ndarray, served: np.ndarray, levels: tuple[float, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99)
) -> tuple[float, list[tuple[float, float]]]:
    """How the served percentiles (ranks among the calibration rows) compare with ranks on this data:
    (largest |served − empirical| over rows, in percentile points; [(level, served percentile of the
    row at that empirical level)])."""
    empirical = empirical_percentiles(scores)
    order = np.argsort(empirical, kind="mergesort")
    at = [(float(q), float(np.interp(q, empirical[order], np.asarray(served)[order]))) for q in levels]
    return float(np.max(np.abs(np.asarray(served) - empirical))), at


# ----- latent space ------------------------------------------------------------------------------
def pca(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(N, n) projection on the leading principal axes, and their explained-variance ratios (n,)."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    n = min(n_components, vt.shape[0])
    proj = centred @ vt[:n].T
    if n < n_components:  # a 1-D latent: pad with zeros so that it still plots
        proj = np.c_[proj, np.zeros((len(x), n_components - n))]
    var = sv**2
    ratio = var[:n] / var.sum() if var.sum() > 0 else np.zeros(n)
    return proj, np.r_[ratio, np.zeros(n_components - n)]
