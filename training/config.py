"""Training configuration: one frozen dataclass, defaults ← CLI flags, resolved once, logged, and
carried into the checkpoint and the manifest (nothing is re-derived from later code defaults)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from artifact.manifest import KINDS

# Default training length in gradient steps, whatever the row count (bench/anomaly_results.md): on
# the ODDS sets 3000 steps score as well as 6000 and keep a 29k-row set to seconds; the vae gets
# 6000 (equal scores there) because its Bernoulli fit of digits needs them; the gan's generator
# needs 3000 to lie close enough to the data for its latent-search score.
STEP_BUDGET = {"ae": 3000, "rae": 3000, "vae": 6000, "gan": 3000}
DEFAULT_BATCH = 64
# ae, rae and vae: at most 200 epochs (at least 500 steps) within that budget, so that a 100-row
# table is not fitted for 3000 epochs, outliers included (bench/anomaly_results.md, issue 15: it
# helped both halves of the 22 benchmark sets for the rae and vae; for the ae together with robust
# scaling, not alone; never for the gan).
EPOCH_CAP = {"ae": 200, "rae": 200, "vae": 200}
MIN_STEPS = 500
# Ensemble members by default, on tables (never images, nor under torchrun: members train one
# after the other): the ae's 3 seeds averaged gained on both halves of the 22 benchmark sets
# (ODDS 0.860 -> 0.869, ADBench 0.754 -> 0.764 ROC AUC, seed spread halved; bench/anomaly_results.md),
# and the rae's with robust scaling, the balanced score and learned noise (below); the gan's 3
# (quick runs: ODDS 0.836 -> 0.837, ADBench 0.778 -> 0.813; 25 s on 10,000 x 100 once D's two
# forwards share one spectral norm, models/gan.py). Not the vae: 3 fits take 36 s there.
DEFAULT_ENSEMBLE = {"ae": 3, "rae": 3, "gan": 3}
MEMBER_SEED_STRIDE = 1000  # ensemble member i trains with seed + 1000·i: no overlap with nearby seeds
# The default anomaly score per kind (bench/anomaly_results.md). The ae's balanced joint score
# weighs its two terms alike: ADBench 0.764 -> 0.795 ROC AUC, ODDS even. The rae lost 0.004 on ODDS
# with it alone, and gains on both halves with it, robust scaling, 3 members and learned noise together.
DEFAULT_SCORES = {"ae": "balanced", "rae": "balanced", "vae": "elbo-draws", "gan": "search"}
# Kinds whose Gaussian decoder learns a σ per feature by default where it folds into the scaling
# (standard, robust or no scaling): the vae from the start; the ae since it helped both halves of
# the 22 benchmark sets with its balanced score (ODDS 0.868 -> 0.874, ADBench 0.795 -> 0.805 ROC
# AUC; bench/anomaly_results.md); the rae with the ae's other defaults (robust scaling, 3 members,
# the balanced score): ODDS 0.858 -> 0.871, ADBench 0.743 -> 0.806 (alone it lost on ODDS).
LEARNED_NOISE_KINDS = ("ae", "rae", "vae")
SCORES = {
    "ae": ("balanced", "joint", "reconstruction"),
    "rae": ("balanced", "joint", "reconstruction"),
    "vae": ("elbo-draws", "elbo"),
    "gan": ("search", "discriminator"),
}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the option."""


