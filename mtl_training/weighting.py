"""Loss weighting: one interface, one class per method (equal here; more register below).

`combine(losses, shared)` turns {task: loss} into the scalar to back-propagate; `end_epoch` feeds
methods that adapt per epoch (DWA). Static task weights (alpha for depth, METHOD.md A) apply to
every method, so `alpha` keeps one meaning whatever the weighting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mtl_training.config import ConfigError, LossConfig


class Weighting(nn.Module):
    def __init__(self, tasks: list[str], static: dict[str, float]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.static = {t: float(static.get(t, 1.0)) for t in self.tasks}

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called with the epoch's mean loss per task; most methods ignore it."""

    def weights(self) -> dict[str, float]:
        return dict(self.static)


_METHODS: dict[str, Callable[[list[str], dict[str, float], LossConfig], Weighting]] = {}


def register_weighting(name: str):
    def wrap(cls):
        _METHODS[name] = cls.from_config
        return cls

    return wrap


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Sum of losses with the static weights only."""

    @classmethod
    def from_config(cls, tasks: list[str], static: dict[str, float], cfg: LossConfig) -> Weighting:
        return cls(tasks, static)

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        total = torch.zeros((), device=next(iter(losses.values())).device)
        for t, loss in losses.items():
            total = total + self.static.get(t, 1.0) * loss
        return total


def build_weighting(cfg: LossConfig, tasks: list[str]) -> Weighting:
    static = {"seg": 1.0, "depth": cfg.depth_weight}
    if cfg.weighting not in _METHODS:
        raise ConfigError(f"Unknown loss.weighting '{cfg.weighting}' "
                          f"(available: {', '.join(sorted(_METHODS))})")
    return _METHODS[cfg.weighting](tasks, static, cfg)
