"""TensorBoard events of a real tiny run, read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

import pytest
from test_train import tiny_config

from mtl_training.trainer import Trainer, train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _load(run):
    acc = event_accumulator.EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0,
                                                                             "images": 0})
    acc.Reload()
    return acc


def test_every_loss_term_weight_metric_lr_throughput_and_the_montage_are_logged(tmp_path):
    cfg = tiny_config(tmp_path / "run", xtc=True, weighting="uncertainty")
    cfg.train.log_every = 1
    run = train(cfg)
    acc = _load(run)
    scalars = set(acc.Tags()["scalars"])
    terms = {"loss", "seg", "depth", "sup_seg", "sup_depth", "xtc_seg", "xtc_depth"}
    assert {f"train/{t}" for t in terms} <= scalars
    assert {f"epoch/train_{t}" for t in terms} <= scalars
    assert {"weights/seg", "weights/depth", "lr", "throughput/samples_per_s",
            "throughput/steps_per_s", "epoch/time_s"} <= scalars
    assert {"val/seg_miou", "val/seg_pixel_acc", "val/depth_abs_err", "val/depth_rmse"} <= scalars
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]  # 8 frames, batch 4, 2 epochs, every step logged
    assert all(e.value > 0 for e in acc.Scalars("throughput/samples_per_s"))
    assert [e.step for e in acc.Scalars("val/seg_miou")] == [2, 4]  # x axis: optimiser step
    montage = acc.Images("val/montage")
    assert [m.step for m in montage] == [2, 4]
    assert montage[0].width > montage[0].height > 0  # 5 panels side by side, 2 rows

    # a resumed run continues the curves without showing any step twice
    cfg = tiny_config(tmp_path / "run", xtc=True, weighting="uncertainty")
    cfg.train.log_every, cfg.train.epochs = 1, 3
    Trainer(cfg).fit(resume=True)
    steps = [e.step for e in _load(run).Scalars("train/loss")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_tensorboard_off_writes_no_events(tmp_path):
    cfg = tiny_config(tmp_path / "run")
    cfg.train.epochs, cfg.train.tensorboard = 1, False
    run = train(cfg)
    assert not (run / "tb").exists()