@dataclass(frozen=True)
class TrainConfig:
    kind: str
    name: str
    data: str = "digits"
    models: str = "model_repository"
    runs: str = "runs"
    epochs: int | None = None  # None: STEP_BUDGET gradient steps, as epochs of this data's batches
    patience: int | None = None  # epochs without a better validation loss before stopping; None: run
    # all epochs (the best validation epoch is restored either way: on tabular data with outliers,
    # scores keep improving after the validation cost flattens)
    batch_size: int | None = None  # None: 64, or half the training rows for tables under 128 of them
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd": the notes' θ ← θ − η∇J
    seed: int = 0
    val_fraction: float = 0.2  # of the rows left after calibration: held out for early stopping and parity
    # held out first, for the anomaly threshold and percentiles only: rows no training decision saw, so
    # that the threshold flags about `contamination` of fresh inlier rows
    calibration_fraction: float = 0.15
    contamination: float = 0.1  # default threshold: the (1 − c) quantile of held-out scores
    device: str = "auto"
    threads: int = 1  # small MLPs gain little from more; the machine is shared
    hidden: tuple[int, ...] | None = None  # None: chosen from the feature count (resolve())
    latent_dim: int | None = None
    activation: str | None = None  # None: relu, leaky_relu for the gan
    scaling: str = "auto"  # auto | standard | minmax | none
    reconstruction: str | None = None  # ae/rae: mse | bce (bce needs data in [0, 1]); None: bce for pixels
    penalty: str = "l2"  # rae: l1 | l2 on weight matrices only
    lam: float = 1e-5  # rae: λ of λ·Ω(W); Ω sums over all weights, so λ is small
    likelihood: str | None = None  # vae: gaussian | bernoulli; None: bernoulli for image data
    beta: float = 1.0  # vae: weight of the KL term (1 = the ELBO)
    # ae/rae/vae: share of each batch's highest-cost rows left out of its cost (losses.trimmed_mean),
    # None: the contamination. Training rows may hold outliers; a model that fits them scores them low.
    trim: float | None = None
    # gaussian vae, or ae/rae with mse: σ of p(x|z) = N(x̂, diag σ²): unit, or learned (shared, per
    # feature); None: feature for the LEARNED_NOISE_KINDS on standard/robust/no scaling (σ is folded
    # into the scaling at the end, see train.fold_noise), else unit
    noise: str | None = None
    # anomaly score: ae/rae joint (reconstruction + latent Mahalanobis, standardised data), balanced
    # (the same, σ set so that both terms have the same median on the training rows; the ae's
    # default on tables) or reconstruction; vae elbo-draws (16 fixed posterior draws) or elbo
    # (z = mu); gan search (latent search through G) or discriminator (−log D(x))
    score: str | None = None
    spectral_norm: bool = True  # gan: spectral normalisation of D's layers (see models/networks.py)
    allow_constant: bool = False  # keep zero-variance columns (scale 1) instead of refusing
    columns: tuple[str, ...] | None = None  # the table's feature columns, names or 1-based positions
    drop_columns: tuple[str, ...] | None = None  # columns left out (ids, labels)
    image_shape: tuple[int, ...] | None = None  # H, W[, C] of (N, F) rows that are images
    # members of an ensemble served as one model (manifest.Ensemble): the same rows, seeds seed + 1000·i
    # None: DEFAULT_ENSEMBLE for the kind on tables, else 1
    ensemble: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("hidden", "columns", "drop_columns", "image_shape"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training options: {sorted(unknown)}")
        d = dict(d)
        for key in ("hidden", "columns", "drop_columns", "image_shape"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def resolve(self, n_features: int, is_image: bool, n_train: int | None = None, world: int = 1) -> TrainConfig:
        """Fill the data-dependent defaults and check every choice; returns a new frozen config.

        `is_image`: pixel data (a known pixel range: training/images.py), scaled by that range,
        with a Bernoulli vae and BCE ae/rae by default;
        `n_train`: the training rows (after the validation split), for the default epochs;
        `world`: torchrun's process count, which the default batch is a multiple of (it splits evenly)."""
        self.check()
        width = min(256, max(32, 2 ** math.ceil(math.log2(max(n_features, 2)))))
        hidden = self.hidden or (width, width // 2)
        latent = self.latent_dim or min(16, max(2, n_features // 4))
        activation = self.activation or ("leaky_relu" if self.kind == "gan" else "relu")
        reconstruction = self.reconstruction or ("bce" if is_image and self.kind in ("ae", "rae") else "mse")
        likelihood = self.likelihood
        if self.kind == "vae" and likelihood is None:
            likelihood = "bernoulli" if is_image else "gaussian"
        scaling = self.scaling
        if scaling == "auto":
            wants_unit = reconstruction == "bce" or likelihood == "bernoulli"
            # every kind: median / IQR (robust to heavy tails and to the outliers among the training
            # rows); on the 22 benchmark sets it helped both halves for the vae and the gan, for the ae
            # with the epoch cap (ODDS even, ADBench +0.03), for the rae with the ae's other defaults
            # (bench/anomaly_results.md)
            scaling = "image" if is_image else ("minmax" if wants_unit else "robust")
        unscaled_out = scaling in ("standard", "robust", "none")  # no clipping: σ folds into the scale
        gaussian = (self.kind in ("ae", "rae") and reconstruction == "mse") or likelihood == "gaussian"
        foldable = gaussian and unscaled_out  # a Gaussian σ that folds into the scale
        noise = self.noise or ("feature" if self.kind in LEARNED_NOISE_KINDS and foldable else "unit")
        # ae/rae: their joint score only where σ folds, else the reconstruction error
        score = self.score or (
            DEFAULT_SCORES[self.kind] if self.kind in ("vae", "gan") or foldable else "reconstruction"
        )
        if noise != "unit" and not (self.kind != "gan" and foldable):
            raise ConfigError(
                f"--noise {noise} needs a vae with a gaussian likelihood, or an ae/rae with mse, on standard, "
                f"robust or no scaling (it folds into the scale), not {self.kind} with {scaling} scaling"
            )
        if score in ("joint", "balanced") and not foldable:
            raise ConfigError(f"--score {score} needs mse on standard, robust or no scaling, not {scaling} scaling")
        batch_size = self.batch_size or min(DEFAULT_BATCH, max(1, (n_train or DEFAULT_BATCH) // 2))
        if self.batch_size is None:  # an explicit --batch-size is checked against the world, not changed
            batch_size = max(world, batch_size - batch_size % world)
        epochs = self.epochs
        if epochs is None:
            batches = max(1, (n_train or batch_size) // batch_size)
            steps = int(self.extra.get("steps", STEP_BUDGET[self.kind]))
            # extra steps / epoch_cap / min_steps: experiment knobs (bench/anomaly.py --set); epoch_cap 0: no cap
            epoch_cap = self.extra.get("epoch_cap", EPOCH_CAP.get(self.kind))
            if epoch_cap:
                steps = min(steps, max(int(self.extra.get("min_steps", MIN_STEPS)), int(epoch_cap) * batches))
            epochs = math.ceil(steps / batches)
        ensemble = self.ensemble or (DEFAULT_ENSEMBLE.get(self.kind, 1) if not is_image and world == 1 else 1)
        return replace(
            self,
            hidden=tuple(hidden),
            reconstruction=reconstruction,
            batch_size=batch_size,
            latent_dim=latent,
            activation=activation,
            likelihood=likelihood,
            scaling=scaling,
            epochs=epochs,
            patience=self.patience or epochs,
            trim=self.contamination if self.trim is None else self.trim,
            noise=noise,
            score=score,
            ensemble=ensemble,
        )

    def check(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.kind in KINDS, f"unknown kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        need(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.batch_size is None or self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.optimizer in ("adam", "sgd"), f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        need(0 < self.val_fraction < 0.9, f"--val-fraction must be in (0, 0.9), got {self.val_fraction}")
        need(
            0 < self.calibration_fraction < 0.5,
            f"--calibration-fraction must be in (0, 0.5), got {self.calibration_fraction}",
        )
        need(0 < self.contamination < 0.5, f"--contamination must be in (0, 0.5), got {self.contamination}")
        need(self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}")
        need(self.threads >= 1, f"--threads must be at least 1, got {self.threads}")
        need(
            self.hidden is None or all(h >= 1 for h in self.hidden),
            f"--hidden sizes must be positive, got {self.hidden}",
        )
        need(self.latent_dim is None or self.latent_dim >= 1, f"--latent-dim must be positive, got {self.latent_dim}")
        need(
            self.scaling in ("auto", "standard", "robust", "minmax", "image", "none"),
            f"--scaling must be auto, standard, robust, minmax or none, got {self.scaling!r}",
        )
        need(
            self.reconstruction in (None, "mse", "bce"),
            f"--reconstruction must be mse or bce, got {self.reconstruction!r}",
        )
        need(self.penalty in ("l1", "l2"), f"--penalty must be l1 or l2, got {self.penalty!r}")
        need(self.lam >= 0, f"--lam must be non-negative, got {self.lam}")
        need(
            self.likelihood in (None, "gaussian", "bernoulli"),
            f"--likelihood must be gaussian or bernoulli, got {self.likelihood!r}",
        )
        need(self.trim is None or 0 <= self.trim < 0.5, f"--trim must be in [0, 0.5), got {self.trim}")
        need(
            self.noise in (None, "unit", "shared", "feature"),
            f"--noise must be unit, shared or feature, got {self.noise!r}",
        )
        need(
            self.score is None or self.score in SCORES[self.kind],
            f"--score for {self.kind} must be {' or '.join(SCORES.get(self.kind, ()))}, got {self.score!r}",
        )
        need(self.beta >= 0, f"--beta must be non-negative, got {self.beta}")
        need(
            self.ensemble is None or 1 <= self.ensemble <= 32,
            f"--ensemble must be between 1 and 32 members, got {self.ensemble}",
        )
        need(
            self.kind in ("ae", "rae") or self.reconstruction in (None, "mse"),
            f"--reconstruction applies to ae and rae, not {self.kind}",
        )

    def member(self, i: int) -> TrainConfig:
        """Ensemble member i's config: its own seed (member 0 is the single model this config trains)."""
        return replace(self, seed=self.seed + MEMBER_SEED_STRIDE * i)

    @property
    def unit_range(self) -> bool:
        """Whether the model's inputs must lie in [0, 1] (BCE or Bernoulli costs)."""
        return (self.kind in ("ae", "rae") and self.reconstruction == "bce") or (
            self.kind == "vae" and self.likelihood == "bernoulli"
        )

    @property
    def output_activation(self) -> str:
        """Sigmoid when the model works in [0, 1], identity for standardised or raw data."""
        return "sigmoid" if self.scaling in ("minmax", "image") or self.unit_range else "identity"
