"""Large data files without a whole-dataset array in memory (issue 12's large-data path).

- A `.npy` file above `MAP_BYTES` is memory-mapped: each rank reads only the rows of its batches.
- A `.csv` file above `MAP_BYTES` is parsed in chunks of `CHUNK_ROWS` rows into a float32 cache file
  (`$TMPDIR/latentserve-csv/`, removed when the run ends), which is then memory-mapped like a `.npy`.
  Under torchrun the node's local rank 0 parses it while the others wait.
- Checks (NaN, inf) and preprocessing statistics run in chunks, each rank over its shard of the rows,
  combined over the ranks; the robust scaling's quantiles are computed by rank 0, a column block at
  a time, and broadcast.

Smaller files take `training.data.load`, in memory; both paths give the same rows and the same
statistics up to float64 rounding. `LATENTSERVE_MAP_BYTES` moves the threshold (0: always map).
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifact.manifest import Preprocessing
from training import data as data_mod
from training.data import DataError, Dataset
from training.distributed import Context
from training.rows import MappedRows

MAP_BYTES = 64 * 2**20  # above this size, .npy and .csv files are read row by row
CHUNK_ROWS = 65536  # rows per read in the checks and statistics passes
CSV_CHUNK_ROWS = 8192  # parsed rows per write into the CSV cache
ROBUST_COLUMNS = 8  # columns per block when rank 0 computes the robust quantiles


def map_bytes() -> int:
    text = os.environ.get("LATENTSERVE_MAP_BYTES")
    return MAP_BYTES if not text else int(text)


def load(
    source: str,
    ctx: Context | None = None,
    columns: Any = None,
    drop_columns: Any = None,
    image_shape: Any = None,
    allow_constant: bool = False,
) -> Dataset:
    """`training.data.load`, except large .npy/.csv files, which come back as a memory-mapped Dataset
    (without column selection or image options: those read the whole file)."""
    ctx = ctx or Context()
    path = Path(source)
    suffix = path.suffix.lower()
    options = (columns, drop_columns, image_shape)
    if source == "digits" or suffix not in (".npy", ".csv") or not path.is_file():
        return data_mod.load(source, *options, allow_constant)
    if path.stat().st_size < map_bytes() or any(o is not None for o in options) or _not_a_table(path):
        return data_mod.load(source, *options, allow_constant)
    try:
        if suffix == ".npy":
            return _checked(Dataset(_map_npy(path), str(path)), ctx)
        raw, header, cache = _map_csv(path, ctx)
        try:
            return _checked(Dataset(raw, str(path), feature_names=header), ctx)
        except DataError:
            if ctx.local_rank == 0:  # refused: the cache goes now, not at exit
                _remove(cache)
            raise
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {source}: {e}") from e


def _not_a_table(path: Path) -> bool:
    """An .npy of images ((N, H, W) or (N, C, H, W)) or of integers (pixels): read whole, as images."""
    if path.suffix.lower() != ".npy":
        return False
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return False  # the mapped reader gives the error
    return x.ndim != 2 or np.issubdtype(x.dtype, np.integer)


def is_mapped(ds: Dataset) -> bool:
    return isinstance(ds.x, np.memmap)


def _map_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refuse them
        raise DataError(f"cannot read {path}: {e}") from e
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path} holds {x.dtype} values: expected real numbers")
    if x.ndim != 2:
        raise DataError(f"{path} holds an array of shape {x.shape}: expected 2 dimensions (rows, features)")
    return x


# ---- CSV, streamed ------------------------------------------------------------------------------


def _map_csv(path: Path, ctx: Context) -> tuple[np.ndarray, list[str] | None, Path]:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "latentserve-csv" / f"{path.stem}-{key}.f32"
    problem = None
    if ctx.local_rank == 0:
        try:
            if not cache.exists():
                _stream_csv(path, cache)
            atexit.register(_remove, cache)
        except DataError as e:
            problem = str(e)
    problem = ctx.broadcast_object(problem)  # every rank refuses alike (rank 0 alone prints)
    ctx.barrier()
    if problem:
        raise DataError(problem)
    header_file = cache.with_suffix(".header")
    header = header_file.read_text(encoding="utf-8").split("\n") if header_file.exists() else None
    width = int(cache.with_suffix(".width").read_text())
    rows = cache.stat().st_size // (4 * width)
    return np.memmap(cache, dtype=np.float32, mode="r", shape=(rows, width)), header, cache


def _remove(cache: Path) -> None:
    for p in (cache, cache.with_suffix(".header"), cache.with_suffix(".width")):
        p.unlink(missing_ok=True)


def _stream_csv(path: Path, cache: Path) -> None:
    """Parse the CSV into float32 rows at `cache`, CSV_CHUNK_ROWS at a time (the same checks and
    messages as training.data's in-memory reader; a bad cell is the first in file order)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp-{os.getpid()}")
    try:
        header, width, n = _write_rows(path, tmp)
        if not width:
            raise DataError(f"{path} is empty: expected rows of numbers")
        if n == 0:
            raise DataError(f"{path} has a header but no data rows")
        if header:
            cache.with_suffix(".header").write_text("\n".join(header), encoding="utf-8")
        cache.with_suffix(".width").write_text(str(width))
        os.replace(tmp, cache)
    finally:  # a refused or broken file leaves nothing behind
        tmp.unlink(missing_ok=True)


def _write_rows(path: Path, sink_path: Path) -> tuple[list[str] | None, int, int]:
    """(header, width, data rows) after writing the rows as float32 to `sink_path`."""
    header: list[str] | None = None
    width, n = 0, 0
    with open(path, newline="", encoding="utf-8-sig") as f, open(sink_path, "wb") as sink:
        sample = f.read(65536)
        f.seek(0)
        try:  # comma, semicolon or tab, as training.data sniffs it
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        chunk: list[list[str]] = []
        for r in csv.reader(f, dialect):
            if not any(c.strip() for c in r):
                continue
            if not width:
                if not all(data_mod._is_number(c) for c in r):
                    header, width = [c.strip() for c in r], len(r)
                    continue
                width = len(r)
            if len(r) != width:
                raise DataError(f"{path} line {n + (2 if header else 1)} has {len(r)} columns, expected {width}")
            chunk.append(r)
            n += 1
            if len(chunk) == CSV_CHUNK_ROWS:
                sink.write(_parse(chunk, n - len(chunk), path, header).tobytes())
                chunk = []
        if chunk:
            sink.write(_parse(chunk, n - len(chunk), path, header).tobytes())
    return header, width, n


def _parse(rows: list[list[str]], first: int, path: Path, header: list[str] | None) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float64).astype(np.float32)
    except ValueError:
        for i, r in enumerate(rows):
            for j, cell in enumerate(r):
                if not data_mod._is_number(cell):
                    col = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                    line = first + i + (2 if header else 1)
                    raise DataError(f"{path} {col} is not numeric: line {line} holds {cell!r}") from None
        return np.array([[float(c) for c in r] for r in rows], dtype=np.float32)


