"""Anomaly scores: planted outliers rank high for every kind, percentiles are ranks, scores are
reproducible and agree between ONNX Runtime and TorchScript; the score math against its formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from artifact import scores as scoring
from artifact import transforms
from artifact.graphs import Backend
from artifact.manifest import LatentPrior, Manifest
from artifact.predictor import Predictor
from training import pipeline
from training.config import KINDS, ConfigError, TrainConfig
from training.train import fold_noise

torch.set_num_threads(1)
N_FEATURES = 8


def _inliers(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows near a 2-d plane in 8-d, in raw units of different scales."""
    mixing = np.random.default_rng(0).normal(size=(2, N_FEATURES))  # the same plane for every call
    t = rng.normal(size=(n, 2))
    x = t @ mixing + 0.05 * rng.normal(size=(n, N_FEATURES))
    return (x * np.arange(1, N_FEATURES + 1) + 100.0).astype(np.float32)


def served_scores(artifact: Path, x: np.ndarray, runtime: str = "onnx") -> np.ndarray:
    backend = Backend(runtime, "cpu", threads=1)
    backend.check()
    model = Predictor(artifact, backend)
    model.load()
    assert model.state == "ready", model.reason
    return model.anomaly_score(x).scores


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    train = _inliers(600, rng)
    inliers = _inliers(200, rng)
    # off the plane, within the inliers' range: only a model of the plane can tell
    lo, hi = train.min(axis=0), train.max(axis=0)
    outliers = rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo), size=(20, N_FEATURES)).astype(np.float32)
    return {"train": train, "test": np.concatenate([inliers, outliers]), "labels": np.r_[np.zeros(200), np.ones(20)]}


@pytest.fixture(scope="module")
def artifacts(synthetic, tmp_path_factory) -> dict[str, Path]:
    """Each kind trained with the defaults on the inliers only (a few seconds each), exported."""
    root = tmp_path_factory.mktemp("anomaly")
    np.save(root / "train.npy", synthetic["train"])
    out = {}
    for kind in KINDS:
        cfg = TrainConfig(
            kind=kind,
            name=f"plane-{kind}",
            data=str(root / "train.npy"),
            models=str(root / "models"),
            runs=str(root / "runs"),
        )
        out[kind] = pipeline.run(cfg, progress=False).artifact
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_planted_outliers_rank_above_inliers(artifacts, synthetic, kind):
    scores = served_scores(artifacts[kind], synthetic["test"])
    assert roc_auc_score(synthetic["labels"], scores) > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_scores_identical_across_calls(artifacts, synthetic, kind):
    first = served_scores(artifacts[kind], synthetic["test"])
    assert np.array_equal(first, served_scores(artifacts[kind], synthetic["test"]))


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_scores_agree_across_onnx_and_torchscript(artifacts, synthetic, kind):
    onnx = served_scores(artifacts[kind], synthetic["test"], runtime="onnx")
    script = served_scores(artifacts[kind], synthetic["test"], runtime="torchscript")
    assert np.allclose(onnx, script, rtol=1e-4, atol=1e-6)
    calibration = Manifest.read(artifacts[kind]).calibration
    # percentile points: scores equal to 1e-4 may sit on a steep part of the calibration's distribution
    assert np.allclose(scoring.percentiles(onnx, calibration), scoring.percentiles(script, calibration), atol=0.05)


@pytest.mark.parametrize(
    "kind, method",
    [
        ("ae", "ae-joint-gaussian"),
        ("rae", "ae-joint-gaussian"),
        ("vae", "negative-elbo-gaussian-posterior-draws"),
        ("gan", "gan-latent-search"),
    ],
)
def test_anomaly_default_methods_for_tabular_data(artifacts, kind, method):
    assert Manifest.read(artifacts[kind]).calibration.method == method


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_served_scores_reproduce_the_calibration(artifacts, kind):
    """The calibration rows' served scores have the distribution the manifest was calibrated with."""
    manifest = Manifest.read(artifacts[kind])
    ckpt = torch.load(
        next(Path(artifacts[kind]).parents[2].glob(f"runs/plane-{kind}-*/checkpoint.pt")), weights_only=True
    )
    scores = served_scores(artifacts[kind], ckpt["x_cal_raw"].numpy())
    assert np.quantile(scores, 1 - manifest.calibration.contamination) == pytest.approx(
        manifest.calibration.threshold, rel=1e-3
    )


