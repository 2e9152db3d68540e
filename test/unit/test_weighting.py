"""Loss weighting methods behind one interface (equal, uncertainty, GradNorm, DWA)."""

import math

import pytest
import torch
from torch import nn

from mtl_training.config import ConfigError, LossConfig
from mtl_training.weighting import available_weightings, build_weighting

TASKS = ["seg", "depth"]


def test_all_methods_registered_and_unknown_is_named():
    assert available_weightings() == ["dwa", "equal", "gradnorm", "uncertainty"]
    with pytest.raises(ConfigError, match=r"Unknown loss\.weighting 'nope'.*gradnorm"):
        build_weighting(LossConfig(weighting="nope"), TASKS)


def test_equal_uses_static_depth_weight():
    w = build_weighting(LossConfig(depth_weight=0.5), TASKS)
    total = w.combine({"seg": torch.tensor(2.0), "depth": torch.tensor(4.0)})
    assert total.item() == pytest.approx(4.0)
    assert w.combine({"depth": torch.tensor(4.0)}).item() == pytest.approx(2.0)  # missing seg


def test_uncertainty_weights_are_learnable_and_change():
    w = build_weighting(LossConfig(weighting="uncertainty"), TASKS)
    params = w.optimizer_parameters()
    assert params and all(p.requires_grad for p in params)
    before = w.weights()
    assert before == pytest.approx({"seg": 1.0, "depth": 0.5})  # Kendall: 1/s^2 CE, 1/(2s^2) L1
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(50):  # a big, constant depth loss: its weight should be turned down
        loss = w.combine({"seg": torch.tensor(0.1), "depth": torch.tensor(5.0)})
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = w.weights()
    assert after["depth"] < before["depth"] and after["seg"] > before["seg"]


def _toy_problem(weighting, steps=60):
    """A shared layer, two heads: task 'seg' is learnable, task 'depth' chases pure noise."""
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y_fast = x @ torch.randn(8, 1)
    y_slow = torch.randn(64, 1) * 3.0  # unlearnable: its loss barely falls
    shared = nn.Linear(8, 16)
    heads = nn.ModuleDict({"seg": nn.Linear(16, 1), "depth": nn.Linear(16, 1)})
    opt = torch.optim.Adam([*shared.parameters(), *heads.parameters(),
                            *weighting.optimizer_parameters()], lr=0.02)
    for _ in range(steps):
        z = torch.relu(shared(x))
        losses = {"seg": ((heads["seg"](z) - y_fast) ** 2).mean(),
                  "depth": ((heads["depth"](z) - y_slow) ** 2).mean()}
        total = weighting.combine(losses, list(shared.parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
        weighting.step()
    return losses


def test_gradnorm_moves_weight_toward_the_slower_task():
    w = build_weighting(LossConfig(weighting="gradnorm", gradnorm_alpha=1.5, gradnorm_lr=0.05),
                        TASKS)
    assert w.optimizer_parameters() == []  # moved by its own rule, not the task losses
    assert w.weights() == pytest.approx({"seg": 1.0, "depth": 1.0})
    losses = _toy_problem(w)
    got = w.weights()
    assert got["depth"] > 1.2 > 1.0 > got["seg"]  # the slow task gains weight
    assert got["seg"] + got["depth"] == pytest.approx(2.0, abs=1e-4)  # renormalised
    assert losses["seg"] < 0.5 * losses["depth"]


def test_gradnorm_alpha_zero_equalises_gradient_norms_not_ratios():
    fast = build_weighting(LossConfig(weighting="gradnorm", gradnorm_alpha=0.0,
                                      gradnorm_lr=0.05), TASKS)
    strong = build_weighting(LossConfig(weighting="gradnorm", gradnorm_alpha=3.0,
                                        gradnorm_lr=0.05), TASKS)
    _toy_problem(fast)
    _toy_problem(strong)
    assert strong.weights()["depth"] > fast.weights()["depth"]


def test_gradnorm_state_round_trips_through_state_dict():
    w = build_weighting(LossConfig(weighting="gradnorm", gradnorm_lr=0.05), TASKS)
    _toy_problem(w, steps=5)
    state = w.state_dict()
    fresh = build_weighting(LossConfig(weighting="gradnorm", gradnorm_lr=0.05), TASKS)
    fresh.load_state_dict(state)
    assert fresh.weights() == pytest.approx(w.weights())
    assert torch.equal(fresh.initial_losses, w.initial_losses)
    assert fresh._optimizer.state_dict()["state"][0]["step"] == 5


def test_dwa_weights_follow_loss_ratios():
    w = build_weighting(LossConfig(weighting="dwa", dwa_temperature=2.0), TASKS)
    assert w.weights() == pytest.approx({"seg": 1.0, "depth": 1.0})
    w.end_epoch({"seg": 1.0, "depth": 1.0})
    assert w.weights() == pytest.approx({"seg": 1.0, "depth": 1.0})  # one epoch: no ratio yet
    w.end_epoch({"seg": 0.5, "depth": 0.9})  # seg halved, depth barely moved
    r = torch.tensor([0.5, 0.9]) / 2.0
    expect = 2 * torch.softmax(r, 0)
    got = w.weights()
    assert got["seg"] == pytest.approx(float(expect[0]), rel=1e-5)
    assert got["depth"] == pytest.approx(float(expect[1]), rel=1e-5)
    assert got["depth"] > got["seg"]
    total = w.combine({"seg": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    assert total.item() == pytest.approx(2.0)
    w.end_epoch({"seg": 0.5, "depth": 0.3})  # now depth falls faster: the weights swap
    assert w.weights()["seg"] > w.weights()["depth"]
    w.end_epoch({"seg": math.nan, "depth": 0.2})  # a task unseen for an epoch: back to equal
    assert w.weights() == pytest.approx({"seg": 1.0, "depth": 1.0})
