"""The partial-label dataset every frame source feeds (Samples: mtl_perception.core.contracts).

Which frames keep which label is decided here, reproducibly from a seed; ground truth wins over
a pseudo-label where both exist; a teacher's view keeps only frames carrying both labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from mtl_perception.core.contracts import FrameSource
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.config import ConfigError
from mtl_training.data.transforms import make_sample

# label_subsets draws seg with salt 1 and depth with salt 2: the task whose config keys an error
# names (data.seg_frames, data.depth_count, ...)
SUBSET_TASKS = {1: "seg", 2: "depth"}


def choose_subset(n: int, fraction: float = 1.0, count: int | None = None,
                  explicit: Sequence[int] | None = None, seed: int = 0,
                  salt: int = 0) -> np.ndarray:
    """Boolean mask of which of `n` frames keep a label: an explicit list, a count or a fraction.

    Reproducible from (seed, salt): the same config always keeps the same frames, and nested
    fractions (5 % inside 10 %) pick nested subsets because both read the same permutation.
    Out-of-range values raise ConfigError naming the data.* key: only here is `n` (the training
    split's length, e.g. a folder dataset's) known.
    """
    task = SUBSET_TASKS.get(salt, "label")
    keep = np.zeros(n, dtype=bool)
    if explicit is not None:
        idx = np.asarray(list(explicit), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ConfigError(f"data.{task}_frames: frame index out of range, must be in "
                              f"[0, {n - 1}] (the training split has {n} frames), got "
                              f"{idx.min()}..{idx.max()}")
        keep[idx] = True
        return keep
    if count is None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"data.{task}_fraction: must be a number in [0, 1], got {fraction}")
        count = round(fraction * n)
    if not 0 <= count <= n:
        raise ConfigError(f"data.{task}_count: must be an integer in [0, {n}] (the training split "
                          f"has {n} frames), got {count}")
    order = np.random.default_rng([seed, salt, 7919]).permutation(n)
    keep[order[:count]] = True
    return keep


class PseudoLabels(Protocol):
    """Pseudo-label store lookup (mtl_training.pseudo.store.PseudoLabelStore implements it)."""

    def get(self, frame_id: str) -> np.ndarray | None: ...


class MultiTaskDataset(Dataset):
    """Frames + which labels each keeps + transforms -> Samples.

    `keep_seg` / `keep_depth` hide labels the experiment pretends not to have (they stay on disk,
    so pseudo-label accuracy can still be measured against them). Ground truth wins over a
    pseudo-label where both exist. `stats`: the input normalisation of the model it feeds.
    """

    def __init__(self, source: FrameSource, size: tuple[int, int], augment: bool = False,
                 keep_seg: np.ndarray | None = None, keep_depth: np.ndarray | None = None,
                 pseudo: PseudoLabels | None = None, seed: int = 0,
                 stats: InputStats = IMAGENET_STATS, jitter: float = 0.0) -> None:
        self.source = source
        self.jitter = jitter  # colour jitter strength when augmenting (transforms.colour_jitter)
        self.stats = stats
        self.info = source.info
        self.size = size
        self.augment = augment
        n = len(source)
        self.keep_seg = np.ones(n, bool) if keep_seg is None else np.asarray(keep_seg, bool)
        self.keep_depth = np.ones(n, bool) if keep_depth is None else np.asarray(keep_depth, bool)
        self.pseudo = pseudo
        self.seed = seed
        self.epoch = 0
        # a source whose depth channel holds 1/m (Cityscapes depth_target=inverse) scales the
        # other way under scale-crop
        self.inverse_depth = getattr(source, "depth_target", "depth") == "inverse"

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Vary augmentation per epoch while staying reproducible."""
        self.epoch = epoch

    def frame_id(self, index: int) -> str:
        listed = getattr(self.source, "frame_ids", None)  # nyuv2 / cityscapes: no image read
        if callable(listed):
            return str(listed()[index])
        return str(self.source.frame(index).meta.get("frame_id", f"{index:06d}"))

    def _label(self, gt: np.ndarray | None, keep: bool, task: str, pseudo_task: str,
               frame_id: str) -> tuple[np.ndarray | None, str]:
        """Ground truth when kept, else the store's pseudo-label for this task, else nothing."""
        if gt is not None and keep:
            return gt, "gt"
        if self.pseudo is not None and pseudo_task == task:
            label = self.pseudo.get(frame_id)
            if label is not None:
                return label, "pseudo"
        return None, "none"

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.source.frame(index)
        frame_id = str(raw.meta.get("frame_id", f"{index:06d}"))
        pseudo_task = getattr(self.pseudo, "task", "seg")  # a store holds seg or depth labels
        seg, seg_source = self._label(raw.seg, self.keep_seg[index], "seg", pseudo_task, frame_id)
        depth, depth_source = self._label(raw.depth, self.keep_depth[index], "depth", pseudo_task,
                                          frame_id)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = make_sample(raw.rgb, depth, seg, self.size, raw.K, self.augment, rng,
                             inverse_depth=self.inverse_depth, stats=self.stats,
                             jitter=self.jitter)
        sample["seg_source"] = seg_source
        sample["depth_source"] = depth_source
        sample["meta"] = {"index": index, "frame_id": frame_id, **raw.meta}
        return sample


