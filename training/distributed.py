"""Data-parallel training under `torchrun`: the process group, each rank's share of a batch, and the
few collectives that make N processes train the same model as one.

`Context.from_env()` reads torchrun's WORLD_SIZE / RANK / LOCAL_RANK. With WORLD_SIZE 1 (or unset)
every method is the identity and nothing is initialised, so one process runs the very same loop.

How the N-process result equals the one-process result (training/train.py uses these):
- every rank draws the same seeded permutation and takes its contiguous slice of each global batch
  (`Context.local`); noise (vae ε, gan z) is drawn for the global batch on every rank and sliced;
- DDP averages the gradients over the ranks;
- the trimmed cost cuts the global batch: per-row costs are gathered, sorted (ties: the lower global
  row wins), and each rank's kept rows are summed × N / kept, so that DDP's average is the
  single-process trimmed mean (`Context.keep_mask`, `training.objective`);
- validation costs are gathered over all validation rows, and the early-stopping value is rank 0's,
  broadcast (`Context.agree`).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training.config import ConfigError


@dataclass(frozen=True)
class Context:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, requested_device: str, batch_size: int | None = None) -> Context:
        """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when WORLD_SIZE > 1.

        `--device auto` and `cuda` mean cuda:LOCAL_RANK. The global batch must split evenly; that is
        checked before any rank waits for another, so a refusal never hangs."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls(device=pick_device(requested_device))
        rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if batch_size is not None and batch_size % world:
            raise ConfigError(
                f"--batch-size {batch_size} is the global batch and must divide evenly among the {world} "
                f"processes (WORLD_SIZE={world}): use a multiple of {world}, such as "
                f"{max(world, batch_size - batch_size % world)}"
            )
        device = pick_device(requested_device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            # the default 30-minute timeout stays: rank 0 exports while the others wait at the barrier
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=30))
        return cls(world, rank, local_rank, device)

    # ---- a rank's share -------------------------------------------------------------------------
    def local_batch(self, global_batch: int) -> int:
        return global_batch // self.world_size

    def local(self, rows: torch.Tensor | np.ndarray):
        """This rank's contiguous slice of a global batch (rows ordered as one process sees them)."""
        b = len(rows) // self.world_size
        return rows[self.rank * b : (self.rank + 1) * b]

    def shard(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's part of n rows (uneven n allowed: the first ranks get one more)."""
        bounds = np.linspace(0, n, self.world_size + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])

    # ---- collectives (identity with one process) ------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP over `module` (gradients averaged over the ranks); the module itself with one process.
        Buffers (spectral norm's power-iteration vectors) evolve identically on every rank and are not
        re-broadcast at each forward."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # torch >= 2.13 names it forward_sync_buffers (buffers still sync once at init: all alike here)
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_sync: dict[str, Any] = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=ids, **no_sync)

    def gather_rows(self, values: torch.Tensor, same_size: bool = False) -> torch.Tensor:
        """Concatenate every rank's (n_r, ...) rows in rank order; shards may differ in length
        unless `same_size` says they do not (one collective less)."""
        if not self.distributed:
            return values
        if same_size:
            parts = [torch.empty_like(values) for _ in range(self.world_size)]
            dist.all_gather(parts, values.contiguous())
            return torch.cat(parts)
        sizes = torch.zeros(self.world_size, dtype=torch.long, device=values.device)
        sizes[self.rank] = len(values)
        dist.all_reduce(sizes)
        longest = int(sizes.max())
        padded = values.new_zeros((longest, *values.shape[1:]))
        padded[: len(values)] = values
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[: int(n)] for p, n in zip(parts, sizes)])

    def keep_mask(self, costs: torch.Tensor, trim: float) -> tuple[torch.Tensor, int]:
        """Which of this rank's rows the trimmed cost keeps, cut over the global batch, and how many
        rows are kept globally. costs: (b,) this rank's per-row costs -> ((b,) bool, kept)."""
        total = len(costs) * self.world_size
        kept = max(1, int(np.ceil((1.0 - trim) * total))) if trim > 0 else total
        if kept == total:  # nothing to cut: no collective needed
            return torch.ones(len(costs), dtype=torch.bool, device=costs.device), kept
        everyone = self.gather_rows(costs.detach(), same_size=True)  # (B,) in global batch order
        mask = torch.zeros(total, dtype=torch.bool, device=costs.device)
        # stable sort: among equal costs the lower global row is kept, on every rank alike
        mask[torch.sort(everyone, stable=True).indices[:kept]] = True
        return self.local(mask), kept

    def sum(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Element-wise sum (or "min", "max") over the ranks; a new tensor on every rank."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(
                values, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
            )
        return values

    def agree(self, value: float) -> float:
        """Rank 0's value on every rank: decisions (best epoch, early stop) cannot diverge."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def broadcast_object(self, obj):
        """Rank 0's picklable object on every rank (small things: preprocessing, a refusal)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """cpu, or cuda:LOCAL_RANK for `cuda` and for `auto` where torch sees a GPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"LOCAL_RANK {local_rank} has no GPU of its own: torch sees {torch.cuda.device_count()}; "
            "start at most that many processes per node, or pass --device cpu"
        )
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {text!r}") from None
