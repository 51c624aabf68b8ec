"""Every kind ranks planted outliers above the inliers of a synthetic table (issue 15), through the
same path as a user: train with the defaults (a short step budget), export, score the ONNX graphs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.anomaly import score_ours


def planted(n: int, seed: int, share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Inliers on a curved 2-D surface in 8 dimensions with mild noise, on a mix of scales;
    outliers spread over the inliers' bounding box (off the surface, mostly inside the range)."""
    rng = np.random.default_rng(seed)
    n_out = int(round(share * n))
    z = rng.normal(size=(n - n_out, 2))
    basis = np.random.default_rng(99).normal(size=(4, 8))  # the same surface for every split
    features = np.column_stack([z, z[:, :1] ** 2, np.sin(z[:, 1:])])
    inliers = features @ basis + 0.05 * rng.normal(size=(n - n_out, 8))
    lo, hi = inliers.min(0), inliers.max(0)
    outliers = rng.uniform(lo, hi, size=(n_out, 8))
    scale = np.array([1.0, 10.0, 0.1, 1.0, 100.0, 1.0, 0.01, 5.0])  # raw units differ per column
    x = np.vstack([inliers, outliers]) * scale
    y = np.r_[np.zeros(n - n_out, int), np.ones(n_out, int)]
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order]


@pytest.mark.parametrize("kind", ["ae", "rae", "vae", "gan"])
def test_every_kind_ranks_planted_outliers_above_inliers(tmp_path, kind):
    x_train, _ = planted(600, seed=1)  # outliers among the training rows too, labels never used
    x_test, y_test = planted(400, seed=2)
    scores, _seconds, _threshold = score_ours(kind, x_train, x_test, 0, tmp_path, epochs=40)
    auc = roc_auc_score(y_test, scores)
    assert auc > 0.9, f"{kind}: ROC AUC {auc:.3f}"
