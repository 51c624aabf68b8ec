"""training/metrics.py and training/features.py against closed forms, scikit-learn and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn import metrics as skm
from sklearn.datasets import load_digits

from training import metrics as M
from training.features import FeatureClassifier


@pytest.fixture(scope="module")
def digit_halves() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(half A rows, half B rows, half B digit classes), pixels scaled to [0, 1]."""
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.data))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    return d.data[a] / 16.0, d.data[b] / 16.0, d.target[b]


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    """Labels with a 10 % base rate and noisy scores with ties (rounded), like a detector's."""
    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.1).astype(int)
    s = np.round(rng.normal(size=600) + 1.5 * y, 1)
    return y, s


# ----- Fréchet distance --------------------------------------------------------------------------
def test_frechet_of_a_set_with_itself_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(500, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    assert M.frechet_distance(x, x)[0] == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_two_gaussians_matches_the_closed_form() -> None:
    # Commuting covariances (same eigenvectors): FD = |Δμ|² + Σ (√λ1 − √λ2)².
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    lam1, lam2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 2.0, 5.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, -2.0, 0.5, 0.0])
    total, mean_term, cov_term = M.frechet_distance_gaussians(mu1, q * lam1 @ q.T, mu2, q * lam2 @ q.T)
    assert mean_term == pytest.approx(5.25)
    assert cov_term == pytest.approx(np.sum((np.sqrt(lam1) - np.sqrt(lam2)) ** 2))
    assert total == pytest.approx(mean_term + cov_term)
    # One dimension: (μ1 − μ2)² + (σ1 − σ2)².
    assert M.frechet_distance_gaussians(1.0, 4.0, 3.0, 9.0)[0] == pytest.approx(4.0 + 1.0)


def test_frechet_shift_adds_the_offsets_squared_norm_to_the_mean_term() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) * 1.3
    offset = np.array([0.5, -1.0, 2.0, 0.0, 0.25, -0.75])
    _, mean0, cov0 = M.frechet_distance(a, b)
    _, mean1, cov1 = M.frechet_distance(a, b + offset)
    delta = b.mean(0) - a.mean(0)
    assert mean1 - mean0 == pytest.approx(offset @ offset + 2 * delta @ offset)
    assert cov1 == pytest.approx(cov0)
    _, mean_self, _ = M.frechet_distance(a, a + offset)
    assert mean_self == pytest.approx(offset @ offset)


def test_feature_classifier_features_separate_noise_from_digits(digit_halves) -> None:
    a, b, _ = digit_halves
    fc = FeatureClassifier(seed=0).fit(a)
    noise = np.random.default_rng(0).uniform(0, 1, size=b.shape)
    real = M.frechet_distance(fc.features(a), fc.features(b))[0]
    fake = M.frechet_distance(fc.features(a), fc.features(noise))[0]
    assert fc.accuracy > 0.8
    assert fc.features(b).shape == (len(b), 64)
    assert fake > 100 * real


# ----- precision and recall ----------------------------------------------------------------------
def test_knn_precision_recall_real_against_real_is_near_one(digit_halves) -> None:
    a, b, _ = digit_halves
    precision, recall = M.knn_precision_recall(a, b, k=3)
    assert precision > 0.85 and recall > 0.85


def test_knn_precision_recall_half_the_modes_keeps_precision_and_halves_recall(digit_halves) -> None:
    a, b, classes = digit_halves
    precision, recall = M.knn_precision_recall(a, b[classes < 5], k=3)
    assert precision > 0.85
    assert 0.4 < recall < 0.65


def test_knn_precision_recall_uniform_noise_scores_low_on_both(digit_halves) -> None:
    a, b, _ = digit_halves
    noise = np.random.default_rng(0).uniform(0, 1, size=b.shape)
    precision, recall = M.knn_precision_recall(a, noise, k=3)
    assert precision < 0.05 and recall < 0.05


def test_knn_radii_exclude_the_row_itself() -> None:
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert M.knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="k must be between 1 and 3"):
        M.knn_radii(x, k=4)


