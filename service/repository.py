"""The model repository: every `<name>/<version>/` under the models folder, as `Predictor`s.

The newest ready version of a name is its default; older versions stay addressable. Entries
starting with '.' are exports in progress and are skipped; folders that cannot be models
(an invalid name, a version folder not named by a positive integer) are listed as ignored.
A version whose artifact fails its checks is refused with the reason (logged, and shown by
/models and /readyz); the others keep serving.

`reload()` builds the next state aside (versions already serving are kept as they are, new
and previously refused ones are loaded and warmed) and then swaps one reference, so that a
request sees either the old state or the new one, never a half-loaded model. The published
dicts are never mutated after the swap.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifact.graphs import Backend
from artifact.manifest import valid_name
from artifact.predictor import Predictor
from service.errors import InvalidInput, ModelFailed, ModelNotFound, ModelNotReady

log = logging.getLogger(__name__)

Versions = dict[int, Predictor]


@dataclass(frozen=True)
class State:
    """One published view of the repository: replaced whole by a reload, never changed in place."""

    models: dict[str, Versions]
    ignored: list[dict[str, str]]  # {"path", "reason"}: folders that cannot be models


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)  # "name version"
    refused: list[dict[str, Any]] = field(default_factory=list)  # {"model", "version", "reason"}
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    ignored: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None  # the repository could not be read at all: nothing changed

    def summary(self) -> str:
        if self.error:
            return self.error
        refused = [f"{r['model']} version {r['version']} ({r['reason']})" for r in self.refused]
        parts = [
            f"loaded {', '.join(self.loaded) or 'nothing new'}",
            f"refused {'; '.join(refused)}" if refused else "",
            f"removed {', '.join(self.removed)}" if self.removed else "",
            f"{self.unchanged} unchanged",
        ]
        return "; ".join(p for p in parts if p)


class ModelRepository:
    def __init__(self, root: Path, backend: Backend, max_rows: int = 10_000) -> None:
        self.root = Path(root)
        self.backend = backend
        self.max_rows = max_rows
        self.loaded = False  # the first load has finished (every version ready or failed)
        self._load_lock = threading.Lock()  # one load or reload at a time
        self._state = self._scan(State({}, []))
        # Versions refused by the first load keep /readyz at 503 until fixed (or removed) and
        # reloaded. A reload never takes a serving instance out of rotation: what it refuses is
        # reported (response, /models, /readyz body), and the previous versions keep serving.
        self._blocking: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any) -> ModelRepository:
        """The repository a `Settings` names, on its runtime and device (checked: BackendUnavailable
        when they cannot run), not loaded yet."""
        backend = Backend(settings.runtime, settings.device, settings.threads)
        backend.check()
        return cls(settings.models, backend, settings.max_rows)

    @property
    def models(self) -> dict[str, Versions]:
        return self._state.models

    @property
    def ignored(self) -> list[dict[str, str]]:
        return self._state.ignored

    # ----- loading ---------------------------------------------------------------------------
    def _scan(self, current: State) -> State:
        """The next state: kept runtimes for versions serving now, fresh ones for the rest."""
        models: dict[str, Versions] = {}
        ignored: list[dict[str, str]] = []

        def ignore(path: Path, reason: str) -> None:
            ignored.append({"path": str(path.relative_to(self.root)), "reason": reason})
            log.warning("ignoring %s: %s", path, reason)

        root = self.root.resolve()
        for folder in _entries(self.root):
            if not valid_name(folder.name):
                ignore(folder, "not a valid model name (letters, digits, '_', '.', '-'; at most 64 characters)")
                continue
            if not folder.resolve().is_relative_to(root):
                ignore(folder, "a link that leads outside the model repository")
                continue
            try:
                subs = _entries(folder)
            except OSError as e:
                ignore(folder, f"cannot be read ({e.strerror})")
                continue
            versions: Versions = {}
            for sub in subs:
                if not _is_version(sub.name):
                    ignore(sub, "version folders are named by a positive integer without leading zeros")
                    continue
                v = int(sub.name)
                kept = current.models.get(folder.name, {}).get(v)
                ready = kept is not None and kept.state == "ready"
                versions[v] = kept if ready else Predictor(sub, self.backend, self.max_rows)  # type: ignore[assignment]
            if versions:
                models[folder.name] = dict(sorted(versions.items()))
            else:
                ignore(folder, "holds no version folder (<name>/<version>/manifest.json)")
        return State(models, ignored)

    def runtimes(self) -> list[Predictor]:
        """Default (newest) versions first, so that they become usable soonest."""
        models = self.models
        newest = [vs[max(vs)] for vs in models.values()]
        older = [m for vs in models.values() for v, m in sorted(vs.items(), reverse=True) if v != max(vs)]
        return newest + older

    def load_all(self) -> None:
        with self._load_lock:  # a second caller waits, then finds everything loaded
            self._load_first()

    def _load_first(self) -> None:
        if self.loaded:
            return
        for model in self.runtimes():
            if model.state == "loading":
                model.load()
        self._blocking = frozenset((m.name, m.version) for m in self.runtimes() if m.state == "failed")
        self.loaded = True

    def reload(self) -> ReloadReport:
        """Load new (and previously refused) versions aside, drop removed ones, then swap."""
        with self._load_lock:
            self._load_first()
            current = self._state
            try:
                state = self._scan(current)
            except OSError as e:  # the repository folder itself is gone or unreadable
                error = f"cannot read the model repository {self.root} ({e.strerror}); nothing changed"
                log.error("reload: %s", error)
                return ReloadReport(unchanged=sum(len(vs) for vs in current.models.values()), error=error)
            report = ReloadReport(ignored=state.ignored)
            for name, versions in state.models.items():
                for v, model in sorted(versions.items(), reverse=True):
                    if model.state == "loading":
                        model.load()
                        if model.state == "ready":
                            report.loaded.append(f"{name} {v}")
                    else:
                        report.unchanged += 1
                    if model.state == "failed":
                        report.refused.append({"model": name, "version": v, "reason": model.reason})
            report.removed = [
                f"{name} {v}" for name, vs in current.models.items() for v in vs if v not in state.models.get(name, {})
            ]
            self._state = state  # the swap: one reference
            self._blocking = frozenset(
                (n, v)
                for n, v in self._blocking
                if v in state.models.get(n, {}) and state.models[n][v].state == "failed"
            )
        (log.error if report.refused else log.info)("reload: %s", report.summary())
        return report

    # ----- serving ---------------------------------------------------------------------------
    def get(self, name: str | None = None, version: int | None = None) -> Predictor:
        """The ready model asked for; errors list what is available."""
        models = self.models  # one state for the whole lookup
        if name is None:
            if len(models) != 1:
                if not models:
                    raise ModelNotFound(f"no models are loaded (the repository {self.root} is empty)")
                raise InvalidInput(f'several models are loaded: name one with "model", one of {self.available()}')
            name = next(iter(models))
        versions = models.get(name)
        if versions is None:
            raise ModelNotFound(f"no model named {_short(name)}; available: {self.available()}")
        v = default_version(versions) if version is None else version
        model = versions.get(v)
        if model is None:
            raise ModelNotFound(f"model {name!r} has no version {v}; available versions: {_listed(versions)}")
        if model.state == "loading":
            raise ModelNotReady(f"model {name!r} version {v} is still loading; retry in a moment")
        if model.state == "failed":
            raise ModelFailed(f"model {name!r} version {v} was refused at load: {model.reason}")
        return model

    @property
    def loading(self) -> bool:
        return any(m.state == "loading" for vs in self.models.values() for m in vs.values())

    def available(self) -> str:
        return "; ".join(f"{n} (versions {_listed(vs)})" for n, vs in self.models.items()) or "none"

    def problems(self) -> list[str]:
        """Why the service is not ready: empty repository, models loading, models refused at start."""
        if not self.models:
            return [f"no models in {self.root}"]
        out = []
        for m in self.runtimes():
            if m.state == "loading":
                out.append(f"{m.name} version {m.version} is loading")
            elif m.state == "failed" and (m.name, m.version) in self._blocking:
                out.append(f"{m.name} version {m.version} was refused: {m.reason}")
        return out

    def refused(self) -> list[str]:
        """Every version refused at load (at start or by a reload), with its reason."""
        return [f"{m.name} version {m.version}: {m.reason}" for m in self.runtimes() if m.state == "failed"]

    def serving(self) -> dict[str, list[int]]:
        """The ready versions of each model."""
        return {n: [v for v, m in vs.items() if m.state == "ready"] for n, vs in self.models.items()}

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        models = self.models
        if name is not None and name not in models:
            raise ModelNotFound(f"no model named {_short(name)}; available: {self.available()}")
        names = [name] if name is not None else list(models)
        return [describe_model(n, models[n]) for n in names]


def default_version(versions: Versions) -> int:
    """The newest ready version; the newest of all while none is ready (its error says why)."""
    ready = [v for v, m in versions.items() if m.state == "ready"]
    return max(ready or versions)


def describe_model(name: str, versions: Versions) -> dict[str, Any]:
    return {
        "name": name,
        "default_version": default_version(versions),
        "versions": [describe_version(versions[v]) for v in sorted(versions, reverse=True)],
    }


def describe_version(model: Predictor) -> dict[str, Any]:
    """The public part of a manifest: what a client needs, not file hashes or training paths."""
    out: dict[str, Any] = {"version": model.version, "state": model.state}
    if model.reason:
        out["reason"] = model.reason
    m = model.manifest
    if m is None:
        return out
    out.update(
        kind=m.kind,
        capabilities=list(m.capabilities),
        n_features=m.n_features,
        feature_names=m.feature_names,
        image_shape=m.image_shape,
        latent_dim=m.latent_dim,
        likelihood=m.likelihood,
        preprocessing=m.preprocessing.method,
        anomaly_score={
            "method": m.calibration.method,
            "description": m.calibration.description,
            "threshold": m.calibration.threshold,
            "contamination": m.calibration.contamination,
            "calibration_rows": m.calibration.n_rows,
            "ensemble_members": len(m.ensemble.members) if m.ensemble is not None else 1,
            # The calibration scores at percentiles 0, 1, ..., 100: the distribution /ui draws behind a histogram.
            "quantiles": _percentile_scores(m.calibration.levels, m.calibration.quantiles),
        },
        metrics=m.metrics,
        # Row counts and the data's name; never its folder, which is the trainer's business.
        data={
            k: (Path(str(v)).name if k == "source" else v)
            for k, v in m.data.items()
            if k == "source" or isinstance(v, (int, float))
        },
        created_at=m.created_at,
        runtime={**model.backend.describe(), "provider": model.provider or model.backend.provider},
    )
    return out


def _percentile_scores(levels: list[float], quantiles: list[float]) -> list[float]:
    return [float(q) for q in np.interp(np.linspace(0.0, 1.0, 101), levels, quantiles)]


def _is_version(name: str) -> bool:
    return name.isascii() and name.isdigit() and not name.startswith("0")


def _entries(folder: Path) -> list[Path]:
    """Sub-folders worth a look: not hidden (exports in progress), not plain files such as a README."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.is_dir()]


def _listed(versions: dict[int, Any]) -> str:
    return ", ".join(str(v) for v in sorted(versions))


def _short(name: str) -> str:
    # Echo client-supplied names back bounded: a 1 MB "model" must not come back in the error.
    return repr(name if len(name) <= 80 else name[:80] + "…")
