"""Data sources (digits, CSV, .npy, .npz), validation, the train/validation split and the
preprocessing fitted on training rows only. Every problem is a `DataError` naming it."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artifact.manifest import Preprocessing
from training import columns as columns_mod
from training import images

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Unusable data; the message says what was expected and what was found."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, F) float32, raw feature values
    source: str
    feature_names: list[str] | None = None
    image_shape: tuple[int, ...] | None = None  # set for image data: the shape one row reshapes to
    value_range: tuple[float, float] | None = None  # known range of image pixels (training/images.py)

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @property
    def is_pixels(self) -> bool:
        """Image data in a known pixel range: scaled by that range, Bernoulli / BCE by default."""
        return self.image_shape is not None and self.value_range is not None


def load(
    source: str,
    columns: tuple[str, ...] | None = None,
    drop_columns: tuple[str, ...] | None = None,
    image_shape: tuple[int, ...] | None = None,
    allow_constant: bool = False,
) -> Dataset:
    """`digits` (scikit-learn's bundled 8×8 digits) or a path to a .csv, .npy or .npz file.

    `columns` / `drop_columns`: the feature columns of a table (training/columns.py);
    `image_shape`: (H, W[, C]) of (N, F) image rows (training/images.py); without it, .npy/.npz rows
    that can only be square images are taken for them (images.inferred_image_shape), unless
    `allow_constant` (the user keeps constant columns: a table)."""
    if image_shape is not None and (columns or drop_columns):
        raise DataError("--image-shape and --columns / --drop-columns do not go together: images have no columns")
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
            if image_shape is not None:
                x, names = _read_csv(path)
                return _checked(_numpy_dataset(x, str(path), image_shape))
            x, names = _read_csv(path, columns, drop_columns)
            return _checked(Dataset(x, str(path), feature_names=names))
        if suffix in (".npy", ".npz"):
            raw = _read_numpy(path)
            if (columns or drop_columns) and raw.ndim == 2:
                try:
                    raw = raw[:, columns_mod.select(None, raw.shape[1], columns, drop_columns, str(path))]
                except columns_mod.ColumnError as e:
                    raise DataError(str(e)) from None
            elif columns or drop_columns:
                raise DataError(f"{path} holds images of shape {raw.shape}: --columns / --drop-columns need a table")
            elif image_shape is None and not allow_constant:
                image_shape = images.inferred_image_shape(raw)
                if image_shape is not None:
                    log.warning(
                        "%s: rows of %d pixel values with constant border columns, taken for %dx%d images "
                        "(scaled by their pixel range); pass --image-shape H,W for another shape, or "
                        "--allow-constant to train on them as a table",
                        path,
                        raw.shape[1],
                        *image_shape,
                    )
            return _checked(_numpy_dataset(raw, str(path), image_shape))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {source}: {e}") from e
    raise DataError(f"unsupported data file {source}: expected 'digits' or a .csv, .npy or .npz file")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _numpy_dataset(raw: np.ndarray, source: str, image_shape: tuple[int, ...] | None) -> Dataset:
    """A table, or images (3-4 dimensions, or rows with --image-shape) with their pixel range if any."""
    try:
        x, shape = images.image_rows(raw, image_shape, source)
    except images.ImageShapeError as e:
        raise DataError(str(e)) from None
    x32 = x.astype(np.float32)
    if shape is None:
        return Dataset(x32, source)
    finite = bool(np.isfinite(x32).all())  # _checked names the first bad value
    value_range = images.pixel_range(x, np.issubdtype(x.dtype, np.integer)) if finite else None
    return Dataset(x32, source, image_shape=shape, value_range=value_range)


def _read_csv(
    path: Path, columns: tuple[str, ...] | None = None, drop_columns: tuple[str, ...] | None = None
) -> tuple[np.ndarray, list[str] | None]:
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
    keep = list(range(width))  # the kept columns' positions in the file, for the messages
    if columns or drop_columns:
        try:
            keep = columns_mod.select(header, width, columns, drop_columns, str(path))
        except columns_mod.ColumnError as e:
            raise DataError(str(e)) from None
        rows = [[r[j] for j in keep] for r in rows]
    bad = [keep[k] for k in range(len(keep)) if not all(_is_number(r[k]) for r in rows)]
    if bad:
        k = keep.index(bad[0])
        i = next(i for i, r in enumerate(rows) if not _is_number(r[k]))
        line = i + (2 if header else 1)
        others = f" ({len(bad) - 1} more non-numeric: {_columns(bad[1:6], header)})" if len(bad) > 1 else ""
        raise DataError(
            f"{path} {_columns(bad[:1], header)} is not numeric: line {line} holds {_cell(rows[i][k])}{others}; "
            + columns_mod.suggestion(bad, header)
        )
    header = [header[j] for j in keep] if header else None
    x = np.array([[float(c) for c in r] for r in rows], dtype=np.float32)
    return x, header


def _cell(cell: str) -> str:
    return repr(cell if len(cell) <= 40 else cell[:40] + "…")


def _columns(indices: list[int], header: list[str] | None) -> str:
    return ", ".join(f"column {j + 1}" + (f" ({header[j]!r})" if header else "") for j in indices)


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
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{path} holds an array of shape {x.shape}: expected (rows, features), or images (N, H, W), "
            "(N, C, H, W) or (N, H, W, C)"
        )
    return x  # its dtype still says whether it holds integer pixels; _numpy_dataset makes it float32


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


def split_calibration_index(n: int, cal_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers for training and validation, calibration row numbers), each sorted: `cal_fraction`
    of the rows (at least one) held out before anything else, by their own seeded draw, so that no
    training decision (fit, best epoch, early stop, σ) ever sees the rows the threshold is set on."""
    order = np.random.default_rng([seed, 1]).permutation(n)
    n_cal = max(1, int(round(cal_fraction * n)))
    return np.sort(order[n_cal:]), np.sort(order[:n_cal])


def split_calibration(x: np.ndarray, cal_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`split_calibration_index`'s rows: (rows for training and validation, calibration rows)."""
    rest, cal = split_calibration_index(len(x), cal_fraction, seed)
    return x[rest], x[cal]


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
    if constant.size and not (allow_constant or ds.is_image):  # constant pixels are normal in images
        cols = ", ".join(_column(ds, int(j)) for j in constant[:5])
        more = f" and {constant.size - 5} more" if constant.size > 5 else ""
        hint = images.looks_like_flat_images(ds.x)
        images_hint = f"; if the rows are images, pass {hint} to train on them as pixels" if hint else ""
        raise DataError(
            f"{ds.source}: {cols}{more} is constant on the training rows (zero variance): "
            f"drop it (--drop-columns), or pass --allow-constant to keep it unscaled{images_hint}"
        )
    scale = np.where(scale <= 1e-12 * np.maximum(1.0, np.abs(offset)), 1.0, scale)
    return Preprocessing(
        method=method,
        offset=[float(v) for v in offset],
        scale=[float(v) for v in scale],
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
