"""Cross-task consistency (XTC) and alignment losses, METHOD.md B / the paper's eq. 11-15."""

import pytest
import torch

from mtl_perception.core.models.transfer import TaskTransfer
from mtl_training.losses import cross_task_losses, task_losses, task_objectives


def _batch(has_seg, has_depth, b=2, h=6, w=8, classes=3):
    seg = torch.randint(0, classes, (b, h, w))
    depth = torch.rand(b, 1, h, w) + 0.5
    return {"seg": seg, "depth": depth, "has_seg": torch.tensor(has_seg),
            "has_depth": torch.tensor(has_depth), "seg_source": ["gt"] * b}


def test_xtc_is_zero_when_transfer_matches_direct_and_positive_otherwise():
    direct = {"seg": torch.randn(2, 3, 6, 8), "depth": torch.rand(2, 1, 6, 8) + 0.5}
    batch = _batch([True, True], [True, True])
    # depth: transferred == direct -> exactly zero
    same = cross_task_losses(direct, {"depth": direct["depth"].clone()}, batch)
    assert same["depth"].item() == 0.0
    shifted = cross_task_losses(direct, {"depth": direct["depth"] + 0.25}, batch)
    assert shifted["depth"].item() == pytest.approx(0.25, abs=1e-6)
    # seg: the paper's soft cross-entropy minus the (constant) target entropy, i.e. KL(direct ||
    # transferred): zero when the transferred logits give the direct softmax, positive otherwise
    assert cross_task_losses(direct, {"seg": direct["seg"] + 3.0}, batch)["seg"].item() \
        == pytest.approx(0.0, abs=1e-6)
    assert cross_task_losses(direct, {"seg": -direct["seg"]}, batch)["seg"].item() > 0.1


def test_seg_consistency_has_the_cross_entropy_gradient():
    direct = torch.randn(2, 3, 6, 8)
    logits = torch.randn(2, 3, 6, 8, requires_grad=True)
    batch = _batch([True, True], [True, True])
    cross_task_losses({"seg": direct}, {"seg": logits}, batch)["seg"].backward()
    ours = logits.grad.clone()
    logits.grad = None
    p = torch.softmax(direct, 1)
    (-(p * torch.log_softmax(logits, 1)).sum(1).mean()).backward()  # eq. 13 as written
    assert torch.allclose(ours, logits.grad, atol=1e-6)


def test_no_gradient_reaches_the_detached_target():
    torch.manual_seed(0)
    direct = {"seg": torch.randn(2, 3, 6, 8, requires_grad=True),
              "depth": (torch.rand(2, 1, 6, 8) + 0.5).requires_grad_()}
    tt = TaskTransfer(num_classes=3, max_depth=10.0, channels=4)
    transferred = tt(direct)
    terms = cross_task_losses(direct, transferred, _batch([True, True], [True, True]))
    # seg term: transfer(depth) vs detached seg -> gradient into depth and the TTNet, not seg
    terms["seg"].backward(retain_graph=True)
    assert direct["seg"].grad is None
    assert direct["depth"].grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in tt.depth_to_seg.parameters())
    direct["depth"].grad = None
    # depth term: transfer(seg) vs detached depth -> gradient into seg, not depth
    terms["depth"].backward()
    assert direct["depth"].grad is None
    assert direct["seg"].grad.abs().sum() > 0


def test_consistency_trains_on_unlabelled_frames_alignment_does_not():
    direct = {"seg": torch.randn(2, 3, 6, 8), "depth": torch.rand(2, 1, 6, 8) + 0.5}
    transferred = {"seg": torch.randn(2, 3, 6, 8), "depth": torch.rand(2, 1, 6, 8) + 0.5}
    none = _batch([False, False], [False, False])
    assert task_losses(direct, none) == {}
    xtc = cross_task_losses(direct, transferred, none, "consistency")
    assert set(xtc) == {"seg", "depth"} and all(v > 0 for v in xtc.values())
    assert cross_task_losses(direct, transferred, none, "alignment") == {}
    # alignment compares with ground truth where it exists
    batch = _batch([True, False], [False, True])
    align = cross_task_losses(direct, {"depth": batch["depth"].clone(),
                                       "seg": transferred["seg"]}, batch, "alignment")
    assert align["depth"].item() == 0.0 and align["seg"] > 0
    with pytest.raises(ValueError, match=r"Unknown loss\.xtc_mode"):
        cross_task_losses(direct, transferred, none, "nope")


def test_task_objective_is_the_lambda_mix():
    direct = {"seg": torch.tensor(2.0), "depth": torch.tensor(1.0)}
    cross = {"seg": torch.tensor(4.0), "depth": torch.tensor(3.0)}
    out = task_objectives(direct, cross, {"seg": 0.25, "depth": 0.5})
    assert out["seg"].item() == pytest.approx(0.75 * 2.0 + 0.25 * 4.0)
    assert out["depth"].item() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)
    # a task without labels in the batch keeps lambda * consistency
    out = task_objectives({"depth": torch.tensor(1.0)}, cross, {"seg": 0.25, "depth": 0.5})
    assert out["seg"].item() == pytest.approx(0.25 * 4.0)
    # lambda = 0 is the plain multi-task loss
    assert task_objectives(direct, cross, {"seg": 0.0, "depth": 0.0}) == direct