# ----- classifier two-sample test and memorisation -----------------------------------------------
def test_classifier_two_sample_auc_is_half_for_one_distribution_and_high_for_two() -> None:
    rng = np.random.default_rng(3)
    real, same, shifted = rng.normal(size=(600, 5)), rng.normal(size=(600, 5)), rng.normal(size=(600, 5))
    shifted[:, 0] += 2.0
    assert abs(M.classifier_two_sample_auc(real, same) - 0.5) < 0.08
    assert M.classifier_two_sample_auc(real, shifted) > 0.85


def test_memorisation_flags_copies_of_the_reference(digit_halves) -> None:
    a, b, _ = digit_halves
    half = len(b) // 2
    copies = a[:half] + 1e-3
    honest = M.memorisation(b[:half], a, b[half:])
    copying = M.memorisation(copies, a, b[half:])
    assert honest["near_copy_share"] < 0.05 and 0.7 < honest["median_ratio"] < 1.4
    assert copying["near_copy_share"] == 1.0 and copying["median_ratio"] < 0.01


# ----- likelihood --------------------------------------------------------------------------------
# A tiny linear-Gaussian vae with a known evidence: z ~ N(0, I₂), x | z ~ N(W z + c, I₃), so
# p(x) = N(c, W Wᵀ + I). Its q(z|x) is a deliberately imperfect Gaussian.
W = np.array([[1.0, 0.5], [-0.5, 1.5], [0.3, -0.8]])
C = np.array([0.2, -0.1, 0.4])


def _tiny_posterior(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    exact = np.linalg.solve(W.T @ W + np.eye(2), W.T @ (x - C).T).T  # (B, 2) the true posterior mean
    return 0.8 * exact + 0.1, np.full_like(exact, math.log(0.3))


def _tiny_decode(z: np.ndarray) -> np.ndarray:
    return z.astype(np.float64) @ W.T + C


def _tiny_log_evidence(x: np.ndarray) -> np.ndarray:
    cov = W @ W.T + np.eye(3)
    d = x - C
    return -0.5 * (np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d) + np.linalg.slogdet(cov)[1] + 3 * M.LOG_2PI)


def test_iwae_with_one_sample_equals_the_elbo() -> None:
    x = np.random.default_rng(4).normal(size=(50, 3))
    mu, logvar = _tiny_posterior(x)
    log_w = M.importance_log_weights(x, mu, logvar, _tiny_decode, "gaussian", 1, np.random.default_rng(0))
    np.testing.assert_allclose(M.iwae_bound(log_w), M.elbo(log_w), rtol=0, atol=1e-12)


def test_iwae_bound_tightens_with_k_and_stays_below_the_evidence() -> None:
    x = np.random.default_rng(5).normal(size=(200, 3)) * 1.5
    mu, logvar = _tiny_posterior(x)
    bounds = []
    for k in (1, 4, 16, 64):
        log_w = M.importance_log_weights(x, mu, logvar, _tiny_decode, "gaussian", k, np.random.default_rng(k))
        bounds.append(M.iwae_bound(log_w).mean())
    truth = _tiny_log_evidence(x).mean()
    # In expectation; the tolerance is the Monte-Carlo error of a mean over 200 rows.
    assert all(b1 <= b2 + 0.01 for b1, b2 in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] - bounds[0] > 0.1  # the imperfect q leaves a gap that K closes
    assert bounds[0] < truth - 0.1 and abs(bounds[-1] - truth) < 0.02


def test_iwae_bound_matches_a_brute_force_monte_carlo_estimate() -> None:
    x = np.random.default_rng(6).normal(size=(5, 3))
    # Brute force: log mean over 200k prior draws of p(x|z), no encoder involved.
    z = np.random.default_rng(7).standard_normal((200_000, 2))
    mean = _tiny_decode(z)  # (S, 3)
    brute = np.array([logsumexp(M.log_likelihood(row, mean, "gaussian")) - math.log(len(z)) for row in x])
    mu, logvar = _tiny_posterior(x)
    log_w = M.importance_log_weights(x, mu, logvar, _tiny_decode, "gaussian", 5000, np.random.default_rng(8))
    np.testing.assert_allclose(M.iwae_bound(log_w), brute, atol=0.03)
    np.testing.assert_allclose(brute, _tiny_log_evidence(x), atol=0.03)


