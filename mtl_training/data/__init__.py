"""Datasets with partial labels. `build_datasets(cfg.data)` is the one entry point for training."""

from __future__ import annotations

from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.datasets import (
    IGNORE_INDEX,
    DatasetInfo,
    FrameSource,
    MultiTaskDataset,
    RawFrame,
    choose_subset,
    collate,
)

__all__ = ["IGNORE_INDEX", "DatasetInfo", "FrameSource", "MultiTaskDataset", "RawFrame",
           "build_datasets", "build_sources", "choose_subset", "collate"]


def build_sources(cfg: DataConfig) -> tuple[FrameSource, FrameSource]:
    """(train, val) frame sources named by cfg.name."""
    if cfg.name == "synthetic":
        from mtl_training.data.synthetic import SyntheticSource, WorldConfig

        world = WorldConfig(height=cfg.render_height, width=cfg.render_width,
                            max_depth=cfg.max_depth)
        return (SyntheticSource(cfg.seed, 0, cfg.train_frames, world),
                SyntheticSource(cfg.seed, SyntheticSource.VAL_OFFSET, cfg.val_frames, world))
    if cfg.name == "folder":
        from mtl_training.data.folder import FolderSource

        if not cfg.root:
            raise ConfigError("data.root must name the dataset folder for data.name=folder")
        return FolderSource(cfg.root, "train"), FolderSource(cfg.root, "val")
    raise ConfigError(f"Unknown data.name '{cfg.name}' (available: synthetic, folder)")


def build_datasets(cfg: DataConfig, pseudo=None) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """Training split with the configured label subsets and augmentation; a fully labelled,
    unaugmented validation split."""
    train_src, val_src = build_sources(cfg)
    n = len(train_src)
    keep_seg = choose_subset(n, cfg.seg_fraction, cfg.seg_count, cfg.seg_frames, cfg.seed, salt=1)
    keep_depth = choose_subset(n, cfg.depth_fraction, cfg.depth_count, cfg.depth_frames, cfg.seed,
                               salt=2)
    size = (cfg.height, cfg.width)
    train = MultiTaskDataset(train_src, size, cfg.augment, keep_seg, keep_depth, pseudo, cfg.seed)
    val = MultiTaskDataset(val_src, size, False, seed=cfg.seed)
    return train, val
