"""Shared fixtures. Service fixtures: the four kinds trained once per session on digits, loaded
into an ONNX and a TorchScript repository; helpers to copy and damage artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from artifact.graphs import Backend
from artifact.manifest import Manifest
from service.repository import ModelRepository

try:  # the machine is small and shared: one thread everywhere
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - the service tests need torch only for training
    torch = None

KINDS = ("ae", "rae", "vae", "gan")
# ae trains longer than the others: the round-trip test needs a model better than the mean row.
EPOCHS = {"ae": 30, "rae": 3, "vae": 3, "gan": 3}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-{ae,rae,vae,gan} version 1, and digits-ae version 2 (same graphs, newer manifest)."""
    from training.cli import main as train_main

    root = tmp_path_factory.mktemp("model_repository")
    runs = tmp_path_factory.mktemp("runs")
    for kind in KINDS:
        argv = ["train", kind, "--data", "digits", "--name", f"digits-{kind}", "--models", str(root)]
        argv += ["--epochs", str(EPOCHS[kind]), "--seed", "0", "--runs", str(runs), "--quiet"]
        assert train_main(argv) == 0, f"training digits-{kind} failed"
    _copy_version(root / "digits-ae" / "1", root / "digits-ae" / "2", version=2)
    return root


def _copy_version(src: Path, dst: Path, version: int | None = None, name: str | None = None) -> Path:
    """Copy an artifact folder, rewriting its manifest's version/name to match the new folder."""
    shutil.copytree(src, dst)
    manifest = Manifest.read(dst)
    update = {k: v for k, v in (("version", version), ("name", name)) if v is not None}
    if update:
        manifest.model_copy(update=update).write(dst)
    return dst


def _load_repository(root: Path, runtime: str = "onnx", max_rows: int = 10_000) -> ModelRepository:
    backend = Backend(runtime, "cpu", threads=1)
    backend.check()
    repository = ModelRepository(root, backend, max_rows=max_rows)
    repository.load_all()
    return repository


@pytest.fixture(scope="session")
def copy_model(models_dir: Path):
    """copy_model(name, dst_root, as_name=None, version=1) -> the copied artifact folder."""

    def copy(name: str, dst_root: Path, as_name: str | None = None, version: int = 1) -> Path:
        return _copy_version(models_dir / name / str(version), Path(dst_root) / (as_name or name) / str(version))

    return copy


@pytest.fixture(scope="session")
def load_repository():
    """load_repository(root, runtime="onnx", max_rows=10_000) -> a loaded ModelRepository."""
    return _load_repository


@pytest.fixture(scope="session")
def tamper():
    """tamper(path): change one byte of a file in place, keeping its size."""

    def flip(path: Path, offset: int = -10) -> None:
        data = bytearray(Path(path).read_bytes())
        data[offset] ^= 0xFF
        Path(path).write_bytes(bytes(data))

    return flip


@pytest.fixture(scope="session")
def onnx_repository(models_dir: Path) -> ModelRepository:
    return _load_repository(models_dir, "onnx")


@pytest.fixture(scope="session")
def torchscript_repository(models_dir: Path) -> ModelRepository:
    return _load_repository(models_dir, "torchscript")


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """(1797, 64) raw digits rows, pixel values 0-16: the data the session's models trained on."""
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


@pytest.fixture
def anyio_backend() -> str:
    """The async tests (pytest.mark.anyio) run on asyncio, as the service does."""
    return "asyncio"


@pytest.fixture
async def client(models_dir: Path, onnx_repository: ModelRepository):
    """An httpx client on the app in process, serving the session's ONNX repository without a key."""
    from service.app import create_app
    from service.settings import Settings
    from tests.live_server import client_for

    async with client_for(create_app(Settings(models=models_dir), onnx_repository)) as c:
        yield c
