"""The learning-rate schedule: one closed form per epoch, so a resumed run recomputes it.

Two shapes:
- `step`: halve the rate every `train.lr_step_epochs` epochs (0 = constant). The papers'
  configurations use it.
- `cosine`: from `train.lr` down towards 0 over `train.epochs` (half a cosine, per epoch). A
  short run ends on small steps instead of a rate still large enough to move the weights from one
  epoch to the next, which is why the real-time configs use it.

The scheduler reads the run's config at each step, so a resume that changes `train.lr`,
`train.epochs` or the schedule takes the config's values from the next epoch on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mtl_training.config import TrainConfig

LR_SCHEDULES: tuple[str, ...] = ("step", "cosine")


def lr_factor(train: TrainConfig, epoch: int) -> float:
    """The multiplier of `train.lr` for 0-based `epoch` (epochs already completed)."""
    if train.lr_schedule == "cosine":
        progress = min(max(epoch, 0), train.epochs) / max(train.epochs, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if train.lr_schedule == "step":
        return 0.5 ** (epoch // train.lr_step_epochs) if train.lr_step_epochs else 1.0
    raise ValueError(f"train.lr_schedule: unknown {train.lr_schedule!r} "
                     f"(available: {', '.join(LR_SCHEDULES)})")


def build_scheduler(optimizer: torch.optim.Optimizer,
                    train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch scheduler over `optimizer` that follows `lr_factor` of the live `train`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(train, epoch))
