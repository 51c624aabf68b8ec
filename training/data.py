"""Data sources (digits, CSV, .npy, .npz), validation, the train/validation split and the
preprocessing fitted on training rows only. Every problem is a `DataError` naming it."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.manifest import Preprocessing


class DataError(ValueError):
    """Unusable data; the message says what was expected and what was found."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, F) float32, raw feature values
    source: str
    feature_names: list[str] | None = None
    image_shape: tuple[int, int] | None = None  # set for image data (digits)
    value_range: tuple[float, float] | None = None  # known range of image pixels

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None


def load(source: str) -> Dataset:
    """`digits` (scikit-learn's bundled 8×8 digits) or a path to a .csv, .npy or .npz file."""
    if source == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().data.astype(np.float32)  # (1797, 64), pixels 0..16
        return _checked(Dataset(x, "digits", image_shape=(8, 8), value_range=(0.0, 16.0)))
    path = Path(source)
    if not path.exists():
        raise DataError(f"data file {source} does not exist (expected 'digits' or a .csv/.npy/.npz file)")
    if not path.is_file():
        raise DataError(f"data source {source} is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            x, names = _read_csv(path)
            return _checked(Dataset(x, str(path), feature_names=names))
        if suffix in (".npy", ".npz"):
            return _checked(Dataset(_read_numpy(path), str(path)))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {source}: {e}") from e
    raise DataError(f"unsupported data file {source}: expected 'digits' or a .csv, .npy or .npz file")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    try:  # comma, semicolon (European spreadsheets) or tab, whichever the file uses
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [r for r in csv.reader(text.splitlines(), dialect) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty: expected rows of numbers")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    width = len(header) if header else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            line = i + (2 if header else 1)
            raise DataError(f"{path} line {line} has {len(r)} columns, expected {width}")
    for j in range(width):
        for i, r in enumerate(rows):
            if not _is_number(r[j]):
                col = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                line = i + (2 if header else 1)
                raise DataError(f"{path} {col} is not numeric: line {line} holds {r[j]!r}")
    x = np.array([[float(c) for c in r] for r in rows], dtype=np.float32)
    return x, header


def _read_numpy(path: Path) -> np.ndarray:
    try:
        obj = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refuse them
        raise DataError(f"cannot read {path}: {e}") from e
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.keys())
            if "X" in keys:
                x = obj["X"]
            elif len(keys) == 1:
                x = obj[keys[0]]
            else:
                raise DataError(f"{path} holds arrays {keys}: expected one named 'X' or a single array")
    else:
        x = obj
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path} holds {x.dtype} values: expected real numbers")
    if x.ndim != 2:
        raise DataError(f"{path} holds an array of shape {x.shape}: expected 2 dimensions (rows, features)")
    return x.astype(np.float32)


def _checked(ds: Dataset) -> Dataset:
    x = ds.x
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{ds.source} is empty: {x.shape[0]} rows × {x.shape[1]} features")
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{ds.source} holds {int(bad.sum())} NaN or infinite values, the first at row {i + 1}, "
            f"{_column(ds, j)}: {x[i, j]}"
        )
    return ds


def _column(ds: Dataset, j: int) -> str:
    return f"column {j + 1}" + (f" ({ds.feature_names[j]!r})" if ds.feature_names else "")


def split(x: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with the seed, hold out `val_fraction` of the rows (at least one)."""
    train, val = split_index(len(x), val_fraction, seed)
    return x[train], x[val]


def split_index(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`split`'s (training, validation) row numbers, for data that is read row by row."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    return order[n_val:], order[:n_val]


def fit_preprocessing(ds: Dataset, x_train: np.ndarray, scaling: str, allow_constant: bool) -> Preprocessing:
    """Parameters fitted on training rows only; `to_model_space` applies them."""
    f = x_train.shape[1]
    if scaling == "image":
        lo, hi = ds.value_range or (float(x_train.min()), float(x_train.max()))
        return Preprocessing(method="image-range", offset=[lo] * f, scale=[hi - lo] * f, clip=True)
    if scaling == "none":
        return Preprocessing(method="minmax", offset=[0.0] * f, scale=[1.0] * f, clip=False)
    if scaling == "standard":
        offset = x_train.mean(axis=0, dtype=np.float64)
        scale = x_train.std(axis=0, dtype=np.float64)
        method = "standardize"
    elif scaling == "robust":
        offset, scale = robust_location_scale(x_train)
        method = "standardize"
    else:
        offset = x_train.min(axis=0).astype(np.float64)
        scale = x_train.max(axis=0).astype(np.float64) - offset
        method = "minmax"
    return preprocessing_from(ds, method, offset, scale, allow_constant)


def preprocessing_from(
    ds: Dataset, method: str, offset: np.ndarray, scale: np.ndarray, allow_constant: bool
) -> Preprocessing:
    """The Preprocessing for per-column offset and scale, refusing constant columns unless allowed."""
    constant = np.flatnonzero(scale <= 1e-12 * np.maximum(1.0, np.abs(offset)))
    if constant.size and not allow_constant:
        cols = ", ".join(_column(ds, int(j)) for j in constant[:5])
        more = f" and {constant.size - 5} more" if constant.size > 5 else ""
        raise DataError(
            f"{ds.source}: {cols}{more} is constant on the training rows (zero variance): "
            "drop it, or pass --allow-constant to keep it unscaled"
        )
    scale = np.where(scale <= 1e-12 * np.maximum(1.0, np.abs(offset)), 1.0, scale)
    return Preprocessing(
        method=method, offset=[float(v) for v in offset], scale=[float(v) for v in scale],
        clip=method == "minmax",
    )


def robust_location_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR / 1.349 (the standard deviation for Gaussian data) per column, so that
    the outliers among the training rows do not set the scale; the standard deviation where
    the IQR is zero (columns that are mostly one value)."""
    q1, median, q3 = np.percentile(x.astype(np.float64), [25, 50, 75], axis=0)
    scale = (q3 - q1) / 1.349
    return median, np.where(scale > 0, scale, x.std(axis=0, dtype=np.float64))


def check_unit_range(x_model: np.ndarray, source: str) -> None:
    """BCE and Bernoulli costs need inputs in [0, 1]."""
    lo, hi = float(x_model.min()), float(x_model.max())
    if lo < 0.0 or hi > 1.0 or math.isnan(lo):
        raise DataError(
            f"{source}: binary cross-entropy / Bernoulli need data in [0, 1] after scaling, "
            f"but it spans [{lo:g}, {hi:g}]: use --scaling minmax (or auto)"
        )
