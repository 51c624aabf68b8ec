"""Request and response bodies, with OpenAPI examples that work against the default digits models.

Numbers are strict (no "1.5" strings, no booleans) and finite; row widths are checked by
the runtime, which knows each model's feature and latent sizes. Unknown fields are errors,
so that a typo such as "input" is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = Annotated[list[Number], Field(min_length=1)]
Rows = Annotated[list[Row], Field(min_length=1)]
# Rows as objects keyed by feature name (service/records.py matches them to the manifest's names).
Records = Annotated[list[dict[str, Number]], Field(min_length=1)]
RECORDS = "Rows as objects keyed by feature name (the model's feature_names in /models), instead of inputs."
INPUTS = "Rows of raw feature values, as the model was trained on (or records)."

# Two rows of scikit-learn's digits (8x8 images, pixel values 0-16): a "0" and a "1".
# fmt: off
DIGIT_0 = [
     0,  0,  5, 13,  9,  1,  0,  0,
     0,  0, 13, 15, 10, 15,  5,  0,
     0,  3, 15,  2,  0, 11,  8,  0,
     0,  4, 12,  0,  0,  8,  8,  0,
     0,  5,  8,  0,  0,  9,  8,  0,
     0,  4, 11,  0,  1, 12,  7,  0,
     0,  2, 14,  5, 10, 12,  0,  0,
     0,  0,  6, 13, 10,  0,  0,  0,
]
DIGIT_1 = [
     0,  0,  0, 12, 13,  5,  0,  0,
     0,  0,  0, 11, 16,  9,  0,  0,
     0,  0,  3, 15, 16,  6,  0,  0,
     0,  7, 15, 16, 16,  2,  0,  0,
     0,  0,  1, 16, 16,  3,  0,  0,
     0,  0,  1, 16, 16,  6,  0,  0,
     0,  0,  1, 16, 16,  6,  0,  0,
     0,  0,  0, 11, 16, 10,  0,  0,
]
# fmt: on
NOISE = [16 * ((7 * i) % 3 == 0) for i in range(64)]  # a striped pattern no digit looks like


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        max_length=200,
        description="Model name; optional when exactly one model is loaded.",
    )
    version: int | None = Field(None, ge=1, strict=True, description="Model version; default: the newest.")


# Each request is its options (the query parameters of an application/x-npy request) plus its
# array (the .npy body); service/payloads.py validates the two halves separately on its fast paths.
class EncodeRequest(ModelRequest):
    inputs: Rows | None = Field(None, description=INPUTS)
    records: Records | None = Field(None, description=RECORDS)


class ReconstructRequest(ModelRequest):
    inputs: Rows | None = Field(None, description=INPUTS)
    records: Records | None = Field(None, description=RECORDS)


class AnomalyScoreOptions(ModelRequest):
    explain: bool = Field(False, strict=True, description="Also return per-feature contributions (ae, rae, vae).")


class AnomalyScoreRequest(AnomalyScoreOptions):
    inputs: Rows | None = Field(None, description=INPUTS)
    records: Records | None = Field(None, description=RECORDS)


class SampleOptions(ModelRequest):
    n: int | None = Field(None, ge=1, strict=True, description="How many samples to draw (optional with latents).")
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, strict=True, description="Seed for the draw: same seed, same samples."
    )
    temperature: float = Field(
        1.0,
        ge=0.0,
        le=1e6,
        strict=True,
        allow_inf_nan=False,
        description="Scale of the latent draw: z ~ N(0, T²I) (vae, gan) or the fitted Gaussian (ae, rae).",
    )


class SampleRequest(SampleOptions):
    latents: Rows | None = Field(None, description="Latent vectors to decode instead of drawing them.")


class ModelResponse(BaseModel):
    model: str
    version: int


class EncodedResponse(ModelResponse):
    """The responses of the endpoints that encode their inputs (/encode, /reconstruct)."""

    clipped: list[int] | None = Field(
        None,
        description="Min-max and image models only, when any input was outside the training range: per row, how "
        "many features were clipped to it before encoding (scores are never computed on clipped inputs alone).",
    )


class EncodeResponse(EncodedResponse):
    latents: list[list[float]]
    mu: list[list[float]] | None = Field(None, description="vae only: posterior means (= latents).")
    logvar: list[list[float]] | None = Field(None, description="vae only: posterior log-variances.")


class ReconstructResponse(EncodedResponse):
    reconstructions: list[list[float]] = Field(description="In the same raw units as the inputs.")


class SampleResponse(ModelResponse):
    samples: list[list[float]] = Field(description="In the raw units of the training data.")


class AnomalyScoreResponse(ModelResponse):
    scores: list[float] = Field(description="Higher is more anomalous; see /models for each model's method.")
    threshold: float = Field(description="Scores above it are anomalies (the calibration's contamination quantile).")
    is_anomaly: list[bool]
    percentiles: list[float] = Field(description="Each score's percentile (0-100) among held-out training rows.")
    contributions: list[list[float]] | None = Field(
        None, description="With explain: each feature's share of the reconstruction term, in model space."
    )


class ErrorResponse(BaseModel):
    error: str


class VersionInfo(BaseModel):
    version: int
    state: str = Field(description="loading, ready or failed")
    reason: str | None = Field(None, description="Why the model was refused, when it was.")
    kind: str | None = None
    capabilities: list[str] | None = None
    n_features: int | None = None
    latent_dim: int | None = None
    runtime: dict[str, str] | None = Field(None, description="Graph runtime, device and active provider.")
    model_config = ConfigDict(extra="allow")


class ModelInfo(BaseModel):
    name: str
    default_version: int
    versions: list[VersionInfo]


class IgnoredFolder(BaseModel):
    path: str = Field(description="Relative to the model repository.")
    reason: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    ignored: list[IgnoredFolder] = Field([], description="Folders in the repository that cannot be models, and why.")


class ReadyResponse(BaseModel):
    status: str = Field(description="ready, loading, failed or stopping")
    models: dict[str, list[int]] | None = Field(None, description="The versions serving, by model.")
    refused: list[str] | None = Field(None, description="Versions refused at load, with the reason.")
    ignored: list[IgnoredFolder] | None = None
    error: str | None = None


class RefusedVersion(BaseModel):
    model: str
    version: int
    reason: str


class ReloadResponse(BaseModel):
    loaded: list[str] = Field(description="Versions loaded by this reload, as 'name version'.")
    refused: list[RefusedVersion] = Field(description="Versions on disk that failed their checks: not served.")
    removed: list[str] = Field(description="Versions no longer on disk: no longer served.")
    unchanged: int = Field(description="Versions that were serving and still are.")
    ignored: list[IgnoredFolder]
    error: str | None = Field(None, description="With 409: what was refused; the previous versions keep serving.")


ENCODE_EXAMPLES = {
    "ae": _example("Encode two digits with the autoencoder", {"model": "digits-ae", "inputs": [DIGIT_0, DIGIT_1]}),
    "vae": _example("Encode with the VAE (returns mu and logvar too)", {"model": "digits-vae", "inputs": [DIGIT_0]}),
}
RECONSTRUCT_EXAMPLES = {
    "rae": _example(
        "Reconstruct a digit with the regularised autoencoder", {"model": "digits-rae", "inputs": [DIGIT_0]}
    ),
    "vae": _example("Reconstruct with a chosen version", {"model": "digits-vae", "version": 1, "inputs": [DIGIT_1]}),
}
SAMPLE_EXAMPLES = {
    "vae": _example(
        "Three VAE samples, reproducible by seed", {"model": "digits-vae", "n": 3, "seed": 0, "temperature": 1.0}
    ),
    "gan": _example(
        "Two GAN samples at a lower temperature", {"model": "digits-gan", "n": 2, "seed": 7, "temperature": 0.5}
    ),
    "ae": _example("Samples from the autoencoder's fitted latent Gaussian", {"model": "digits-ae", "n": 2, "seed": 1}),
    "latents": _example(
        "Decode given latent vectors (16 values each for the default digits models)",
        {"model": "digits-vae", "latents": [[0.0] * 16, [0.5] * 16]},
    ),
}
ANOMALY_SCORE_EXAMPLES = {
    "vae": _example("Score a digit and a striped pattern", {"model": "digits-vae", "inputs": [DIGIT_0, NOISE]}),
    "ae-explain": _example(
        "Per-feature contributions from the autoencoder", {"model": "digits-ae", "inputs": [NOISE], "explain": True}
    ),
    "gan": _example("The GAN discriminator's score", {"model": "digits-gan", "inputs": [DIGIT_1]}),
}