# ---- checks and statistics in chunks ------------------------------------------------------------


def _checked(ds: Dataset, ctx: Context) -> Dataset:
    """training.data's NaN/inf check, each rank over its block of rows: the same message."""
    x = ds.x
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{ds.source} is empty: {x.shape[0]} rows × {x.shape[1]} features")
    start, stop = ctx.shard(len(x))
    first, count = np.iinfo(np.int64).max, 0
    for a in range(start, stop, CHUNK_ROWS):
        bad = ~np.isfinite(np.asarray(x[a : min(stop, a + CHUNK_ROWS)]))
        if bad.any():
            count += int(bad.sum())
            first = min(first, a * x.shape[1] + int(np.flatnonzero(bad.reshape(-1))[0]))
    totals = ctx.sum(torch.tensor([count], dtype=torch.int64, device=ctx.device)).item()
    first = int(ctx.sum(torch.tensor([first], dtype=torch.int64, device=ctx.device), "min").item())
    if totals:
        i, j = divmod(first, x.shape[1])
        raise DataError(
            f"{ds.source} holds {totals} NaN or infinite values, the first at row {i + 1}, "
            f"{data_mod._column(ds, j)}: {x[i, j]}"
        )
    return ds


def prepare_rows(ds: Dataset, train_idx: np.ndarray, val_idx: np.ndarray, cfg, ctx: Context | None = None):
    """(prep, x_train, x_val) for a mapped Dataset: preprocessing fitted on the training rows in chunks,
    and the two splits as MappedRows (model space on read)."""
    ctx = ctx or Context()
    prep, lo, hi = fit_preprocessing(ds, train_idx, cfg.scaling, cfg.allow_constant, ctx)
    if cfg.unit_range and not prep.clip:  # the model-space range, from the raw column range
        offset, scale = np.asarray(prep.offset), np.asarray(prep.scale)
        ends = np.stack([(lo - offset) / scale, (hi - offset) / scale])
        if ends.min() < 0.0 or ends.max() > 1.0:
            raise DataError(
                f"{ds.source}: binary cross-entropy / Bernoulli need data in [0, 1] after scaling, "
                f"but it spans [{ends.min():g}, {ends.max():g}]: use --scaling minmax (or auto)"
            )
    return prep, MappedRows(ds.x, train_idx, prep), MappedRows(ds.x, val_idx, prep)