# ----- percentiles and threshold ----------------------------------------------------------------
def test_percentiles_monotone_in_the_score():
    rng = np.random.default_rng(0)
    calibration = scoring.calibrate(np.r_[rng.gamma(2.0, size=500), np.full(50, 1.0)], 0.1, "reconstruction-mse", "d")
    grid = np.linspace(-1.0, 20.0, 2001)
    p = scoring.percentiles(grid, calibration)
    assert np.all(np.diff(p) >= 0)
    assert p[0] == 0.0 and p[-1] == 100.0


def test_percentiles_are_ranks_among_the_calibration_rows():
    scores = np.arange(1000, dtype=float)
    calibration = scoring.calibrate(scores, 0.05, "reconstruction-mse", "d")
    assert scoring.percentiles(np.array([249.75, 899.1]), calibration) == pytest.approx([25.0, 90.0], abs=0.01)
    assert calibration.threshold == pytest.approx(np.quantile(scores, 0.95))


def _joint_terms(artifact: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two terms of a one-model ae/rae joint score of raw rows, from its graphs: ½‖x' − x̂'‖² and
    ½ Mahalanobis²(z) under the manifest's latent Gaussian."""
    model = Predictor(artifact, Backend("onnx", "cpu", threads=1), max_rows=len(x))
    model.load()
    xm = transforms.to_graph_inputs(x, model.manifest.preprocessing)
    z = model.run_graph("encoder", xm)[0]
    x_hat = model.run_graph("decoder", z)[0]
    _, terms = scoring.ae_joint_score(xm, x_hat, z, model.manifest.latent_prior)
    reconstruction = terms.sum(1)
    return reconstruction, model.anomaly_score(x).scores - reconstruction


@pytest.mark.parametrize("score", ["balanced", "joint"])
def test_ae_joint_score_sigma_balances_the_terms_or_is_the_residual(synthetic, tmp_path, score):
    """balanced (the ae's default on tables): σ makes both terms' medians equal on the training rows;
    joint: σ is the training residual's RMS, so that the reconstruction term's mean is F / 2 (unit
    noise here: a learned σ is test_fold_noise_keeps_the_codes_and_scales_the_outputs's)."""
    np.save(tmp_path / "train.npy", synthetic["train"])
    cfg = TrainConfig(
        kind="ae", name="balance", data=str(tmp_path / "train.npy"), models=str(tmp_path / "models"),
        runs=str(tmp_path / "runs"), ensemble=1, score=score, epochs=30, noise="unit",
    )  # fmt: skip
    result = pipeline.run(cfg, progress=False, plots=False)
    manifest = Manifest.read(result.artifact)
    assert manifest.calibration.method == "ae-joint-gaussian"
    ckpt = torch.load(next((tmp_path / "runs").glob("balance-*/checkpoint.pt")), weights_only=True)
    reconstruction, latent = _joint_terms(result.artifact, synthetic["train"])
    ratio = np.median(reconstruction) / np.median(latent)
    if score == "balanced":
        assert "same median" in manifest.calibration.description
        assert ratio == pytest.approx(1.0, rel=0.2)  # all rows here, the training split's in the fold
    else:
        assert ratio > 2.0  # 8 features against 2 latent dimensions: the plain joint score is unbalanced
    assert ckpt["config"]["score"] == score


# ----- the score math ---------------------------------------------------------------------------
def test_ae_joint_score_is_reconstruction_plus_latent_mahalanobis():
    rng = np.random.default_rng(0)
    x, x_hat, z = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    a = rng.normal(size=(3, 3))
    cov, mean = a @ a.T + np.eye(3), rng.normal(size=3)
    prior = LatentPrior(mean=mean.tolist(), cholesky=np.linalg.cholesky(cov).tolist())
    scores, terms = scoring.ae_joint_score(x, x_hat, z, prior)
    d = z - mean
    expected = 0.5 * ((x - x_hat) ** 2).sum(1) + 0.5 * np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d)
    assert np.allclose(scores, expected)
    assert np.allclose(terms.sum(1), 0.5 * ((x - x_hat) ** 2).sum(1))


