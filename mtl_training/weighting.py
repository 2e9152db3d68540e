"""Loss weighting: one interface, one class per method, chosen by `loss.weighting`.

`combine(losses, shared)` turns {task: loss} into the scalar to back-propagate; `end_epoch` feeds
methods that adapt per epoch (DWA); `step` runs after each optimiser step for methods that update
their weights by their own rule (GradNorm). Static task weights (alpha for depth, METHOD.md A)
apply under every method, so `alpha` keeps one meaning whatever the weighting.

Methods: equal (static weights only), uncertainty (Kendall et al. 2018, learned log-variances),
gradnorm (Chen et al. 2018, on the last shared layer), dwa (Liu et al. 2019, loss-ratio softmax).
Adaptive state lives in parameters and buffers, so it travels in the weighting's state_dict and
a resumed run continues with the weights it had.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mtl_training.config import ConfigError, LossConfig


class Weighting(nn.Module):
    """Base: holds the task list and the static weights; subclasses add the adaptive part."""

    def __init__(self, tasks: list[str], static: dict[str, float]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.static = {t: float(static.get(t, 1.0)) for t in self.tasks}

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        """The scalar to back-propagate. `losses` may lack tasks unlabelled in this batch;
        `shared` are the last shared layer's parameters (used by gradient-based methods)."""
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called with the epoch's mean loss per task; most methods ignore it."""

    def step(self) -> None:
        """Called after each optimiser step; methods with their own update rule apply it here."""

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters the trainer's optimiser should update with the network's (default: all)."""
        return list(self.parameters())

    def weights(self) -> dict[str, float]:
        """The current effective multiplier of each task's loss (for logs and tests)."""
        return dict(self.static)

    def _zero(self, losses: dict[str, Tensor]) -> Tensor:
        return torch.zeros((), device=next(iter(losses.values())).device)

    def _index(self, task: str) -> int:
        if task not in self.tasks:
            raise KeyError(f"loss for unknown task '{task}' (weighting tasks: {self.tasks})")
        return self.tasks.index(task)


_METHODS: dict[str, Callable[[list[str], dict[str, float], LossConfig], Weighting]] = {}


def register_weighting(name: str) -> Callable[[type[Weighting]], type[Weighting]]:
    def wrap(cls: type[Weighting]) -> type[Weighting]:
        _METHODS[name] = cls.from_config  # type: ignore[attr-defined]
        return cls

    return wrap


def available_weightings() -> list[str]:
    return sorted(_METHODS)


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Sum of losses with the static weights only."""

    @classmethod
    def from_config(cls, tasks: list[str], static: dict[str, float], cfg: LossConfig) -> Weighting:
        return cls(tasks, static)

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        total = self._zero(losses)
        for t, loss in losses.items():
            total = total + self.static.get(t, 1.0) * loss
        return total


# Kendall et al.: a classification likelihood gives 1/sigma^2 * L, a Gaussian one 1/(2 sigma^2) * L.
_UNCERTAINTY_SCALE = {"seg": 1.0}
_REGRESSION_SCALE = 0.5


@register_weighting("uncertainty")
class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty: L = sum_t c_t exp(-s_t) L_t + s_t / 2, s_t = log sigma_t^2.

    c_t is 1 for segmentation (classification) and 1/2 for depth (regression). The s_t / 2 term
    stops the trivial solution sigma -> infinity; at the optimum exp(-s_t) ~ 1 / (2 c_t L_t), so
    a task with a large loss is turned down. The log-variances are trained by the network's
    optimiser (they are in `optimizer_parameters`).
    """

    def __init__(self, tasks: list[str], static: dict[str, float]) -> None:
        super().__init__(tasks, static)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))  # s_t, init sigma = 1

    @classmethod
    def from_config(cls, tasks: list[str], static: dict[str, float], cfg: LossConfig) -> Weighting:
        return cls(tasks, static)

    def _scale(self, task: str) -> float:
        return _UNCERTAINTY_SCALE.get(task, _REGRESSION_SCALE)

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        total = self._zero(losses)
        for t, loss in losses.items():
            s = self.log_vars[self._index(t)]
            total = total + self.static[t] * self._scale(t) * torch.exp(-s) * loss + 0.5 * s
        return total

    def weights(self) -> dict[str, float]:
        s = self.log_vars.detach().cpu()
        return {t: self.static[t] * self._scale(t) * math.exp(-float(s[i]))
                for i, t in enumerate(self.tasks)}


