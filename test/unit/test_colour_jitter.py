"""data.colour_jitter: photometric augmentation for a robot whose light and white balance differ
from the labelled source's. Off by default and then invisible: a run without it draws and trains
exactly as before."""

from __future__ import annotations

import numpy as np
import torch

from mtl_training.config import DataConfig
from mtl_training.data import build_datasets
from mtl_training.data.transforms import colour_jitter, make_sample

RGB = np.random.default_rng(0).integers(40, 200, (24, 32, 3), dtype=np.uint8)
DEPTH = np.full((24, 32), 2.0, np.float32)
SEG = np.zeros((24, 32), np.uint8)


def _sample(seed: int, jitter: float, augment: bool = True) -> dict:
    return make_sample(RGB, DEPTH, SEG, (24, 32), augment=augment,
                       rng=np.random.default_rng(seed), jitter=jitter)


def test_jitter_changes_colour_only_and_stays_in_range() -> None:
    plain, jittered = _sample(3, 0.0), _sample(3, 1.0)
    # the same geometry (crop, flip): depth and labels identical, the image's colours not
    assert torch.equal(plain["depth"], jittered["depth"]) and torch.equal(plain["seg"],
                                                                          jittered["seg"])
    assert not torch.equal(plain["image"], jittered["image"])
    means = np.array([colour_jitter(RGB, 1.0, np.random.default_rng(s)).reshape(-1, 3).mean(0)
                      for s in range(200)])
    # brightness and per-channel gains spread the means both ways around the original
    base = RGB.reshape(-1, 3).mean(0)
    assert (means.min(0) < 0.8 * base).all() and (means.max(0) > 1.2 * base).all()
    out = colour_jitter(RGB, 1.0, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == RGB.shape


def test_no_jitter_is_exactly_the_old_augmentation_and_validation_never_jitters() -> None:
    for seed in range(5):
        before = make_sample(RGB, DEPTH, SEG, (24, 32), augment=True,
                             rng=np.random.default_rng(seed))
        assert torch.equal(before["image"], _sample(seed, 0.0)["image"])
        assert torch.equal(_sample(seed, 1.0, augment=False)["image"],
                           _sample(seed, 0.0, augment=False)["image"])
    cfg = DataConfig(train_frames=4, val_frames=2, height=32, width=32, render_height=32,
                     render_width=32, colour_jitter=0.5)
    train, val = build_datasets(cfg)
    assert train.jitter == 0.5 and val.jitter == 0.0
