"""A run resumed after its training set changed (labels imported into the folder) says so in one
line instead of silently continuing on other frames; the user can accept the change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception.core.contracts import DatasetInfo
from mtl_training.config import ConfigError, ExperimentConfig, load_config
from mtl_training.data.sources.folder import write_frame, write_index
from mtl_training.trainer import train

H, W = 16, 24


def write_dataset(root, n: int) -> None:
    """A folder dataset of n labelled frames, the last 4 held out (val / test)."""
    entries, ids = [], []
    for i in range(n):
        rng = np.random.default_rng(i)
        seg = np.zeros((H, W), np.uint8)
        seg[H // 2:] = 1
        rgb = (np.stack([seg * 90, 255 - seg * 80, seg * 40], -1)
               + rng.integers(0, 20, (H, W, 3))).astype(np.uint8)
        depth = np.where(seg == 1, 2.0, 4.0).astype(np.float32)
        entries.append(write_frame(root, f"f{i:02d}", rgb, depth, seg, None))
        ids.append(f"f{i:02d}")
    write_index(root, DatasetInfo("tiny", ["floor", "wall"], [[0, 0, 0], [0, 255, 0]], 5.0),
                entries, {"train": ids[: n - 4], "val": ids[n - 4: n - 2], "test": ids[n - 2:]})


def _cfg(tmp_path, root) -> ExperimentConfig:
    return load_config(None, ["data.name=folder", f"data.root={root}", f"data.height={H}",
                              f"data.width={W}", "data.augment=false", "model.num_classes=2",
                              "model.max_depth=5.0", "model.decoder_channels=8",
                              "model.decoder_convs=1", "train.batch_size=4",
                              "train.device=cpu", "train.num_threads=1",
                              "train.montage_frames=0", "train.tensorboard=false",
                              f"train.out_dir={tmp_path / 'run'}"])


def test_resume_refuses_a_changed_training_set_unless_accepted(tmp_path):
    torch.set_num_threads(1)
    root = tmp_path / "ds"
    write_dataset(root, n=14)
    cfg = _cfg(tmp_path, root)
    cfg.train.epochs = 1
    run = train(cfg)
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["dataset"]["kind"] == "folder" and ckpt["dataset"]["frames"] == 10

    cfg.train.epochs = 2
    write_dataset(root, n=15)  # the folder changed under the run: dataset.json rewritten
    with pytest.raises(ConfigError) as err:
        train(cfg, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and "training set changed" in msg
    assert "train.resume_data_changed=true" in msg and "--overwrite" in msg

    cfg.train.resume_data_changed = True  # the user accepts the new frames
    train(cfg, resume=True)
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["dataset"]["frames"] == 11  # the new identity recorded


def test_resume_on_the_same_training_set_continues(tmp_path):
    torch.set_num_threads(1)
    root = tmp_path / "ds"
    write_dataset(root, n=14)
    cfg = _cfg(tmp_path, root)
    cfg.train.epochs = 1
    train(cfg)
    cfg.train.epochs = 2
    run = train(cfg, resume=True)
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 2
