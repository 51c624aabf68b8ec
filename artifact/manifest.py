"""The artifact contract: one pydantic `Manifest` that training writes and the service reads.

An artifact is `<models dir>/<name>/<version>/` holding the graph files and `manifest.json`,
written last, into a temporary folder renamed into place. The manifest is validated across its
fields (kind <-> capabilities <-> graphs, vector lengths against `n_features` and `latent_dim`,
a closed set of score methods, monotone quantiles), so that a contradictory manifest is refused
at load with its reason instead of answering 500 to every request later.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")  # ASCII only: "²".isdigit() is true, int("²") fails

KINDS = ("ae", "rae", "vae", "gan")
Kind = Literal["ae", "rae", "vae", "gan"]
Capability = Literal["encode", "reconstruct", "sample", "anomaly-score"]
GraphRole = Literal["encoder", "decoder", "generator", "discriminator"]
GraphFormat = Literal["onnx", "torchscript"]

# Which graphs and endpoints each kind has.
KIND_GRAPHS: dict[str, tuple[str, ...]] = {
    "ae": ("encoder", "decoder"),
    "rae": ("encoder", "decoder"),
    "vae": ("encoder", "decoder"),
    "gan": ("generator", "discriminator"),
}
KIND_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "ae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "rae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "vae": ("encode", "reconstruct", "sample", "anomaly-score"),
    "gan": ("sample", "anomaly-score"),
}

# Graph I/O names, by (kind, role): export writes them, the predictor checks them.
GRAPH_IO: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("ae", "encoder"): (["x"], ["z"]),
    ("rae", "encoder"): (["x"], ["z"]),
    ("vae", "encoder"): (["x"], ["mu", "logvar"]),
    ("ae", "decoder"): (["z"], ["x_hat"]),
    ("rae", "decoder"): (["z"], ["x_hat"]),
    ("vae", "decoder"): (["z"], ["x_hat"]),
    ("gan", "generator"): (["z"], ["x_hat"]),
    ("gan", "discriminator"): (["x"], ["logit", "prob"]),
}
# The anomaly score methods (artifact/scores.py computes each), and the kinds each applies to.
SCORE_METHODS: dict[str, tuple[str, ...]] = {
    "reconstruction-mse": ("ae", "rae"),
    "reconstruction-bce": ("ae", "rae"),
    "ae-joint-gaussian": ("ae", "rae"),
    "negative-elbo-gaussian-posterior-mean": ("vae",),
    "negative-elbo-bernoulli-posterior-mean": ("vae",),
    "negative-elbo-gaussian-posterior-draws": ("vae",),
    "negative-elbo-bernoulli-posterior-draws": ("vae",),
    "neg-log-discriminator": ("gan",),
    "gan-latent-search": ("gan",),
}


def valid_name(name: str) -> bool:
    """Model names are safe path components: letters, digits, '_', '.', '-' (no '..')."""
    return bool(NAME_PATTERN.match(name)) and ".." not in name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]  # "batch" marks the dynamic axis
    dtype: Literal["float32"] = "float32"


class GraphSpec(_Strict):
    file: str
    format: GraphFormat
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in ("", ".", "..") or v.startswith("."):
            raise ValueError(f"graph file must be a plain file name inside the artifact, got {v!r}")
        return v


class Preprocessing(_Strict):
    """x_model = (x_raw - offset) / scale, optionally clipped to [0, 1]; x_raw = x_model * scale + offset."""

    method: Literal["standardize", "minmax", "image-range"]
    offset: list[float]
    scale: list[float]
    clip: bool = False

    @model_validator(mode="after")
    def _usable(self) -> Preprocessing:
        if len(self.offset) != len(self.scale):
            raise ValueError(f"offset has {len(self.offset)} values and scale {len(self.scale)}")
        if not all(math.isfinite(v) for v in self.offset) or not all(math.isfinite(v) and v > 0 for v in self.scale):
            raise ValueError("offset must be finite and scale finite and positive")
        return self


class Calibration(_Strict):
    """Empirical distribution of anomaly scores on held-out training rows.

    `quantiles[i]` is the score at probability `levels[i]`; a new score's percentile
    is its interpolated rank in this distribution (a rank, not a probability).
    """

    method: str  # how a row's score is computed, e.g. "reconstruction-mse"
    description: str
    n_rows: int
    levels: list[float]
    quantiles: list[float]
    contamination: float = Field(gt=0, lt=0.5)
    threshold: float

    @model_validator(mode="after")
    def _a_distribution(self) -> Calibration:
        if self.method not in SCORE_METHODS:
            raise ValueError(f"unknown score method {self.method!r}: expected one of {', '.join(SCORE_METHODS)}")
        if len(self.levels) != len(self.quantiles) or len(self.levels) < 2:
            raise ValueError(
                f"levels and quantiles must have the same length (at least 2), got {len(self.levels)} "
                f"and {len(self.quantiles)}"
            )
        values = [*self.levels, *self.quantiles, self.threshold]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("levels, quantiles and threshold must be finite numbers")
        if any(b <= a for a, b in zip(self.levels, self.levels[1:])) or not 0 <= self.levels[0] <= self.levels[-1] <= 1:
            raise ValueError("levels must increase strictly within [0, 1]")
        bad = next((i for i, (a, b) in enumerate(zip(self.quantiles, self.quantiles[1:])) if b < a), None)
        if bad is not None:
            raise ValueError(f"quantiles must not decrease: quantiles[{bad + 1}] < quantiles[{bad}]")
        return self


class LatentPrior(_Strict):
    """Gaussian fitted to training latents (ae/rae sampling): z = mean + T * cholesky @ eps."""

    mean: list[float]
    cholesky: list[list[float]]

    @model_validator(mode="after")
    def _square(self) -> LatentPrior:
        n = len(self.mean)
        if len(self.cholesky) != n or any(len(row) != n for row in self.cholesky):
            raise ValueError(f"cholesky must be {n} x {n} for a mean of {n} values")
        if not all(math.isfinite(v) for row in self.cholesky for v in row) or not all(map(math.isfinite, self.mean)):
            raise ValueError("mean and cholesky must be finite numbers")
        if any(self.cholesky[i][i] <= 0 for i in range(n)):
            raise ValueError("cholesky must have a positive diagonal (a lower-triangular factor)")
        return self


class EnsembleMember(_Strict):
    """One member of an ensemble artifact: its graphs, its scaling and latent prior (they can differ
    from one member to the next: training folds each model's residual scale into its scaling), and
    the mean and std of its own score on the calibration rows, which normalise it."""

    seed: int
    graphs: dict[GraphRole, dict[GraphFormat, GraphSpec]]
    preprocessing: Preprocessing
    latent_prior: LatentPrior | None = None
    score_mean: float
    score_std: float = Field(gt=0)

    @model_validator(mode="after")
    def _finite(self) -> EnsembleMember:
        if not (math.isfinite(self.score_mean) and math.isfinite(self.score_std)):
            raise ValueError("score_mean and score_std must be finite numbers")
        return self


class Ensemble(_Strict):
    """Several models of one kind, served as one: the score of a row is the mean over the members of
    (member score − member score_mean) / member score_std, and the manifest's calibration is the
    distribution of that mean. The first member also answers encode, reconstruct and sample (its
    graphs, scaling and prior are the manifest's own)."""

    normalisation: Literal["zscore"] = "zscore"
    members: list[EnsembleMember] = Field(min_length=2, max_length=32)


class Manifest(_Strict):
    schema_version: Literal[1] = 1  # SCHEMA_VERSION
    name: str
    version: int = Field(ge=1)
    kind: Kind
    capabilities: list[Capability]
    n_features: int = Field(ge=1)
    feature_names: list[str] | None = None
    image_shape: list[int] | None = None
    latent_dim: int = Field(ge=1)
    likelihood: Literal["mse", "bce", "gaussian", "bernoulli", "adversarial"]
    preprocessing: Preprocessing
    graphs: dict[GraphRole, dict[GraphFormat, GraphSpec]]
    calibration: Calibration
    latent_prior: LatentPrior | None = None
    ensemble: Ensemble | None = None
    training: dict  # the full, frozen training configuration
    metrics: dict
    data: dict  # where the data came from, row counts
    versions: dict[str, str]  # library versions at export
    created_at: str

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not valid_name(v):
            raise ValueError(f"model name must match {NAME_PATTERN.pattern}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Cross-field checks: everything the predictor relies on, so that a manifest that loads serves."""
        kind, f, lat = self.kind, self.n_features, self.latent_dim
        extra = sorted(set(self.capabilities) - set(KIND_CAPABILITIES[kind]))
        if extra or len(set(self.capabilities)) != len(self.capabilities):
            raise ValueError(
                f"capabilities {self.capabilities} do not fit a {kind} (at most {KIND_CAPABILITIES[kind]})"
            )
        if set(self.graphs) != set(KIND_GRAPHS[kind]):
            raise ValueError(
                f"a {kind} has the graphs {list(KIND_GRAPHS[kind])}, the manifest lists {list(self.graphs)}"
            )
        widths = {"x": f, "z": lat, "mu": lat, "logvar": lat, "x_hat": f, "logit": 1, "prob": 1}
        for role, by_format in self.graphs.items():
            if not by_format:
                raise ValueError(f"the {role} graph has no file in any format")
            names = GRAPH_IO[(kind, role)]
            for fmt, spec in by_format.items():
                if spec.format != fmt:
                    raise ValueError(f"the {role} {fmt} graph says it is {spec.format}")
                got = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
                if got != names:
                    raise ValueError(f"the {role} graph of a {kind} has inputs/outputs {list(names)}, not {list(got)}")
                for t in (*spec.inputs, *spec.outputs):
                    if t.shape != ["batch", widths[t.name]]:
                        raise ValueError(
                            f"the {role} graph's {t.name} has shape {t.shape}, expected ['batch', {widths[t.name]}]"
                        )
        if len(self.preprocessing.offset) != f:
            raise ValueError(f"preprocessing has {len(self.preprocessing.offset)} offsets for {f} features")
        if self.feature_names is not None and len(self.feature_names) != f:
            raise ValueError(f"feature_names has {len(self.feature_names)} names for {f} features")
        if self.image_shape is not None and (math.prod(self.image_shape) != f or min(self.image_shape) < 1):
            raise ValueError(f"image_shape {self.image_shape} does not hold {f} features")
        if kind not in SCORE_METHODS[self.calibration.method]:
            raise ValueError(f"score method {self.calibration.method} is not one of a {kind}'s")
        if self.latent_prior is None and self.calibration.method == "ae-joint-gaussian":
            raise ValueError("the ae-joint-gaussian score needs a latent_prior")
        if self.latent_prior is not None and len(self.latent_prior.mean) != lat:
            raise ValueError(f"latent_prior has {len(self.latent_prior.mean)} dimensions, latent_dim is {lat}")
        if self.ensemble is not None:
            self._consistent_ensemble(self.ensemble)
        return self

    def _consistent_ensemble(self, ensemble: Ensemble) -> None:
        first = ensemble.members[0]
        if (first.graphs, first.preprocessing, first.latent_prior) != (
            self.graphs,
            self.preprocessing,
            self.latent_prior,
        ):
            raise ValueError("the ensemble's first member must have the manifest's graphs, preprocessing and prior")
        files: set[str] = set()
        for i in range(len(ensemble.members)):
            try:
                member = self.member(i)
            except ValueError as e:
                raise ValueError(f"ensemble member {i}: {e}") from None
            for by_format in member.graphs.values():
                for spec in by_format.values():
                    if i > 0 and spec.file in files:
                        raise ValueError(f"ensemble member {i} reuses the graph file {spec.file}")
            files |= {spec.file for by_format in member.graphs.values() for spec in by_format.values()}

    def member(self, i: int) -> Manifest:
        """Ensemble member i as a single model's manifest (validated): its graphs, scaling and prior."""
        assert self.ensemble is not None
        m = self.ensemble.members[i]
        fields = {k: getattr(self, k) for k in type(self).model_fields if k != "ensemble"}
        update = {"graphs": m.graphs, "preprocessing": m.preprocessing, "latent_prior": m.latent_prior}
        try:
            return Manifest(**{**fields, **update})
        except ValidationError as e:
            raise ValueError(str(e.errors()[0]["msg"]).removeprefix("Value error, ")) from None

    def all_graphs(self) -> list[tuple[GraphRole, dict[GraphFormat, GraphSpec]]]:
        """(role, {format: spec}) of every graph of the artifact, ensemble members included."""
        members = self.ensemble.members[1:] if self.ensemble is not None else []
        return [*self.graphs.items(), *(item for m in members for item in m.graphs.items())]

    def graph(self, role: str, fmt: str) -> GraphSpec:
        return self.graphs[role][fmt]  # type: ignore[index]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.model_validate_json((Path(folder) / MANIFEST_FILE).read_text())

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST_FILE).write_text(self.model_dump_json(indent=2))

    def verify_files(self, folder: Path, formats: tuple[str, ...] = ("onnx", "torchscript")) -> None:
        """Raise ValueError naming the first graph file that is missing or whose sha256 differs."""
        for role, by_format in self.all_graphs():
            for fmt, spec in by_format.items():
                if fmt not in formats:
                    continue
                path = Path(folder) / spec.file
                if not path.is_file():
                    raise ValueError(f"{role} graph file {spec.file} is missing")
                digest = sha256_file(path)
                if digest != spec.sha256:
                    raise ValueError(
                        f"{role} graph file {spec.file} fails its sha256 check: "
                        f"manifest says {spec.sha256[:12]}…, file is {digest[:12]}…"
                    )


def list_versions(models_dir: Path, name: str) -> list[int]:
    """Published versions of a model (folders named by an integer that hold a manifest)."""
    folder = Path(models_dir) / name
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if VERSION_PATTERN.match(p.name) and (p / MANIFEST_FILE).is_file()
    )
