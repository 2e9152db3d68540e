"""Datasets with partial labels. `build_datasets(cfg.data)` is the one entry point for training."""

from __future__ import annotations

import numpy as np

from mtl_perception.core.contracts import DatasetInfo, FrameSource
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.config import ConfigError, DataConfig, ModelConfig
from mtl_training.data.datasets import MultiTaskDataset, PseudoLabels, choose_subset
from mtl_training.data.identity import dataset_identity
from mtl_training.data.sources import build_source, build_sources

__all__ = ["build_datasets", "build_source", "build_sources", "build_split",
           "check_depth_range", "datasets_from_sources", "label_subsets"]


def label_subsets(cfg: DataConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep_seg, keep_depth) boolean masks over `n` training frames, from the config."""
    keep_seg = choose_subset(n, cfg.seg_fraction, cfg.seg_count, cfg.seg_frames, cfg.seed, salt=1)
    keep_depth = choose_subset(n, cfg.depth_fraction, cfg.depth_count, cfg.depth_frames, cfg.seed,
                               salt=2)
    return keep_seg, keep_depth


def build_datasets(cfg: DataConfig, pseudo: PseudoLabels | None = None, *,
                   stats: InputStats = IMAGENET_STATS
                   ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """Training split with the configured label subsets and augmentation; a fully labelled,
    unaugmented validation split. `stats`: the model's input normalisation
    (backbones.encoder_input_stats of its encoder)."""
    return datasets_from_sources(cfg, build_sources(cfg), pseudo, stats=stats)


def datasets_from_sources(cfg: DataConfig, sources: tuple[FrameSource, FrameSource],
                          pseudo: PseudoLabels | None = None, *,
                          stats: InputStats = IMAGENET_STATS
                          ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """As `build_datasets`, over (train, val) sources the caller already holds: a study that
    trains many configurations renders or reads its frames once and shares them.

    A pseudo-label store with a `check_dataset` method (PseudoLabelStore) is first shown the
    training source's identity and refuses, in one line, labels made from another dataset."""
    train_src, val_src = sources
    check = getattr(pseudo, "check_dataset", None)  # a store that records its dataset
    if check is not None:  # refuse labels made from another dataset (ids alone would match)
        check(dataset_identity(train_src))
    keep_seg, keep_depth = label_subsets(cfg, len(train_src))
    size = (cfg.height, cfg.width)
    train = MultiTaskDataset(train_src, size, cfg.augment, keep_seg, keep_depth, pseudo, cfg.seed,
                             stats)
    val = MultiTaskDataset(val_src, size, False, seed=cfg.seed, stats=stats)
    return train, val


def build_split(cfg: DataConfig, split: str, *, stats: InputStats = IMAGENET_STATS
                ) -> MultiTaskDataset:
    """One split (`train`, `val`, `test`) as evaluation reads it: every label, no augmentation."""
    return MultiTaskDataset(build_source(cfg, split), (cfg.height, cfg.width), False,
                            seed=cfg.seed, stats=stats)


def check_depth_range(model: ModelConfig, info: DatasetInfo) -> None:
    """model.max_depth (the depth head's upper bound) must cover the dataset's depth range:
    a head bounded below the data saturates and cannot learn the far pixels."""
    if "depth" in model.tasks and model.max_depth < info.max_depth:
        raise ConfigError(f"model.max_depth: {model.max_depth:g} but dataset '{info.name}' has "
                          f"depth up to {info.max_depth:g} (its max_depth): set "
                          f"model.max_depth={info.max_depth:g}, or data.max_depth lower to "
                          "treat farther depth as invalid")
