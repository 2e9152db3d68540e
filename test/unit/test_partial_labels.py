"""Partial labels end to end: which frames keep which labels, how pseudo-labels enter a batch,
and which loss terms a mixed batch produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_perception.core.contracts import DatasetInfo, RawFrame
from mtl_training.config import DataConfig
from mtl_training.data import build_datasets
from mtl_training.data.datasets import (
    LabelledView,
    MultiTaskDataset,
    choose_subset,
    collate,
    training_view,
)
from mtl_training.losses import task_losses

H, W = 8, 12


class TinySource:
    """Frames with known labels: seg = frame index % 3 everywhere, depth = 1 + index metres."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.info = DatasetInfo("tiny", ["a", "b", "c"], [[0, 0, 0], [1, 1, 1], [2, 2, 2]], 10.0)

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int) -> RawFrame:
        rng = np.random.default_rng(index)
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        seg = np.full((H, W), index % 3, np.uint8)
        depth = np.full((H, W), 1.0 + index, np.float32)
        return RawFrame(rgb, depth, seg, None, {"frame_id": f"f{index}"})


class DictStore:
    """The PseudoLabelStore interface (`task`, `get`) over an in-memory dict."""

    def __init__(self, labels: dict[str, np.ndarray], task: str = "seg") -> None:
        self.labels, self.task = labels, task

    def get(self, frame_id: str) -> np.ndarray | None:
        return self.labels.get(frame_id)


def test_choose_subset_counts_fractions_lists_and_reproducibility():
    assert choose_subset(20, count=5, seed=3, salt=1).sum() == 5
    assert choose_subset(20, fraction=0.25, seed=3, salt=1).sum() == 5
    a = choose_subset(100, 0.1, seed=7, salt=1)
    assert np.array_equal(a, choose_subset(100, 0.1, seed=7, salt=1))  # same config, same frames
    assert not np.array_equal(a, choose_subset(100, 0.1, seed=8, salt=1))
    small, big = choose_subset(100, 0.05, seed=7, salt=1), choose_subset(100, 0.5, seed=7, salt=1)
    assert np.all(big[small])  # 5 % nested inside 50 %: ratios compare the same labelled frames
    assert np.flatnonzero(choose_subset(10, explicit=[1, 4])).tolist() == [1, 4]
    with pytest.raises(ValueError, match="out of range"):
        choose_subset(10, explicit=[10])
    with pytest.raises(ValueError):
        choose_subset(10, count=11)


def test_paper_split_by_counts_sets_flags():
    cfg = DataConfig(train_frames=12, val_frames=2, render_height=24, render_width=32, height=16,
                     width=24, seg_count=3, depth_count=6, augment=False)
    train, val = build_datasets(cfg)
    assert train.keep_seg.sum() == 3 and train.keep_depth.sum() == 6
    for i in range(len(train)):
        s = train[i]
        assert s["has_seg"] == bool(train.keep_seg[i])
        assert s["has_depth"] == bool(train.keep_depth[i])
        if not s["has_seg"]:
            assert s["seg_source"] == "none" and bool((s["seg"] == 255).all())
    assert all(val[i]["has_seg"] and val[i]["has_depth"] for i in range(len(val)))


