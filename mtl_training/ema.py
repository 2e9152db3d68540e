"""An exponential moving average of the network's weights (`train.ema_decay`).

Why: a short run on few frames ends wherever its last minibatches pushed it. On the demo's 270
frames the validation delta1 of consecutive epochs swung by up to 0.1 at the same learning rate;
the average over the last few hundred steps does not swing, and it is what gets validated,
chosen as best.pt, exported and used to pseudo-label. Training itself steps the raw weights.

Floating-point parameters and buffers (BatchNorm running statistics included) are averaged; the
integer ones (`num_batches_tracked`) copied. Early updates use a smaller decay,
min(decay, (1 + n) / (10 + n)) after n updates, so the random start of the heads fades within
the first tens of steps instead of weighing on the average for the run's first thousand.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of `model`, updated after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay: must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # state_dict values share storage with the modules: in-place updates reach them
        self._source = list(model.state_dict().values())
        self._average = list(self.model.state_dict().values())

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the source model's current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self._average, self._source, strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(cur.detach().to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Resume the average; None (a checkpoint from a run without one) starts it afresh from
        the source model's current weights."""
        if state is None:
            for avg, cur in zip(self._average, self._source, strict=True):
                avg.copy_(cur)
            self.updates = 0
            return
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