def label_available(source: FrameSource, index: int, task: str) -> bool:
    """Whether frame `index` of `source` carries the `task` label at all (before any hiding).

    Cheap for indexed sources (folder datasets list their files, NYUv2 and Cityscapes answer
    `has_label`); other sources load the frame.
    """
    entries = getattr(source, "frames", None)
    if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
        if task == "depth" and entries[index].get("depth_max") == 0:
            return False  # listed, but not one valid pixel (a blind sensor's frame)
        return bool(entries[index].get(task))
    has_label = getattr(source, "has_label", None)  # nyuv2 / cityscapes know from their files
    if callable(has_label):
        return bool(has_label(index, task))
    raw = source.frame(index)
    return (raw.seg if task == "seg" else raw.depth) is not None


class LabelledView(Dataset):
    """The frames of a MultiTaskDataset that keep every label in `tasks`, optionally repeated.

    A multi-modal teacher learns only from frames carrying both its input and its target
    (METHOD.md A); with scarce labels that set is tiny, so `min_len` repeats it until one epoch
    holds at least that many samples (otherwise an epoch is one step and validation dominates).
    """

    def __init__(self, base: MultiTaskDataset, tasks: Sequence[str], min_len: int = 0) -> None:
        self.base = base
        self.info = base.info
        self.tasks = tuple(tasks)
        keep = np.ones(len(base), bool)
        for task in self.tasks:
            if task not in ("seg", "depth"):
                raise ValueError(f"Unknown task '{task}' (available: seg, depth)")
            keep &= base.keep_seg if task == "seg" else base.keep_depth
        idx = [i for i in np.flatnonzero(keep)
               if all(label_available(base.source, int(i), t) for t in self.tasks)]
        if not idx:
            raise ValueError(f"no training frame keeps all of {', '.join(self.tasks)}: "
                             "raise data.seg_fraction / data.depth_fraction")
        reps = max(1, -(-min_len // len(idx)))  # ceil
        self.indices = np.tile(np.asarray(idx, np.int64), reps)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[int(self.indices[index])]


def training_view(dataset: Dataset, tasks: Sequence[str] = (), min_len: int = 0) -> Dataset:
    """`dataset` limited to frames keeping `tasks`, repeated to `min_len` (no-op if neither)."""
    if isinstance(dataset, LabelledView):
        if set(tasks) <= set(dataset.tasks) and len(dataset) >= min_len:
            return dataset
        tasks = tuple(dict.fromkeys((*dataset.tasks, *tasks)))
        dataset = dataset.base
    if not tasks and min_len <= len(dataset):
        return dataset
    return LabelledView(dataset, tasks, min_len)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn flags into bool tensors, keep meta and seg_source as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key in ("has_seg", "has_depth"):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(values[0], torch.Tensor) and all(v is not None for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