def test_log_likelihood_bernoulli_is_the_negative_cross_entropy() -> None:
    x, p = np.array([[0.0, 1.0, 0.25]]), np.array([[0.2, 0.9, 0.5]])
    expected = math.log(0.8) + math.log(0.9) + math.log(0.5)
    assert M.log_likelihood(x, p, "bernoulli")[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="gaussian' or 'bernoulli"):
        M.log_likelihood(x, p, "poisson")


def test_active_units_and_kl_per_dimension() -> None:
    rng = np.random.default_rng(9)
    mu = np.c_[rng.normal(size=300), np.full(300, 0.0)]  # unit 0 used, unit 1 collapsed to the prior
    logvar = np.c_[np.full(300, math.log(0.1)), np.zeros(300)]
    kl = M.kl_per_dimension(mu, logvar)
    assert kl[1] == pytest.approx(0.0)
    assert kl[0] == pytest.approx(0.5 * (np.mean(mu[:, 0] ** 2) + 0.1 - math.log(0.1) - 1))
    assert M.active_units(mu).tolist() == [True, False]


# ----- anomaly detection -------------------------------------------------------------------------
def test_auc_and_average_precision_agree_with_scikit_learn(scored) -> None:
    y, s = scored
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_precision_recall_f1_at_a_threshold_agree_with_scikit_learn(scored) -> None:
    y, s = scored
    for threshold in (0.0, 1.0, 1.5, 2.3):
        flagged = (s > threshold).astype(int)
        precision, recall, f1 = M.precision_recall_f1(y, s, threshold)
        assert precision == pytest.approx(skm.precision_score(y, flagged, zero_division=0))
        assert recall == pytest.approx(skm.recall_score(y, flagged))
        assert f1 == pytest.approx(skm.f1_score(y, flagged))


def test_f1_max_is_the_best_threshold_and_reproduces_its_f1(scored) -> None:
    y, s = scored
    best, threshold = M.f1_max(y, s)
    brute = max(skm.f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert best == pytest.approx(brute)
    assert M.precision_recall_f1(y, s, threshold)[2] == pytest.approx(best)


def test_tpr_at_fpr_agrees_with_scikit_learns_roc_curve(scored) -> None:
    y, s = scored
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    for target in (0.01, 0.05, 0.2):
        assert M.tpr_at_fpr(y, s, target) == pytest.approx(tpr[fpr <= target].max())


def test_bootstrap_interval_contains_the_point_estimate(scored) -> None:
    y, s = scored
    for metric in (M.roc_auc, M.average_precision):
        lo, hi = M.bootstrap_ci(metric, y, s, n_boot=300, seed=0)
        assert lo < metric(y, s) < hi
        assert hi - lo < 0.4


def test_label_checks_refuse_one_class_and_non_binary_labels() -> None:
    with pytest.raises(ValueError, match="both classes"):
        M.roc_auc(np.zeros(5), np.arange(5.0))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        M.roc_auc(np.array([0, 1, 2]), np.arange(3.0))


# ----- threshold check and latent space ----------------------------------------------------------
def test_percentile_agreement_is_small_for_matching_and_large_for_shifted_calibration() -> None:
    scores = np.random.default_rng(10).normal(size=2000)
    same = 100.0 * np.searchsorted(np.sort(scores), scores, side="right") / len(scores)
    worst, at = M.percentile_agreement(scores, same)
    assert worst < 1.0 and [q for q, _ in at][:2] == [1.0, 5.0]
    shifted = np.clip(same + 10.0, 0, 100)
    assert M.percentile_agreement(scores, shifted)[0] > 5.0
    assert M.flagged_share(scores, np.quantile(scores, 0.9)) == pytest.approx(0.1, abs=1e-3)


def test_pca_recovers_the_dominant_axis() -> None:
    rng = np.random.default_rng(11)
    x = np.c_[10 * rng.normal(size=500), rng.normal(size=500), 0.1 * rng.normal(size=500)]
    proj, ratio = M.pca(x, 2)
    assert proj.shape == (500, 2) and ratio[0] > 0.95 and ratio[0] > ratio[1]
    assert abs(np.corrcoef(proj[:, 0], x[:, 0])[0, 1]) > 0.99
    assert M.pca(x[:, :1], 2)[0].shape == (500, 2)  # a 1-D latent still gives two columns