@register_weighting("gradnorm")
class GradNormWeighting(Weighting):
    """GradNorm: task weights w_t steered so each task's gradient norm on the shared layer tracks
    its relative training rate.

    Per step with every task present: G_t = ||grad_W (w_t c_t L_t)|| on the last shared layer W,
    r_t = (L_t / L_t(0)) / mean_j (L_j / L_j(0)), target_t = mean(G) * r_t^alpha (a constant), and
    L_grad = sum_t |G_t - target_t|. Only w receives L_grad's gradient, and only w is moved by it,
    with its own Adam optimiser (`loss.gradnorm_lr`) in `step()`, after which the weights are
    renormalised to sum to the number of tasks. The network is trained on sum_t w_t c_t L_t with w
    held constant. A slower task (higher r_t) gets a larger target and so a larger weight.
    """

    def __init__(self, tasks: list[str], static: dict[str, float], alpha: float = 1.5,
                 lr: float = 0.025) -> None:
        super().__init__(tasks, static)
        if len(self.tasks) < 2:
            raise ConfigError("loss.weighting gradnorm needs at least two tasks")
        self.alpha = float(alpha)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.full((len(self.tasks),), math.nan))
        self._optimizer = torch.optim.Adam([self.task_weights], lr=lr)
        self._pending: Tensor | None = None

    @classmethod
    def from_config(cls, tasks: list[str], static: dict[str, float], cfg: LossConfig) -> Weighting:
        return cls(tasks, static, cfg.gradnorm_alpha, cfg.gradnorm_lr)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return []  # moved by GradNorm's own rule in step(), not by the task losses

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        w = self.task_weights
        scaled = {t: self.static[t] * loss for t, loss in losses.items()}
        trainable = [p for p in (shared or []) if p.requires_grad]
        if (self.training and torch.is_grad_enabled() and trainable
                and all(t in scaled for t in self.tasks)):
            self._pending = self._weight_gradient(scaled, trainable)
        total = self._zero(losses)
        for t, loss in scaled.items():
            total = total + w[self._index(t)].detach() * loss
        return total

    def _weight_gradient(self, scaled: dict[str, Tensor], shared: list[nn.Parameter]) -> Tensor:
        current = torch.stack([scaled[t].detach().float() for t in self.tasks])  # [T]
        with torch.no_grad():
            unset = torch.isnan(self.initial_losses)
            self.initial_losses[unset] = current[unset].to(self.initial_losses)
        norms = []
        for t in self.tasks:
            grads = torch.autograd.grad(scaled[t], shared, retain_graph=True, allow_unused=True)
            sq = sum((g.float() ** 2).sum() for g in grads if g is not None)
            norms.append(torch.sqrt(torch.as_tensor(sq, device=current.device)))
        grad_norms = torch.stack(norms).detach()  # ||grad_W c_t L_t||, [T]
        g = self.task_weights * grad_norms  # G_t, differentiable in w only
        ratio = current / self.initial_losses.to(current).clamp_min(1e-12)
        relative = ratio / ratio.mean().clamp_min(1e-12)
        target = (g.mean() * relative ** self.alpha).detach()
        gn_loss = (g - target).abs().sum()
        return torch.autograd.grad(gn_loss, self.task_weights)[0]

    def step(self) -> None:
        if self._pending is None:
            return
        self._optimizer.zero_grad(set_to_none=True)
        self.task_weights.grad = self._pending.to(self.task_weights)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self._pending = None
        with torch.no_grad():
            self.task_weights.clamp_(min=1e-3)
            self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())

    def weights(self) -> dict[str, float]:
        w = self.task_weights.detach().cpu()
        return {t: self.static[t] * float(w[i]) for i, t in enumerate(self.tasks)}

    # the weights' own optimiser state travels in state_dict, so --resume continues it exactly
    def get_extra_state(self) -> Any:
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])


@register_weighting("dwa")
class DWAWeighting(Weighting):
    """Dynamic weight averaging: w_t(e) = T softmax_t(r_t(e-1) / temperature),
    r_t(e-1) = L_t(e-1) / L_t(e-2), from the epoch mean losses; w = 1 until two epochs are seen.

    A task whose loss fell less over the last epoch (higher ratio) gets a larger weight.
    """

    def __init__(self, tasks: list[str], static: dict[str, float], temperature: float = 2.0
                 ) -> None:
        super().__init__(tasks, static)
        if temperature <= 0:
            raise ConfigError(f"loss.dwa_temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        # rows: epoch e-2, epoch e-1 mean losses (nan = not seen)
        self.register_buffer("history", torch.full((2, len(self.tasks)), math.nan))
        self.register_buffer("dynamic", torch.ones(len(self.tasks)))

    @classmethod
    def from_config(cls, tasks: list[str], static: dict[str, float], cfg: LossConfig) -> Weighting:
        return cls(tasks, static, cfg.dwa_temperature)

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        current = torch.tensor([float(mean_losses.get(t, math.nan)) for t in self.tasks])
        self.history[0] = self.history[1]
        self.history[1] = current.to(self.history)
        prev, last = self.history[0], self.history[1]
        if bool(torch.isfinite(prev).all() and torch.isfinite(last).all() and (prev > 0).all()):
            ratio = last / prev
            self.dynamic.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0))
        else:
            self.dynamic.fill_(1.0)

    def combine(self, losses: dict[str, Tensor], shared: list[nn.Parameter] | None = None
                ) -> Tensor:
        total = self._zero(losses)
        for t, loss in losses.items():
            total = total + self.static[t] * float(self.dynamic[self._index(t)]) * loss
        return total

    def weights(self) -> dict[str, float]:
        return {t: self.static[t] * float(self.dynamic[i]) for i, t in enumerate(self.tasks)}


def build_weighting(cfg: LossConfig, tasks: list[str]) -> Weighting:
    """The method named by cfg.weighting for these tasks; unknown names list the known ones."""
    static = {"seg": 1.0, "depth": cfg.depth_weight}
    if cfg.weighting not in _METHODS:
        raise ConfigError(f"Unknown loss.weighting '{cfg.weighting}' "
                          f"(available: {', '.join(available_weightings())})")
    return _METHODS[cfg.weighting](tasks, static, cfg)
