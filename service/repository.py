"""The model repository: every `<name>/<version>/` under the models folder, as `ModelRuntime`s.

The newest version of a name is its default; older versions stay addressable. Folders
starting with '.' are exports in progress and are skipped. A model whose artifact fails
its checks is marked failed with the reason (logged, and shown by /models and /readyz);
the others keep serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from service.backends import Backend
from service.errors import InvalidInput, ModelFailed, ModelNotFound, ModelNotReady
from service.runtime import ModelRuntime
from training.manifest import list_versions, valid_name

log = logging.getLogger(__name__)


class ModelRepository:
    def __init__(self, root: Path, backend: Backend, max_rows: int = 10_000) -> None:
        self.root = Path(root)
        self.backend = backend
        self.models: dict[str, dict[int, ModelRuntime]] = {}
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if not valid_name(folder.name):
                log.warning("skipping %s: not a valid model name", folder)
                continue
            versions = list_versions(self.root, folder.name)
            if versions:
                self.models[folder.name] = {v: ModelRuntime(folder / str(v), backend, max_rows) for v in versions}
        self.loaded = False  # every model has finished loading (ready or failed)
        self._load_lock = threading.Lock()

    def runtimes(self) -> list[ModelRuntime]:
        """Default (newest) versions first, so that they become usable soonest."""
        newest = [vs[max(vs)] for vs in self.models.values()]
        older = [m for vs in self.models.values() for v, m in sorted(vs.items(), reverse=True) if v != max(vs)]
        return newest + older

    def load_all(self) -> None:
        with self._load_lock:  # a second caller waits, then finds everything loaded
            for model in self.runtimes():
                if model.state == "loading":
                    model.load()
            self.loaded = True

    def get(self, name: str | None = None, version: int | None = None) -> ModelRuntime:
        """The ready model asked for; errors list what is available."""
        if name is None:
            if len(self.models) != 1:
                if not self.models:
                    raise ModelNotFound(f"no models are loaded (the repository {self.root} is empty)")
                raise InvalidInput(f'several models are loaded: name one with "model", one of {self.available()}')
            name = next(iter(self.models))
        versions = self.models.get(name)
        if versions is None:
            raise ModelNotFound(f"no model named {_short(name)}; available: {self.available()}")
        v = max(versions) if version is None else version
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
        """Why the service is not ready: empty repository, models loading, models refused."""
        if not self.models:
            return [f"no models in {self.root}"]
        out = []
        for m in self.runtimes():
            if m.state == "loading":
                out.append(f"{m.name} version {m.version} is loading")
            elif m.state == "failed":
                out.append(f"{m.name} version {m.version} was refused: {m.reason}")
        return out

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is not None and name not in self.models:
            raise ModelNotFound(f"no model named {_short(name)}; available: {self.available()}")
        names = [name] if name is not None else list(self.models)
        return [describe_model(n, self.models[n]) for n in names]


def describe_model(name: str, versions: dict[int, ModelRuntime]) -> dict[str, Any]:
    return {
        "name": name,
        "default_version": max(versions),
        "versions": [describe_version(versions[v]) for v in sorted(versions, reverse=True)],
    }


def describe_version(model: ModelRuntime) -> dict[str, Any]:
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


def _listed(versions: dict[int, Any]) -> str:
    return ", ".join(str(v) for v in sorted(versions))


def _short(name: str) -> str:
    # Echo client-supplied names back bounded: a 1 MB "model" must not come back in the error.
    return repr(name if len(name) <= 80 else name[:80] + "…")
