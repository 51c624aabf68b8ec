"""The sections of `latentserve evaluate`: each computes its metrics through the served artifact (the
predictor and its ONNX graphs), records them in `ctx.metrics` and returns a report `Section`.

The math is in training/metrics.py; this module chooses what applies to the model and the data, and says
why a section is skipped. Distances and sample-quality features are computed in the model's space (the
manifest's preprocessing), where features on different scales weigh alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from artifact.transforms import to_graph_inputs, to_model_space
from training import metrics as M
from training import report_plots as plots
from training.features import FeatureClassifier
from training.predictor import graph, raw_scores
from training.report import Section

MAX_QUALITY_ROWS = 5000  # per half: k-NN and Fréchet statistics on at most this many rows
N_BOOT = 1000  # bootstrap resamples (--bootstrap)


@dataclass
class Context:
    predictor: Any  # a loaded predictor (see training/predictor.py)
    x: np.ndarray  # (N, F) raw rows
    labels: np.ndarray | None  # (N,) 0/1
    out: Path
    seed: int = 0
    iw_samples: int = 64
    progress: bool = True
    n_boot: int = N_BOOT
    same_source: bool = False  # the evaluation data is the data the model was trained on
    metrics: dict = field(default_factory=dict)
    _scores: Any = None

    @property
    def manifest(self):
        return self.predictor.manifest

    @cached_property
    def xm(self) -> np.ndarray:
        """Model-space rows as the graphs see them (clipped to [0, 1] for min-max and image models),
        computed once: several sections read them."""
        return to_graph_inputs(self.x, self.manifest.preprocessing)

    @property
    def image(self) -> tuple[tuple[int, int], tuple[float, float]] | None:
        """(shape, raw pixel range) for image models, else None."""
        m = self.manifest
        if not m.image_shape:
            return None
        lo, span = m.preprocessing.offset[0], m.preprocessing.scale[0]
        return (m.image_shape[0], m.image_shape[1]), (lo, lo + span)

    def names(self) -> list[str]:
        return self.manifest.feature_names or [f"feature {j + 1}" for j in range(self.x.shape[1])]

    def scores(self):
        """The served AnomalyScores of every row, computed once."""
        if self._scores is None:
            self._scores = raw_scores(self.predictor, self.x)
        return self._scores


def _f(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"


def reconstruction(ctx: Context) -> Section:
    sec = Section("Reconstruction")
    if ctx.manifest.kind == "gan":
        sec.skipped = "a gan has no encoder, so it does not reconstruct"
        return sec
    xm = ctx.xm
    x_hat = ctx.predictor.reconstruct(ctx.x)
    xm_hat = to_model_space(x_hat, ctx.manifest.preprocessing.model_copy(update={"clip": False}))
    err = (xm - xm_hat) ** 2  # (N, F) model space
    base = (xm - xm.mean(0)) ** 2  # the mean predictor: every row rebuilt as the data's mean row
    per_feature, base_feature = err.mean(0), base.mean(0)
    per_row = err.mean(1)
    raw_rmse = np.sqrt(((ctx.x - x_hat) ** 2).mean(0))
    worst = np.argsort(-per_row)[:8]
    r2 = 1.0 - per_feature.sum() / max(base_feature.sum(), 1e-12)
    ctx.metrics["reconstruction"] = {
        "mse_model_space": float(per_row.mean()),
        "mean_predictor_mse_model_space": float(base.mean()),
        "explained_variance": float(r2),
        "per_row_mse_quantiles": {q: float(np.quantile(per_row, q / 100)) for q in (50, 90, 99)},
        "per_feature_mse_model_space": per_feature.tolist(),
        "per_feature_mean_predictor_mse": base_feature.tolist(),
        "per_feature_rmse_raw": raw_rmse.tolist(),
        "worst_rows": [{"row": int(i) + 1, "mse_model_space": float(per_row[i])} for i in worst],
    }
    sec.text(
        f"Mean squared error per feature, in model space: {_f(per_row.mean())}, against {_f(base.mean())} for the "
        f"mean predictor (every row rebuilt as the data's mean row): {100 * r2:.1f} % of the variance explained. "
        f"Per-row error: median {_f(np.median(per_row))}, 90th percentile {_f(np.quantile(per_row, 0.9))}, "
        f"99th {_f(np.quantile(per_row, 0.99))}."
    )
    names = ctx.names()
    order = np.argsort(-per_feature)[:8]  # the features rebuilt worst

    def ratio(j: int) -> str:  # a (near-)constant feature has no variance to compare with
        return _f(per_feature[j] / base_feature[j], 3) if base_feature[j] > 1e-4 * base_feature.mean() else "constant"

    sec.table(
        ["feature", "model MSE", "mean-predictor MSE", "ratio", "RMSE (raw units)"],
        [[names[j], _f(per_feature[j]), _f(base_feature[j]), ratio(j), _f(raw_rmse[j])] for j in order],
    )
    sec.text(
        "The table lists the features with the largest error, beside the mean predictor's (ratio below 1: better than it)."
    )
    sec.table(["worst rows (1-based)", "MSE (model space)"], [[str(i + 1), _f(per_row[i])] for i in worst])
    plots.bars(
        ctx.out / "reconstruction_features.png",
        {"model": per_feature, "mean predictor": base_feature},
        "feature",
        "MSE (model space)",
        names,
    )
    sec.figure("reconstruction_features.png", "Per-feature reconstruction error beside the mean predictor's")
    if ctx.image:
        shape, vrange = ctx.image
        first = np.arange(min(16, len(ctx.x)))
        plots.image_grid(
            ctx.out / "reconstructions.png",
            [ctx.x[first], x_hat[first], ctx.x[worst], x_hat[worst]],
            ["originals", "reconstructions", "worst rows", "their reconstructions"],
            shape,
            vrange,
        )
        sec.figure("reconstructions.png", "Originals beside their reconstructions; the worst-reconstructed rows")
    return sec


def likelihood(ctx: Context, bar) -> Section:
    sec = Section("Likelihood")
    m = ctx.manifest
    if m.kind != "vae":
        sec.skipped = f"a {m.kind} defines no likelihood p(x); the bounds are for vae models"
        return sec
    xm = ctx.xm.astype(np.float64)
    encode, decode = graph(ctx.predictor, "encoder"), graph(ctx.predictor, "decoder")
    rng = np.random.default_rng(ctx.seed)
    iwae, elbo = np.empty(len(xm)), np.empty(len(xm))
    for s in range(0, len(xm), 256):
        mu, logvar = (a.astype(np.float64) for a in encode(xm[s : s + 256].astype(np.float32))[:2])
        log_w = M.importance_log_weights(
            xm[s : s + 256], mu, logvar, lambda z: decode(z)[0], m.likelihood, ctx.iw_samples, rng
        )
        iwae[s : s + 256], elbo[s : s + 256] = M.iwae_bound(log_w), M.elbo(log_w)
        bar.update(min(256, len(xm) - s))
    k = ctx.iw_samples
    res = {
        "likelihood": m.likelihood,
        "iw_samples": k,
        "negative_elbo_nats": float(-elbo.mean()),
        f"negative_iwae_k{k}_nats": float(-iwae.mean()),
        "negative_iwae_nats": float(-iwae.mean()),
        "standard_error_nats": float(iwae.std(ddof=1) / np.sqrt(len(iwae))),
        "space": "model",
    }
    if m.likelihood == "gaussian":
        jac = float(np.log(np.asarray(m.preprocessing.scale)).sum())  # x_model = (x_raw − offset) / scale
        res["negative_iwae_raw_units_nats"] = res["negative_iwae_nats"] + jac
        res["negative_elbo_raw_units_nats"] = res["negative_elbo_nats"] + jac
        sigma = np.asarray(m.preprocessing.scale)
        sec.text(
            f"Decoder likelihood: Gaussian, σ = 1 in model units (the learned noise is folded into the scaling), "
            f"i.e. σ per feature in raw units from {_f(sigma.min())} to {_f(sigma.max())} (median "
            f"{_f(np.median(sigma))}). In raw units (change of variables, + Σ log scale = {_f(jac)}): "
            f"−ELBO {_f(res['negative_elbo_raw_units_nats'], 6)}, −IWAE {_f(res['negative_iwae_raw_units_nats'], 6)}"
            " nats per row."
        )
    else:
        sec.text(
            "Decoder likelihood: Bernoulli over the pixels scaled to [0, 1] (no σ). For grey levels between 0 and 1 "
            "this is a cross-entropy, not a normalised density: compare it between Bernoulli models on the same "
            "data, not with densities of other models."
        )
    ctx.metrics["likelihood"] = res
    sec.table(
        ["bound", "nats per row (model space)"],
        [
            ["negative ELBO (Monte Carlo, K draws)", _f(res["negative_elbo_nats"], 6)],
            [f"negative IWAE bound, K = {k}", _f(res["negative_iwae_nats"], 6)],
            ["standard error of the IWAE mean", _f(res["standard_error_nats"], 3)],
        ],
    )
    sec.text(
        f"Both are upper bounds on −log p(x); the IWAE bound (Burda et al. 2016) is the tighter, and tightens "
        f"as --iw-samples (K = {k}) grows."
    )
    return sec


def _halves(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(ctx.seed).permutation(len(ctx.x))
    half = min(len(order) // 2, MAX_QUALITY_ROWS)
    return order[:half], order[half : 2 * half]


def sample_quality(ctx: Context, bar) -> Section:
    sec = Section("Sample quality")
    m = ctx.manifest
    if "sample" not in m.capabilities or (m.kind in ("ae", "rae") and m.latent_prior is None):
        sec.skipped = f"model {m.name!r} cannot sample (no latent prior in its manifest)"
        return sec
    if len(ctx.x) < 40:
        sec.skipped = f"{len(ctx.x)} rows are too few to compare distributions (at least 40 needed)"
        return sec
    a, b = _halves(ctx)
    xm = ctx.xm
    ref, held = xm[a], xm[b]
    samples_raw = ctx.predictor.sample(n=len(b), seed=ctx.seed)
    fake = to_model_space(samples_raw, m.preprocessing)
    bar.update(1)
    fc = FeatureClassifier(seed=ctx.seed).fit(ref)
    f_ref = fc.features(ref)
    fd_real, fd_fake = M.frechet_distance(f_ref, fc.features(held)), M.frechet_distance(f_ref, fc.features(fake))
    bar.update(1)
    pr_real, pr_fake = M.knn_precision_recall(ref, held), M.knn_precision_recall(ref, fake)
    bar.update(1)
    mem = M.memorisation(fake, ref, held)
    res: dict[str, Any] = {
        "rows_per_half": len(b),
        "fd_classifier_accuracy": fc.accuracy,
        "frechet_distance": fd_fake[0],
        "frechet_distance_real_floor": fd_real[0],
        "frechet_mean_term": fd_fake[1],
        "frechet_covariance_term": fd_fake[2],
        "precision": pr_fake[0],
        "recall": pr_fake[1],
        "precision_real_floor": pr_real[0],
        "recall_real_floor": pr_real[1],
        "memorisation": mem,
    }
    rows = [
        ["Fréchet distance (classifier features)", _f(fd_fake[0]), _f(fd_real[0])],
        ["precision (k = 3)", f"{pr_fake[0]:.3f}", f"{pr_real[0]:.3f}"],
        ["recall (k = 3)", f"{pr_fake[1]:.3f}", f"{pr_real[1]:.3f}"],
    ]
    if not ctx.image:
        auc = M.classifier_two_sample_auc(held, fake, seed=ctx.seed)
        res["c2st_auc"] = auc
        rows.append(["classifier two-sample AUC (0.5 = indistinguishable)", f"{auc:.3f}", "0.5"])
    bar.update(1)
    ctx.metrics["sample_quality"] = res
    sec.text(
        f"{len(b)} generated rows (seed {ctx.seed}) against {len(b)} held-out real rows, each compared with a "
        f"reference half of {len(a)} real rows; the real-vs-real column is the floor a perfect model would reach. "
        f"Fréchet features: the last hidden layer of an MLP trained here on the reference half to tell its "
        f"{min(10, max(2, len(a) // 20))} k-means clusters apart (held-out accuracy {fc.accuracy:.2f}); no "
        f"downloaded weights."
    )
    sec.table(["metric", "model", "real vs real"], rows)
    if m.kind != "gan":  # a gan's G(z) is its sample; the other kinds decode a mean
        sec.text(
            "Generated rows are what /sample returns: the decoder's output g(z), the mean of p(x|z), not a draw "
            "from it. Means are smoother than real rows; that lowers recall measured in the data's own space."
        )
    sec.text(
        "Precision is the share of generated rows that fall on the real data's manifold (fidelity); recall "
        "the share of real rows that fall on the generated manifold (coverage: dropped modes lower it)."
    )
    what = "training rows" if ctx.same_source else "rows of this data (not necessarily the training rows)"
    sec.text(
        f"Memorisation: median distance from a generated row to its nearest reference row "
        f"{_f(mem['sample_to_reference_median'])}, from a held-out real row {_f(mem['real_to_reference_median'])} "
        f"(ratio {mem['median_ratio']:.2f}); {100 * mem['near_copy_share']:.1f} % of generated rows lie closer "
        f"than 99 % of real rows do (about 1 % expected without copying). The reference rows are {what}."
    )
    if mem["near_copy_share"] > 0.05:
        sec.warnings.append(f"{100 * mem['near_copy_share']:.0f} % of samples are near copies of reference rows")
    plots.distance_histogram(
        ctx.out / "memorisation.png", M.nearest_distances(fake, ref), M.nearest_distances(held, ref)
    )
    sec.figure("memorisation.png", "Distance to the nearest reference row: generated vs held-out real rows")
    if ctx.image:
        shape, vrange = ctx.image
        plots.image_grid(
            ctx.out / "samples.png", [samples_raw[:16], samples_raw[16:32]], ["samples", ""], shape, vrange
        )
        sec.figure("samples.png", f"32 samples (seed {ctx.seed})")
    return sec


def latent_space(ctx: Context) -> Section:
    sec = Section("Latent space")
    m = ctx.manifest
    if "encode" not in m.capabilities:
        sec.skipped = f"a {m.kind} has no encoder, so rows have no codes"
        return sec
    codes = ctx.predictor.encode(ctx.x)
    z = codes["latents"].astype(np.float64)  # the vae's latents are its posterior means
    proj, ratio = M.pca(z, 2)
    res: dict[str, Any] = {"latent_dim": int(z.shape[1]), "pca_explained_variance": ratio.tolist()}
    plots.latent_scatter(ctx.out / "latent_pca.png", proj, ctx.labels, ratio)
    coloured = "coloured by label" if ctx.labels is not None else "no labels to colour by"
    sec.figure("latent_pca.png", f"2-D PCA of the {z.shape[1]}-D codes, {coloured}")
    sec.text(f"The first two principal axes of the codes hold {100 * ratio.sum():.0f} % of their variance.")
    if m.kind == "vae":
        kl = M.kl_per_dimension(codes["mu"].astype(np.float64), codes["logvar"].astype(np.float64))
        active = M.active_units(codes["mu"].astype(np.float64))
        res.update({"kl_per_dimension": kl.tolist(), "active_units": int(active.sum()), "active_mask": active.tolist()})
        sec.text(
            f"Active units: {int(active.sum())} of {len(active)} (Cov over rows of the posterior mean > 0.01, "
            f"Burda et al. 2016). Mean KL per row: {_f(kl.sum())} nats, of which the largest unit carries "
            f"{_f(kl.max())}."
        )
        plots.bars(
            ctx.out / "latent_kl.png",
            {"KL": kl},
            "latent unit",
            "mean KL(q(z_j|x) || N(0,1)) (nats)",
            [str(j + 1) for j in range(len(kl))],
        )
        sec.figure("latent_kl.png", "KL per latent dimension; near 0 = unit unused (posterior = prior)")
    ctx.metrics["latent_space"] = res
    return sec