def _mixed_dataset(pseudo_weight_store=None):
    # frame 0: seg ground truth; frame 1: pseudo-label only; frame 2: nothing.
    # frame 3: ground truth AND a pseudo-label (ground truth must win).
    keep_seg = np.array([True, False, False, True])
    pseudo = np.full((H, W), 2, np.uint8)
    pseudo[:, : W // 2] = 255  # half the pixels not confident
    store = DictStore({"f1": pseudo, "f3": np.full((H, W), 1, np.uint8)})
    return MultiTaskDataset(TinySource(4), (H, W), keep_seg=keep_seg, pseudo=store), pseudo


def test_ground_truth_wins_and_sources_are_flagged():
    ds, pseudo = _mixed_dataset()
    batch = collate([ds[i] for i in range(4)])
    assert batch["seg_source"] == ["gt", "pseudo", "none", "gt"]
    assert batch["has_seg"].tolist() == [True, True, False, True]
    assert bool((batch["seg"][3] == 0).all())  # frame 3's ground truth (3 % 3 = 0), not pseudo 1
    assert torch.equal(batch["seg"][1], torch.from_numpy(pseudo.astype(np.int64)))
    assert batch["depth_source"] == ["gt"] * 4


def test_mixed_batch_loss_terms_and_weights():
    ds, pseudo = _mixed_dataset()
    batch = collate([ds[i] for i in range(3)])
    logits = torch.randn(3, 3, H, W, requires_grad=True)
    pred = {"seg": logits, "depth": torch.rand(3, 1, H, W) + 0.5}
    w = 0.25
    terms = task_losses(pred, batch, pseudo_weight=w)
    assert set(terms) == {"seg", "depth"}
    # by hand: full weight on frame 0's pixels, w on frame 1's confident pixels, none on frame 2
    ce = F.cross_entropy(logits.detach(), batch["seg"].clamp(max=2), reduction="none")
    m1 = torch.from_numpy(pseudo != 255)
    expected = (ce[0].sum() + w * ce[1][m1].sum()) / (H * W + w * m1.sum())
    assert torch.allclose(terms["seg"], expected, atol=1e-6)
    terms["seg"].backward()
    assert logits.grad[2].abs().sum() == 0  # the unlabelled frame gets no gradient
    assert logits.grad[1][:, ~m1].abs().sum() == 0  # nor do the pseudo-label's ignored pixels
    assert logits.grad[1][:, m1].abs().sum() > 0
    # a batch with no segmentation label at all: no seg term (not a zero term)
    unlabelled = collate([ds[2], ds[2]])
    assert "seg" not in task_losses({"seg": torch.randn(2, 3, H, W)}, unlabelled)


def test_pseudo_depth_fills_missing_depth_with_its_own_weight():
    keep_depth = np.array([True, False, False])
    store = DictStore({"f1": np.full((H, W), 4.0, np.float32)}, task="depth")
    ds = MultiTaskDataset(TinySource(3), (H, W), keep_depth=keep_depth, pseudo=store)
    batch = collate([ds[i] for i in range(3)])
    assert batch["depth_source"] == ["gt", "pseudo", "none"]
    assert batch["has_depth"].tolist() == [True, True, False]
    assert batch["seg_source"] == ["gt"] * 3  # a depth store never touches segmentation
    pred = {"depth": torch.full((3, 1, H, W), 3.0)}
    # frame 0: |3 - 1| = 2 with weight 1; frame 1: |3 - 4| = 1 with weight 0.5
    loss = task_losses(pred, batch, pseudo_weight=0.5)["depth"]
    assert torch.allclose(loss, torch.tensor((2.0 + 0.5 * 1.0) / 1.5))
    assert torch.allclose(task_losses(pred, batch)["depth"], torch.tensor(1.5))


def test_labelled_view_keeps_frames_with_both_labels_and_repeats():
    keep_seg = np.array([True, True, False, False, True])
    keep_depth = np.array([True, False, True, False, True])
    ds = MultiTaskDataset(TinySource(5), (H, W), keep_seg=keep_seg, keep_depth=keep_depth)
    view = LabelledView(ds, ("seg", "depth"))
    assert [view[i]["meta"]["frame_id"] for i in range(len(view))] == ["f0", "f4"]
    assert all(view[i]["has_seg"] and view[i]["has_depth"] for i in range(len(view)))
    assert len(training_view(ds, ("seg", "depth"), min_len=7)) == 8  # whole repeats of 2
    assert training_view(ds) is ds
    with pytest.raises(ValueError, match="no training frame keeps"):
        LabelledView(MultiTaskDataset(TinySource(2), (H, W), keep_seg=np.zeros(2, bool)),
                     ("seg", "depth"))
