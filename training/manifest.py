"""The artifact contract: one pydantic `Manifest` that training writes and the service reads.

This module must import without torch: the service (ONNX runtime) imports it.
An artifact is `<models dir>/<name>/<version>/` holding the graph files and
`manifest.json`, written last, into a temporary folder renamed into place.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")  # ASCII only: "²".isdigit() is true, int("²") fails

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


class LatentPrior(_Strict):
    """Gaussian fitted to training latents (ae/rae sampling): z = mean + T * cholesky @ eps."""

    mean: list[float]
    cholesky: list[list[float]]


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

    def graph(self, role: str, fmt: str) -> GraphSpec:
        return self.graphs[role][fmt]  # type: ignore[index]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.model_validate_json((Path(folder) / MANIFEST_FILE).read_text())

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST_FILE).write_text(self.model_dump_json(indent=2))

    def verify_files(self, folder: Path, formats: tuple[str, ...] = ("onnx", "torchscript")) -> None:
        """Raise ValueError naming the first graph file that is missing or whose sha256 differs."""
        for role, by_format in self.graphs.items():
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
