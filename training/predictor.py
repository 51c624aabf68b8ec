"""The one place where `latentserve evaluate` opens the served artifact: the predictor the service runs
(ONNX graphs + manifest, never the torch checkpoint), its graphs, and chunked calls over whole datasets.

It wraps the contract layer's `artifact.predictor.Predictor`, the class the service serves with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_ROWS = 4096  # rows per predictor call: bounded memory on large files


class ModelRefused(ValueError):
    """The artifact fails its checks (hashes, manifest, graphs); the message is the service's reason."""


def open_predictor(folder: Path, threads: int = 1) -> Any:
    """Verify, load and warm up the artifact in `folder` with ONNX Runtime on the CPU, as the service does."""
    from artifact.graphs import Backend
    from artifact.predictor import Predictor

    backend = Backend("onnx", "cpu", threads=threads)
    backend.check()
    predictor = Predictor(Path(folder), backend, max_rows=1_000_000)
    predictor.load()
    if predictor.state != "ready":
        raise ModelRefused(f"model {predictor.name} version {predictor.version} is refused: {predictor.reason}")
    return predictor


def graph(predictor: Any, role: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """The loaded ONNX session of one graph role ("encoder", "decoder", ...): model-space arrays in and out."""
    return lambda x: tuple(predictor.run_graph(role, x))


def raw_scores(predictor: Any, x: np.ndarray, explain: bool = False) -> Any:
    """AnomalyScores of all rows of `x`, computed CHUNK_ROWS at a time and joined."""
    parts = [predictor.anomaly_score(x[s : s + CHUNK_ROWS], explain=explain) for s in range(0, len(x), CHUNK_ROWS)]
    first = parts[0]
    contributions = None if first.contributions is None else np.concatenate([p.contributions for p in parts])
    return type(first)(
        scores=np.concatenate([p.scores for p in parts]),
        percentiles=np.concatenate([p.percentiles for p in parts]),
        is_anomaly=np.concatenate([p.is_anomaly for p in parts]),
        threshold=first.threshold,
        contributions=contributions,
    )