def test_vae_draws_score_averages_the_reconstruction_over_fixed_draws():
    rng = np.random.default_rng(0)
    x, mu, logvar = rng.normal(size=(5, 4)), rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) - 1.0
    weights = rng.normal(size=(3, 4))
    scores, terms = scoring.vae_draws_score(x, lambda z: z @ weights, mu, logvar, "gaussian")
    z = mu[None] + np.exp(0.5 * logvar)[None] * scoring.vae_draws(3)[:, None, :]  # (K, B, L)
    reconstruction = 0.5 * ((x[None] - z @ weights) ** 2).sum(-1).mean(0)
    assert np.allclose(scores, reconstruction + scoring.gaussian_kl(mu, logvar), rtol=1e-5)
    assert np.allclose(terms.sum(1), reconstruction, rtol=1e-5)


def test_gan_search_score_is_the_distance_to_the_nearest_generated_row():
    rng = np.random.default_rng(0)
    x, generated = rng.normal(size=(30, 6)).astype(np.float32), rng.normal(size=(100, 6)).astype(np.float32)
    scores, terms = scoring.gan_search_score(x, generated, chunk=7)
    brute = ((x[:, None, :] - generated[None]) ** 2).sum(-1).min(1) / 6
    assert np.allclose(scores, brute, rtol=1e-5)
    assert np.allclose(terms.sum(1), scores)


def test_gan_search_latents_are_fixed():
    assert np.array_equal(scoring.gan_search_latents(3), scoring.gan_search_latents(3))
    assert scoring.gan_search_latents(3).shape == (scoring.GAN_SEARCH_LATENTS, 3)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_fold_noise_keeps_the_codes_and_scales_the_outputs(synthetic, tmp_path, kind):
    np.save(tmp_path / "train.npy", synthetic["train"])
    cfg = TrainConfig(kind=kind, name="fold", data=str(tmp_path / "train.npy"), epochs=3)
    cfg, _ds, prep, x_train, x_val = pipeline.prepare(cfg)
    result = pipeline.fit(cfg, x_train, x_val, progress=False)
    model = result.model
    with torch.no_grad():
        before_z = model.encoder(torch.from_numpy(x_val))
        before_x = model.decoder(before_z[0] if kind == "vae" else before_z).numpy()
    folded, _x_train, x_val_folded = fold_noise(cfg, result, prep, x_train, x_val)
    sigma = np.asarray(folded.scale) / np.asarray(prep.scale)
    raw = np.random.default_rng(0).normal(size=(4, N_FEATURES)).astype(np.float32) * 10 + 100
    assert np.allclose(transforms.to_model_space(raw, folded), transforms.to_model_space(raw, prep) / sigma, rtol=1e-5)
    with torch.no_grad():
        after_z = model.encoder(torch.from_numpy(x_val_folded))
        after_x = model.decoder(after_z[0] if kind == "vae" else after_z).numpy()
    codes = zip(before_z, after_z) if kind == "vae" else [(before_z, after_z)]
    assert all(torch.allclose(b, a, atol=1e-5) for b, a in codes)
    assert np.allclose(after_x * sigma, before_x, atol=1e-4)
    assert cfg.noise == "feature"  # both kinds learn σ per feature on standardised tables by default
    assert np.std(np.log(sigma)) > 1e-5  # ... and it is one per feature (a shared one: float rounding only)
    assert torch.allclose(model.logvar_x(), torch.zeros(1), atol=1e-6)  # folded: the graphs' σ is 1


@pytest.mark.parametrize(
    "kind, scaling, expected",
    [
        ("ae", "auto", "feature"),
        ("vae", "auto", "feature"),
        ("rae", "auto", "feature"),
        ("ae", "minmax", "unit"),
        ("gan", "auto", "unit"),
    ],
)
def test_learned_noise_defaults_where_it_folds(kind, scaling, expected):
    cfg = TrainConfig(kind=kind, name="x", scaling=scaling).resolve(20, False, 1000)
    assert cfg.noise == expected


@pytest.mark.parametrize(
    "kind, options",
    [("gan", {}), ("ae", {"scaling": "minmax"}), ("rae", {"reconstruction": "bce", "scaling": "minmax"})],
)
def test_learned_noise_is_refused_where_it_cannot_fold(kind, options):
    with pytest.raises(ConfigError, match="--noise feature needs"):
        TrainConfig(kind=kind, name="x", noise="feature", **options).resolve(20, False, 1000)
