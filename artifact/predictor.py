"""The predictor: one artifact folder (name, version), loaded, verified and warmed; NumPy in and out.

Clients speak raw feature units; the graphs work in model space. Every method maps raw inputs
with `to_model_space`, runs the graphs, and maps outputs back with `to_raw_space`; the scores come
from `artifact.scores`, which the export's calibration runs through this same class, so that a
served score and its percentile mean the same thing. Transports (HTTP, the Open Inference
Protocol, Ray Serve) and the evaluation command all call this one class; it knows nothing of them.
Its methods are safe to call from several threads at once (ONNX Runtime sessions are).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from artifact.errors import ArtifactError, InvalidInput, NotSupported
from artifact.graphs import Backend, Graph
from artifact.manifest import KIND_GRAPHS, MANIFEST_FILE, Calibration, Ensemble, Manifest, Preprocessing
from artifact.scores import anomaly_scores, gan_search_latents, percentiles
from artifact.transforms import to_graph_inputs, to_model_space, to_raw_space

log = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed"]
Rows = np.ndarray | Sequence[Sequence[float]]
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is ~100 kB; anything far larger is not one


@dataclass(frozen=True)
class AnomalyScores:
    scores: np.ndarray  # (B,) higher = more anomalous
    percentiles: np.ndarray  # (B,) 0-100, rank among the calibration rows
    is_anomaly: np.ndarray  # (B,) bool, score > threshold
    threshold: float
    contributions: np.ndarray | None  # (B, F) per-feature terms in model space, when explained


def as_matrix(values: Rows, width: int, what: str, max_rows: int, unit: str = "values") -> np.ndarray:
    """Check and convert rows to a (B, width) float32 array; errors name the offending row/cell."""
    n = len(values)
    if n == 0:
        raise InvalidInput(f"{what} is empty: expected at least one row of {width} {unit}")
    if n > max_rows:
        raise InvalidInput(f"{what} has {n} rows, the limit is {max_rows} rows per request")
    try:
        with np.errstate(over="ignore"):  # out-of-range values become inf, reported below
            x = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        x = None
    if x is None or x.ndim != 2 or x.shape[1] != width:
        for i, row in enumerate(values):
            size = len(row) if isinstance(row, (Sequence, np.ndarray)) and not isinstance(row, str) else None
            if size != width:
                got = f"{size} {unit}" if size is not None else f"a {type(row).__name__}"
                raise InvalidInput(f"row {i} of {what} has {got}, expected {width} {unit}")
        raise InvalidInput(f"{what} must be a list of rows of {width} numbers")
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        value = values[i][j]
        value = value.item() if isinstance(value, np.generic) else value  # nan, not np.float32(nan)
        raise InvalidInput(f"{what}[{i}][{j}] is not a finite float32 number (got {value!r})")
    return x


def finite(out: np.ndarray, what: str, source: str) -> np.ndarray:
    """JSON has no NaN or Infinity: outputs that overflow float32 are the caller's input error, named."""
    if not np.isfinite(out).all():
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(out))[:, 0]})
        listed = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        raise InvalidInput(
            f"the {what} of row(s) {listed} overflow float32: the {source} are too far outside "
            f"the range the model was trained on"
        )
    return out


