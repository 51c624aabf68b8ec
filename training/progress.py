"""The training progress bar: one tqdm bar on rank 0 with the global step and the rows/s of all ranks;
the other ranks stay quiet."""

from __future__ import annotations

import time

from tqdm import tqdm

from training.config import TrainConfig
from training.distributed import Context

REFRESH_STEPS = 50  # rows/s is recomputed every this many steps (and at each epoch's end)


class Progress:
    def __init__(self, cfg: TrainConfig, ctx: Context, steps_per_epoch: int, enabled: bool = True):
        self.rows_per_step = cfg.batch_size  # the global batch: every rank steps together
        self.epochs = int(cfg.epochs or 1)
        self.bar = tqdm(
            total=self.epochs * steps_per_epoch,
            desc=f"{cfg.kind} {cfg.name}",
            unit="step",
            disable=not (enabled and ctx.is_main),
            dynamic_ncols=True,
        )
        self.steps, self.start, self.epoch_no = 0, 0.0, 0  # the clock starts after the first step (warm-up)
        self.losses: dict[str, str] = {}

    def step(self) -> None:
        self.steps += 1
        if self.steps == 1:
            self.start = time.perf_counter()
        self.bar.update(1)
        if self.steps % REFRESH_STEPS == 0:
            self._postfix()

    def epoch(self, row: dict[str, float]) -> None:
        self.epoch_no = int(row["epoch"])
        self.losses = {k.replace("train_", ""): f"{v:.4g}" for k, v in row.items() if k != "epoch"}
        self._postfix()

    def rows_per_second(self) -> float:
        return (self.steps - 1) * self.rows_per_step / max(time.perf_counter() - self.start, 1e-9)

    def _postfix(self) -> None:
        if self.bar.disable:
            return
        info = {"epoch": f"{self.epoch_no}/{self.epochs}", "rows/s": f"{self.rows_per_second():,.0f}", **self.losses}
        self.bar.set_postfix(info, refresh=False)

    def close(self) -> None:
        self.bar.close()
