"""Datasets with partial labels. `build_datasets(cfg.data)` is the one entry point for training."""

from __future__ import annotations

import numpy as np

from mtl_perception.core.contracts import DatasetInfo, FrameSource
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.config import ConfigError, DataConfig, ModelConfig
from mtl_training.data.datasets import (
    MultiTaskDataset,
    PseudoLabels,
    choose_subset,
    label_available,
)
from mtl_training.data.identity import dataset_identity
from mtl_training.data.sources import build_source, build_sources

__all__ = ["build_datasets", "build_source", "build_sources", "build_split",
           "check_depth_range", "check_task_labels", "datasets_from_sources", "label_subsets"]

# What a frame needs on disk to carry a task's label, for the refusal of check_task_labels
LABEL_FILES = {"seg": "a segmentation file (Cityscapes: gtFine/*_labelIds.png)",
               "depth": "a depth file with a valid pixel (Cityscapes: disparity/*.png and "
                        "camera/*.json)"}


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
                             stats, jitter=cfg.colour_jitter)
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


def check_task_labels(tasks: list[str], dataset: MultiTaskDataset, key: str = "model.tasks"
                      ) -> None:
    """ConfigError (one line) when a task the model trains has no label on any training frame
    and no pseudo-label store supplies it: its head would stay untrained while the run exits 0
    and evaluate prints "-" for its metrics. Any source; stops at the first labelled frame, so
    a usable dataset costs one cheap look (label_available)."""
    source = getattr(dataset, "source", None)
    if source is None:
        return
    pseudo = getattr(dataset, "pseudo", None)
    pseudo_task = getattr(pseudo, "task", "seg") if pseudo is not None else None
    for task in tasks:
        if task == pseudo_task or any(label_available(source, i, task)
                                      for i in range(len(source))):
            continue
        others = [t for t in tasks if t != task] or ["seg" if task == "depth" else "depth"]
        raise ConfigError(f"{key}: {task} is trained but none of the {len(source)} training "
                          f"frames of '{dataset.info.name}' has {LABEL_FILES[task]}: drop it "
                          f"with model.tasks=[{', '.join(others)}], or provide the files")
