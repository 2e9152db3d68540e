"""TensorBoard events of a training run: scalars and validation montages under <run>/tb.

Written by rank 0 only. Tags (what `tensorboard --logdir runs/` shows):
- per logged step: `train/<term>` (every loss term the step produced: loss, seg, depth, sup_*,
  xtc_* / align_*), `weights/<task>` (the weighting's effective multipliers), `lr`,
  `throughput/samples_per_s` and `throughput/steps_per_s` (global: every rank's samples);
- per epoch: `epoch/train_<term>` (epoch means), `val/seg_<metric>`, `val/depth_<metric>`
  (every scalar metric evaluate returns), `epoch/time_s`, and the image `val/montage`
  (RGB | true seg | predicted seg | true depth | predicted depth, one row per frame).
The x axis is the optimiser step everywhere, so per-step and per-epoch curves line up. A resumed
run opens the writer with `purge_step` = the first step it will take: events of steps a kill had
logged past the last checkpoint are hidden, so no step is shown twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtl_training.config import ConfigError

TB_DIR = "tb"


def tensorboard_command(run_dir: str | Path) -> str:
    """The line to paste to watch a run (its parent works too: it shows every run below it)."""
    return f"tensorboard --logdir {Path(run_dir)}"


class TensorBoardLog:
    """A thin, typed front of torch's SummaryWriter for the Trainer's three kinds of record."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional `train` extra
        except ImportError as exc:
            raise ConfigError("train.tensorboard: the tensorboard package is not installed "
                              "(pip install -e .[train]), or set train.tensorboard=false") from exc
        self.log_dir = Path(run_dir) / TB_DIR
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step,
                                    flush_secs=30)

    def step(self, step: int, logs: dict[str, float], weights: dict[str, float], lr: float,
             samples_per_s: float | None, steps_per_s: float | None) -> None:
        """One logged optimiser step: loss terms, task weights, learning rate, throughput."""
        for k, v in logs.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        for t, w in weights.items():
            self.writer.add_scalar(f"weights/{t}", w, step)
        self.writer.add_scalar("lr", lr, step)
        if samples_per_s is not None:
            self.writer.add_scalar("throughput/samples_per_s", samples_per_s, step)
        if steps_per_s is not None:
            self.writer.add_scalar("throughput/steps_per_s", steps_per_s, step)

    def epoch(self, step: int, record: dict[str, Any], montage: np.ndarray | None) -> None:
        """An epoch's committed record (metrics.jsonl's) and its validation montage [H, W, 3]."""
        for k, v in record.get("train", {}).items():
            self.writer.add_scalar(f"epoch/train_{k}", v, step)
        for task, metrics in record.get("val", {}).items():
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"val/{task}_{k}", v, step)
        if "time_s" in record:
            self.writer.add_scalar("epoch/time_s", record["time_s"], step)
        if montage is not None:
            self.writer.add_image("val/montage", montage, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
