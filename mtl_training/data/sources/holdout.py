"""Which frames of an official split train, which validate: one rule for every dataset.

Benchmarks ship a train and a test split (NYUv2 795/654; Cityscapes' labelled val is every
paper's test set). Choosing best.pt on the split that is then reported makes the reported number
optimistic, so the validation split is held out of the training frames (data.val_fraction,
seeded), and `test` is only read by `mtl-train evaluate --split test`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from mtl_perception.core.contracts import DatasetInfo, RawFrame
from mtl_training.config import ConfigError, DataConfig

SPLITS = ("train", "val", "test")
log = logging.getLogger("mtl_training.data")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}' (available: {', '.join(SPLITS)})")


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted indices of `n` frames: round(fraction x n) held out (at least one
    when fraction > 0 and n > 1, never all), the same ones for the same seed."""
    k = round(fraction * n)
    if fraction > 0 and n > 1:
        k = min(max(k, 1), n - 1)
    order = np.random.default_rng([seed, 104729]).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def official_split_indices(cfg: DataConfig, split: str, train: np.ndarray,
                           test: np.ndarray, name: str) -> np.ndarray:
    """Frame indices of our `split` given a dataset's official train and test indices.

    train = official train minus the held-out validation frames (then data.train_count of them,
    seeded: Erkent's 500-frame and the Cityscapes 300-image settings); val = the held-out frames
    (data.val_fraction of official train); test = official test. data.val_fraction = 0 validates
    on test, as MTAN / LibMTL do, with a warning.
    """
    check_split(split)
    if split == "test":
        return np.asarray(test)
    if cfg.val_fraction == 0:
        if split == "val":
            log.warning("%s: data.val_fraction is 0, so best.pt is chosen on the test split "
                        "(MTAN/LibMTL practice) and test scores are optimistic; set "
                        "data.val_fraction > 0 to hold validation frames out of train", name)
            return np.asarray(test)
        kept = np.arange(len(train))
    else:
        kept, held = holdout(len(train), cfg.val_fraction, cfg.seed)
        if split == "val":
            return np.asarray(train)[held]
    if cfg.train_count is not None:
        if cfg.train_count > len(kept):
            raise ConfigError(f"data.train_count: {cfg.train_count} but {name} has {len(kept)} "
                              "training frames after the validation hold-out")
        pick = np.random.default_rng([cfg.seed, 1299709]).permutation(len(kept))
        kept = np.sort(kept[pick[:cfg.train_count]])
    return np.asarray(train)[kept]


class IndexedSource:
    """Frames `indices` of a dataset reader `read(i) -> RawFrame`, as a FrameSource."""

    def __init__(self, info: DatasetInfo, indices: Sequence[int],
                 read: Callable[[int], RawFrame], ids: Sequence[str], split: str,
                 depth_target: str = "depth",
                 has_label: Callable[[int, str], bool] | None = None) -> None:
        self.info = info
        self._has_label = has_label  # (dataset index, task) -> bool, without loading a frame
        self.indices = [int(i) for i in indices]
        self._read = read
        self._ids = list(ids)
        self.split = split
        self.depth_target = depth_target  # "inverse": depth channel holds 1/m (transforms)

    def __len__(self) -> int:
        return len(self.indices)

    def frame(self, index: int) -> RawFrame:
        if not 0 <= index < len(self.indices):
            raise IndexError(f"frame {index} out of range 0..{len(self.indices) - 1}")
        return self._read(self.indices[index])

    def has_label(self, index: int, task: str) -> bool:
        """Whether frame `index` carries the `task` label (loads it when the reader cannot say)."""
        if self._has_label is not None:
            return bool(self._has_label(self.indices[index], task))
        f = self.frame(index)
        return (f.seg if task == "seg" else f.depth) is not None

    def frame_ids(self) -> list[str]:
        """Frame ids without loading a frame (dataset identity for pseudo-labels)."""
        return [self._ids[i] for i in self.indices]