def fit_preprocessing(
    ds: Dataset, train_idx: np.ndarray, scaling: str, allow_constant: bool, ctx: Context
) -> tuple[Preprocessing, np.ndarray, np.ndarray]:
    """training.data.fit_preprocessing over mapped rows; also returns the raw column min and max."""
    f = ds.x.shape[1]
    mine = np.sort(train_idx[slice(*ctx.shard(len(train_idx)))])  # sorted: reads run forwards

    def blocks():
        for a in range(0, len(mine), CHUNK_ROWS):
            yield np.asarray(ds.x[mine[a : a + CHUNK_ROWS]], dtype=np.float64)  # (C, F)

    def total(values: np.ndarray, op: str = "sum") -> np.ndarray:
        return ctx.sum(torch.from_numpy(values).to(ctx.device), op).cpu().numpy()

    lo, hi, s = np.full(f, np.inf), np.full(f, -np.inf), np.zeros(f)
    for x in blocks():
        lo, hi, s = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0)), s + x.sum(0)
    lo, hi, mean = total(lo, "min"), total(hi, "max"), total(s) / len(train_idx)
    if scaling == "image":
        raise DataError(f"{ds.source}: image scaling is for the bundled digits, not a data file")
    if scaling == "none":
        prep = Preprocessing(method="minmax", offset=[0.0] * f, scale=[1.0] * f, clip=False)
        return prep, lo, hi
    if scaling == "standard":
        ss = np.zeros(f)
        for x in blocks():  # second pass, centred: numpy's std
            ss += ((x - mean) ** 2).sum(0)
        offset, scale, method = mean, np.sqrt(total(ss) / len(train_idx)), "standardize"
    elif scaling == "robust":
        quantiles = _robust_on_rank0(ds, train_idx, ctx) if ctx.is_main else None
        offset, scale = ctx.broadcast_object(quantiles)
        method = "standardize"
    else:
        offset, scale, method = lo, hi - lo, "minmax"
    return data_mod.preprocessing_from(ds, method, offset, scale, allow_constant), lo, hi


def _robust_on_rank0(ds: Dataset, train_idx: np.ndarray, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR / 1.349 need every training row of a column: ROBUST_COLUMNS columns at a time."""
    rows = np.sort(train_idx)
    offsets, scales = [], []
    for c in range(0, ds.x.shape[1], ROBUST_COLUMNS):
        cols = slice(c, min(ds.x.shape[1], c + ROBUST_COLUMNS))
        block = np.concatenate(
            [np.asarray(ds.x[rows[a : a + CHUNK_ROWS], cols]) for a in range(0, len(rows), CHUNK_ROWS)]
        )
        o, s = data_mod.robust_location_scale(block)
        offsets.append(o)
        scales.append(s)
    return np.concatenate(offsets), np.concatenate(scales)
