"""Model-space rows for the training loop, without holding a large dataset in memory.

- `MappedRows`: raw rows of a memory-mapped (N, F) file, a row index (one split's rows, in split
  order) and the preprocessing, applied to the rows a batch reads: each rank reads only its rows.
- `Feed`: rows as torch tensors on the training device: an in-memory array is moved there once, a
  `MappedRows` is read batch by batch.
- `reduce_chunks`: a statistic summed over all rows in chunks, each rank over its shard, then over the
  ranks (noise scale, latent prior, metrics), so that no whole-data tensor is ever built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from artifact import transforms
from artifact.manifest import Preprocessing
from training.distributed import Context

CHUNK_ROWS = 65536  # rows per read in whole-data passes: 16 MiB of float32 at 64 features


class MappedRows:
    """(len(index), F) model-space rows of a raw (N, F) array (a np.memmap: reads touch only their rows)."""

    def __init__(self, raw: np.ndarray, index: np.ndarray, prep: Preprocessing, factor: np.ndarray | None = None):
        self.raw, self.index, self.prep = raw, np.asarray(index, dtype=np.int64), prep
        self.factor = None if factor is None else np.asarray(factor, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), int(self.raw.shape[1]))

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Model-space rows at positions `idx` of this split. (len(idx), F) float32"""
        rows = self.raw[self.index[idx]]  # fancy indexing a memmap reads just these rows
        x = transforms.to_graph_inputs(np.asarray(rows), self.prep)
        return x * self.factor if self.factor is not None else x

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(start, stop))

    def scaled(self, factor: np.ndarray) -> MappedRows:
        """The same rows times a per-feature factor (training.train.fold_noise's x' = x / σ)."""
        f = factor if self.factor is None else self.factor * factor
        return MappedRows(self.raw, self.index, self.prep, f)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # small splits only (export's x_val)
        x = self.slice(0, len(self))
        return x if dtype is None else x.astype(dtype)


Source = np.ndarray | MappedRows


def read(rows: Source, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an array or a MappedRows, as float32 model-space values."""
    if isinstance(rows, MappedRows):
        return rows.slice(start, stop)
    return np.asarray(rows[start:stop], dtype=np.float32)


class Feed:
    """Rows on the training device, indexed by CPU index tensors."""

    def __init__(self, rows: Source, device: torch.device, dtype: torch.dtype):
        self.source, self.device, self.dtype = rows, device, dtype
        self.tensor = None
        if not isinstance(rows, MappedRows):  # in memory already: one copy on the device
            self.tensor = torch.from_numpy(np.ascontiguousarray(rows)).to(device=device, dtype=dtype)

    def __len__(self) -> int:
        return len(self.source)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """(len(idx), F) rows at these positions."""
        if self.tensor is not None:
            return self.tensor[idx.to(self.device)]
        x = self.source.take(idx.numpy())
        return torch.from_numpy(x).to(device=self.device, dtype=self.dtype, non_blocking=True)

    def take(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, F) contiguous rows."""
        if self.tensor is not None:
            return self.tensor[start:stop]
        return torch.from_numpy(read(self.source, start, stop)).to(device=self.device, dtype=self.dtype)


def chunks(rows: Source, ctx: Context, size: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """This rank's shard of the rows, in chunks of at most `size` rows."""
    start, stop = ctx.shard(len(rows))
    for a in range(start, stop, size):
        yield read(rows, a, min(stop, a + size))


def reduce_chunks(
    rows: Source, ctx: Context, fn: Callable[[np.ndarray], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Σ over all rows of `fn(chunk)` (dict of float64 tensors), summed over chunks and ranks."""
    total: dict[str, torch.Tensor] = {}
    for x in chunks(rows, ctx):
        for k, v in fn(x).items():
            total[k] = total[k] + v if k in total else v
    if not total:  # a rank without rows still joins the collective: with zeros of the right shapes
        total = {k: torch.zeros_like(v) for k, v in fn(read(rows, 0, 1)[:0]).items()}
    keys = sorted(total)
    flat = torch.cat([total[k].reshape(-1).double() for k in keys])
    flat = ctx.sum(flat.to(ctx.device)).cpu()
    out, i = {}, 0
    for k in keys:
        n = total[k].numel()
        out[k] = flat[i : i + n].reshape(total[k].shape)
        i += n
    return out