class Predictor:
    """One artifact folder: `load()` verifies, opens and warms its graphs; then it answers.

    `manifest`: use this manifest instead of the folder's manifest.json (the export calibrates a
    folder whose manifest is not written yet); `open()` is the one-call form that raises."""

    def __init__(
        self, folder: Path, backend: Backend, max_rows: int = 10_000, manifest: Manifest | None = None
    ) -> None:
        self.folder = Path(folder)
        self.name = manifest.name if manifest is not None else self.folder.parent.name
        self.version = manifest.version if manifest is not None else int(self.folder.name)
        self.backend = backend
        self.max_rows = max_rows
        self.state: State = "loading"
        self.reason: str | None = None  # why it failed, when it did
        self._given = manifest
        self.manifest: Manifest | None = None
        self._graphs: dict[str, Graph] = {}
        self._search_bank: Sequence[np.ndarray] | None = None  # G(fixed latents), gan-latent-search
        self._members: list[Predictor] = []  # an ensemble's members after the first (which is this one)
        # Set by load(): the manifest's preprocessing and calibration as arrays (see _as_arrays).
        self._prep: Preprocessing
        self._calibration: Calibration

    @classmethod
    def open(
        cls, folder: Path, runtime: str = "onnx", device: str = "cpu", threads: int = 1, max_rows: int = 10_000
    ) -> Predictor:
        """Load an artifact folder, ready to answer; ArtifactError with the reason when it is refused."""
        backend = Backend(runtime, device, threads)
        backend.check()
        predictor = cls(Path(folder), backend, max_rows)
        predictor.load()
        if predictor.state != "ready":
            raise ArtifactError(f"{folder} cannot be served: {predictor.reason}")
        return predictor

    # ----- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm up, or record why not (state "failed", `reason`); never raises."""
        start = time.perf_counter()
        try:
            self.manifest = self._given or self._read_manifest()
            self._prep, self._calibration = _as_arrays(self.manifest)
            self._verify_hashes()
            for role in KIND_GRAPHS[self.manifest.kind]:
                spec = self.manifest.graph(role, self.backend.runtime)
                try:
                    self._graphs[role] = self.backend.open(self.folder / spec.file, spec)
                except Exception as e:  # the reason is shown to clients: no server paths in it
                    why = str(e).replace(f"{self.folder}{os.sep}", "")
                    raise ValueError(f"{role} graph file {spec.file} cannot be loaded: {why}") from e
            self._warm_up()
            if self.manifest.calibration.method == "gan-latent-search":  # decoded once, reused by every score
                self._search_bank = self._graphs["generator"](gan_search_latents(self.manifest.latent_dim))
            if self.manifest.ensemble is not None:
                self._members = [self._member(i) for i in range(1, len(self.manifest.ensemble.members))]
        except Exception as e:  # any broken artifact: refuse this model, keep the others
            self.state, self.reason = "failed", str(e) or type(e).__name__
            self._graphs, self._members = {}, []
            log.error("REFUSED model %s version %s (%s): %s", self.name, self.version, self.folder, self.reason)
            return
        self.state = "ready"
        log.info(
            "loaded model %s version %s (%s, %s on %s) in %.0f ms",
            self.name,
            self.version,
            self.manifest.kind,
            self.backend.runtime,
            self.provider,
            1000 * (time.perf_counter() - start),
        )

    def _member(self, i: int) -> Predictor:
        """Ensemble member i (> 0), loaded from this folder as a model of its own (never served alone)."""
        assert self.manifest is not None
        member = Predictor(self.folder, self.backend, self.max_rows, manifest=self.manifest.member(i))
        member.load()
        if member.state != "ready":
            raise ValueError(f"ensemble member {i}: {member.reason}")
        return member

    def _inside(self, path: Path, what: str) -> None:
        """Artifacts load only from the repository: refuse links that lead out of it."""
        root = self.folder.parent.parent.resolve()
        if not path.resolve().is_relative_to(root):
            raise ValueError(f"{what} is a link that leads outside the model repository")

    def _read_manifest(self) -> Manifest:
        self._inside(self.folder, "the version folder")
        path = self.folder / MANIFEST_FILE
        self._inside(path, MANIFEST_FILE)
        if not path.is_file():  # missing, a folder, or a FIFO that would block the loader
            raise ValueError(f"{MANIFEST_FILE} is missing (or not a regular file)")
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{MANIFEST_FILE} is {size} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})")
        try:
            manifest = Manifest.model_validate_json(path.read_bytes())
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"manifest.json is invalid: {where + ': ' if where else ''}{message}") from None
        if (manifest.name, manifest.version) != (self.name, self.version):
            raise ValueError(
                f"manifest.json describes {manifest.name} version {manifest.version}, "
                f"but sits in the folder of {self.name} version {self.version}"
            )
        return manifest

    def _verify_hashes(self) -> None:
        """The served format must be present and intact; other formats, when present, too."""
        assert self.manifest is not None
        served = self.backend.runtime
        for role in KIND_GRAPHS[self.manifest.kind]:
            if served not in self.manifest.graphs.get(role, {}):  # type: ignore[call-overload]
                raise ValueError(f"the manifest has no {served} {role} graph")
        for by_format in self.manifest.graphs.values():
            for spec in by_format.values():
                self._inside(self.folder / spec.file, spec.file)
        others = tuple(
            fmt
            for fmt in ("onnx", "torchscript")
            if fmt != served
            and all((self.folder / s[fmt].file).is_file() for s in self.manifest.graphs.values() if fmt in s)
        )
        self.manifest.verify_files(self.folder, (served, *others))

    def _warm_up(self) -> None:
        """Run every graph at two batch sizes and check the output widths against the manifest."""
        m = self.manifest
        assert m is not None
        widths = {
            "encoder": m.n_features,
            "discriminator": m.n_features,
            "decoder": m.latent_dim,
            "generator": m.latent_dim,
        }
        for role, graph in self._graphs.items():
            spec = m.graph(role, self.backend.runtime)
            for batch in (1, 7):
                outs = graph(np.zeros((batch, widths[role]), np.float32))
                if len(outs) != len(spec.outputs):
                    raise ValueError(f"{spec.file} has {len(outs)} outputs, the manifest says {len(spec.outputs)}")
                for out, t in zip(outs, spec.outputs, strict=True):
                    want = [batch if d == "batch" else d for d in t.shape]
                    if list(out.shape) != want:
                        raise ValueError(
                            f"{spec.file} output {t.name} has shape {list(out.shape)}, the manifest says {want}"
                        )

    @property
    def provider(self) -> str:
        return next(iter(self._graphs.values())).provider if self._graphs else ""

    # ----- endpoints -------------------------------------------------------------------------
    def encode(self, x: Rows) -> dict[str, np.ndarray]:
        """Raw rows (B, F) -> {"latents": (B, L)}; a vae adds "mu" and "logvar" (latents = mu)."""
        m = self._require("encode")
        xm = self._graph_inputs(x)
        if m.kind == "vae":
            mu, logvar = self._graphs["encoder"](xm)
            return {"latents": finite(mu, "latents", "inputs"), "mu": mu, "logvar": finite(logvar, "logvar", "inputs")}
        return {"latents": finite(self._graphs["encoder"](xm)[0], "latents", "inputs")}

    def reconstruct(self, x: Rows) -> np.ndarray:
        """Raw rows (B, F) -> reconstructions (B, F) in the same raw units."""
        self._require("reconstruct")
        x_hat, *_ = self._reconstruct_model_space(self._graph_inputs(x))
        return finite(to_raw_space(x_hat, self._prep), "reconstructions", "inputs")

    def sample(
        self,
        n: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        latents: Rows | None = None,
    ) -> np.ndarray:
        """Decode `latents`, or n draws: N(0, T²I) for vae/gan, the fitted latent Gaussian for ae/rae."""
        m = self._require("sample")
        z = self.sample_latents(n, seed, temperature, latents)
        role = "generator" if m.kind == "gan" else "decoder"
        x_hat = self._graphs[role](z)[0]
        return finite(to_raw_space(x_hat, self._prep), "samples", "latents" if latents is not None else "draws")

    def sample_latents(
        self,
        n: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        latents: Rows | None = None,
    ) -> np.ndarray:
        """The (B, L) latents that `sample` decodes: `latents` checked, or n draws."""
        m = self._require("sample")
        if latents is None:
            return self.draw_latents(n, seed, temperature)
        z = as_matrix(latents, m.latent_dim, "latents", self.max_rows)
        if n is not None and n != len(z):
            raise InvalidInput(f"n is {n} but latents has {len(z)} rows; give one or make them agree")
        return z

    def draw_latents(self, n: int | None, seed: int | None, temperature: float = 1.0) -> np.ndarray:
        m = self._require("sample")
        if n is None:
            raise InvalidInput("n is required when no latents are given: how many samples to draw")
        if not 1 <= n <= self.max_rows:
            raise InvalidInput(f"n must be between 1 and {self.max_rows}, got {n}")
        if not (np.isfinite(temperature) and temperature >= 0):
            raise InvalidInput(f"temperature must be a finite number >= 0, got {temperature}")
        # NumPy's generator, not torch's: both backends must draw the same z from one seed.
        eps = np.random.default_rng(seed).standard_normal((n, m.latent_dim))  # (n, L)
        if m.kind in ("vae", "gan"):
            z = temperature * eps
        elif m.latent_prior is None:
            raise NotSupported(f"model {self.name!r} has no latent prior in its manifest: pass latents to decode")
        else:
            mean = np.asarray(m.latent_prior.mean)
            chol = np.asarray(m.latent_prior.cholesky)  # (L, L) lower-triangular
            z = mean + temperature * eps @ chol.T
        return z.astype(np.float32)

    def anomaly_score(self, x: Rows, explain: bool = False) -> AnomalyScores:
        """Per-row anomaly scores, their calibration percentiles and the threshold decision."""
        m = self._require("anomaly-score")
        if explain:
            self._explainable(m)
        scores, contributions = self.scores(x)
        threshold = m.calibration.threshold
        return AnomalyScores(
            scores=finite(scores, "anomaly scores", "inputs"),
            percentiles=percentiles(scores, self._calibration),
            is_anomaly=scores > threshold,
            threshold=threshold,
            contributions=finite(contributions, "contributions", "inputs")
            if explain and contributions is not None
            else None,
        )

    def scores(self, x: Rows) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw rows -> (scores (B,), per-feature contributions (B, F) or None), by the method the
        manifest's calibration names, without the calibration (the export calibrates with this)."""
        m = self._require("anomaly-score")
        xm = self._model_space(x)
        scores, contributions = anomaly_scores(
            m.calibration.method, self._score_graph, xm, m.latent_dim, m.latent_prior, m.preprocessing.clip
        )
        if m.ensemble is None:
            return scores, contributions
        return self._ensemble_scores(m.ensemble, x, scores, contributions)

    def _ensemble_scores(
        self, ensemble: Ensemble, x: Rows, first: np.ndarray, first_terms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mean over the members of their z-normalised scores (manifest.Ensemble); contributions:
        the mean of the members' per-feature terms, each divided by its member's score_std."""
        spec = ensemble.members[0]
        total = (first.astype(np.float64) - spec.score_mean) / spec.score_std
        terms = None if first_terms is None else first_terms / spec.score_std
        for member, spec in zip(self._members, ensemble.members[1:], strict=True):
            s, t = member.scores(x)
            total += (s - spec.score_mean) / spec.score_std
            if terms is not None and t is not None:
                terms = terms + t / spec.score_std
        n = len(ensemble.members)
        return total / n, None if terms is None else terms / n

    def clipped(self, x: np.ndarray) -> np.ndarray | None:
        """(B,) how many features of each raw row encode and reconstruct clip to the training range
        ([0, 1] in model space, min-max and image models), or None when nothing was clipped."""
        if not self._prep.clip:
            return None
        # Compared in raw units against the training range (offset .. offset + scale): no conversion.
        lo, hi = self._prep.offset, self._prep.offset + self._prep.scale
        counts = ((x < lo) | (x > hi)).sum(axis=1)
        return counts if counts.any() else None

    def run_graph(self, role: str, x: np.ndarray) -> Sequence[np.ndarray]:
        """One graph on model-space input (for metrics that need the raw graphs, e.g. an IWAE bound)."""
        self._require_ready()
        return self._graphs[role](np.ascontiguousarray(x, dtype=np.float32))

    def inputs(self, x: Rows, capability: str, explain: bool = False) -> np.ndarray:
        """Raw rows checked for `capability` (encode, reconstruct, anomaly-score): (B, F) float32.

        The checks those methods make first, in their order: rows can be checked before they
        join a batch (service/batching.py), so that a batch never holds a bad row.
        """
        m = self._require(capability)
        if explain:
            self._explainable(m)
        return as_matrix(x, m.n_features, "inputs", self.max_rows, "features")

    # ----- helpers ---------------------------------------------------------------------------
    def _require_ready(self) -> Manifest:
        m = self.manifest
        if m is None or self.state != "ready":
            raise RuntimeError(f"model {self.name} version {self.version} is {self.state}, not ready")
        return m

    def _require(self, capability: str) -> Manifest:
        m = self._require_ready()
        if capability not in m.capabilities:
            raise NotSupported(
                f"model {self.name!r} is a {m.kind}, which supports {', '.join(m.capabilities)}; not {capability}"
            )
        return m

    def _explainable(self, m: Manifest) -> None:
        if m.calibration.method == "neg-log-discriminator":
            raise NotSupported(
                f"model {self.name!r} is a gan scored by its discriminator, which has no per-feature "
                f"contributions; explain works for ae, rae, vae and latent-search gan models"
            )

    def _score_graph(self, role: str, x: np.ndarray) -> Sequence[np.ndarray]:
        """Graph runner for `anomaly_scores`. Its only generator call decodes the fixed latent search
        bank (gan-latent-search), the same every time: decoded once at load, then reused."""
        if role == "generator" and self._search_bank is not None:
            return self._search_bank
        return self._graphs[role](x)

    def _graph_inputs(self, x: Rows) -> np.ndarray:
        """What encoders take: raw rows checked, in model space, clipped to [0, 1] for min-max and image models."""
        return to_graph_inputs(
            as_matrix(x, self._require_ready().n_features, "inputs", self.max_rows, "features"), self._prep
        )

    def _model_space(self, x: Rows) -> np.ndarray:
        m = self.manifest
        assert m is not None
        return to_model_space(as_matrix(x, m.n_features, "inputs", self.max_rows, "features"), self._prep)

    def _reconstruct_model_space(self, xm: np.ndarray) -> tuple[np.ndarray, ...]:
        """(x_hat,) for ae/rae; (x_hat, mu, logvar) for vae, decoding the posterior mean."""
        if self.manifest is not None and self.manifest.kind == "vae":
            mu, logvar = self._graphs["encoder"](xm)
            return self._graphs["decoder"](mu)[0], mu, logvar
        z = self._graphs["encoder"](xm)[0]
        return (self._graphs["decoder"](z)[0],)


def _as_arrays(m: Manifest) -> tuple[Preprocessing, Calibration]:
    """The manifest's preprocessing and calibration with NumPy arrays in place of their lists.

    `to_model_space` and `percentiles` convert those lists on every call (tens of µs for the
    1001 calibration quantiles); given arrays, the conversion is free. Same values, same results.
    """
    p, c = m.preprocessing, m.calibration
    prep = Preprocessing.model_construct(
        **{**dict(p), "offset": np.asarray(p.offset, np.float32), "scale": np.asarray(p.scale, np.float32)}
    )
    calibration = Calibration.model_construct(
        **{**dict(c), "levels": np.asarray(c.levels), "quantiles": np.asarray(c.quantiles)}
    )
    return prep, calibration
