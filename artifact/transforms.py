"""Preprocessing: raw feature units <-> the model's space, by the manifest's `Preprocessing`.

x_model = (x_raw - offset) / scale and back. Nothing is clipped here: a score must see how far
a row lies outside the training range (artifact/scores.py adds the out-of-range term for models
whose graphs only accept [0, 1]); `clip_to_unit` is what those graphs are fed.
"""

from __future__ import annotations

import numpy as np

from artifact.manifest import Preprocessing


def to_model_space(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(B, F) raw feature values -> (B, F) model-space values (float32, not clipped)."""
    offset = np.asarray(prep.offset, dtype=np.float32)
    scale = np.asarray(prep.scale, dtype=np.float32)
    return (x.astype(np.float32, copy=False) - offset) / scale


def to_graph_inputs(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(B, F) raw values -> what the graphs take: model space, clipped to [0, 1] when `prep.clip`
    (min-max and image models; training, validation and serving feed the graphs alike)."""
    xm = to_model_space(x, prep)
    return clip_to_unit(xm) if prep.clip else xm


def to_raw_space(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(B, F) model outputs -> (B, F) raw feature values."""
    offset = np.asarray(prep.offset, dtype=np.float32)
    scale = np.asarray(prep.scale, dtype=np.float32)
    return x * scale + offset


def clip_to_unit(x: np.ndarray) -> np.ndarray:
    """The rows clipped to [0, 1]: what a min-max or image model's graphs take (B, F) float32."""
    return np.clip(x, 0.0, 1.0)


def range_excess(x: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """(B, F) squared distance of each model-space value outside [0, 1] (0 inside), given the rows
    and their `clip_to_unit`: the out-of-range term of the scores of models whose graphs see clipped rows."""
    return (x - clipped).astype(np.float64) ** 2
