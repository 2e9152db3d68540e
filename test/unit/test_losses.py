import math

import pytest
import torch

from mtl_training.losses import masked_cross_entropy, masked_l1, task_losses


def _batch(has_seg, has_depth):
    b = len(has_seg)
    seg = torch.randint(0, 3, (b, 4, 4))
    depth = torch.rand(b, 1, 4, 4) + 0.5
    for i, (s, d) in enumerate(zip(has_seg, has_depth, strict=True)):
        if not s:
            seg[i] = 255
        if not d:
            depth[i] = 0
    return {"seg": seg, "depth": depth, "has_seg": torch.tensor(has_seg),
            "has_depth": torch.tensor(has_depth), "seg_source": ["gt"] * b}


def test_missing_labels_contribute_no_loss():
    pred = {"seg": torch.randn(2, 3, 4, 4, requires_grad=True),
            "depth": torch.rand(2, 1, 4, 4, requires_grad=True)}
    terms = task_losses(pred, _batch([False, False], [True, False]))
    assert set(terms) == {"depth"}
    terms["depth"].backward()
    assert pred["depth"].grad[1].abs().sum() == 0  # frame without depth gets no gradient
    assert pred["depth"].grad[0].abs().sum() > 0


def test_unlabelled_frame_does_not_change_seg_loss():
    logits = torch.randn(2, 3, 4, 4)
    b = _batch([True, False], [True, True])
    both = masked_cross_entropy(logits, b["seg"], b["has_seg"])
    alone = masked_cross_entropy(logits[:1], b["seg"][:1], b["has_seg"][:1])
    assert torch.allclose(both, alone)
    # has_seg=False hides a frame even if its map holds class ids
    b["seg"][1] = 0
    assert torch.allclose(masked_cross_entropy(logits, b["seg"], b["has_seg"]), alone)


def test_invalid_depth_pixels_ignored():
    pred = torch.full((1, 1, 2, 2), 2.0)
    target = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]])
    assert masked_l1(pred, target, torch.tensor([True])).item() == 1.0
    assert masked_l1(pred, target, torch.tensor([False])) is None


def test_log_l1_scores_relative_error_and_ignores_invalid_pixels():
    """loss.depth_loss=log_l1: a 10 % miss costs the same at 1 m and at 8 m (metric L1 weighs
    the far one eight times), holes (0) stay out, and gradients stay finite."""
    pred = torch.tensor([[[[1.1, 8.8], [5.0, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.0, 8.0], [0.0, 2.0]]]])
    has = torch.tensor([True])
    near_far = masked_l1(pred[..., :1, :], target[..., :1, :], has, log=True)
    assert near_far.item() == pytest.approx(math.log(1.1), rel=1e-5)
    loss = masked_l1(pred, target, has, log=True)  # a 0 m prediction reads as 1 mm
    assert loss.item() == pytest.approx((2 * math.log(1.1) + math.log(2.0 / 1e-3)) / 3, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 0, 1, 0] == 0  # a hole: no gradient
    batch = {"depth": target, "has_depth": has}
    assert task_losses({"depth": pred}, batch, depth_loss="log_l1")["depth"].item() == \
        pytest.approx(loss.item())
    with pytest.raises(ValueError, match="Unknown depth loss 'l2'"):
        task_losses({"depth": pred}, batch, depth_loss="l2")


def test_pseudo_weight_scales_pseudo_frames():
    logits = torch.randn(2, 3, 4, 4)
    b = _batch([True, True], [True, True])
    b["seg_source"] = ["gt", "pseudo"]
    pred = {"seg": logits}
    full = task_losses(pred, b, pseudo_weight=1.0)["seg"]
    gt_only = masked_cross_entropy(logits[:1], b["seg"][:1], b["has_seg"][:1])
    assert torch.allclose(task_losses(pred, b, pseudo_weight=1e-9)["seg"], gt_only, atol=1e-5)
    assert not torch.allclose(full, gt_only)
