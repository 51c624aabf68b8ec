"""Training on CUDA (issue 9 item 8): every kind and default trains, folds on the model's device and
exports; skipped where torch sees no GPU. Run on a GPU machine with `pytest tests/test_cuda_training.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from artifact.manifest import Manifest
from training import pipeline
from training.config import TrainConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# digits defaults (image range) and the tabular defaults that fold σ (ae/rae joint score, vae feature noise)
CASES = [(kind, "digits") for kind in ("ae", "rae", "vae", "gan")] + [(kind, "table") for kind in ("ae", "rae", "vae")]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1500, 10)) @ rng.normal(size=(10, 10)) * 3 + 7).astype(np.float32)
    path = tmp_path_factory.mktemp("table") / "table.npy"
    np.save(path, x)
    return str(path)


@pytest.mark.parametrize(("kind", "data"), CASES)
def test_cuda_training_exports_like_cpu(tmp_path, table, kind, data):
    results = {}
    for device in ("cuda", "cpu"):
        cfg = TrainConfig(kind=kind, name=f"{kind}-{device}", data=table if data == "table" else "digits",
                          epochs=3, device=device, models=str(tmp_path / "models"), runs=str(tmp_path / "runs"))  # fmt: skip
        results[device] = pipeline.run(cfg, progress=False)
    gpu, cpu = (Manifest.read(results[d].artifact) for d in ("cuda", "cpu"))
    assert gpu.training["device"] == "cuda"
    # the same noise streams on both devices: the two fits differ only by kernel rounding
    np.testing.assert_allclose(gpu.preprocessing.scale, cpu.preprocessing.scale, rtol=1e-2)
    key = "val_loss" if kind != "gan" else "val_-log D(x)"
    assert results["cuda"].metrics[key] == pytest.approx(results["cpu"].metrics[key], rel=1e-2)
