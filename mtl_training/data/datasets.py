"""The Sample contract and the partial-label dataset every source feeds.

A Sample (dict, after transforms) holds `image` float32 [3, H, W] normalised, `depth` float32
[1, H, W] metres (0 = invalid), `seg` int64 [H, W] (255 = ignore), `has_seg` / `has_depth` bools,
`seg_source` ("gt" | "pseudo" | "none") and `meta`. A missing label is flagged, not only filled with
ignore values: losses, weighting and samplers need to see which frames carry which labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = 255


@dataclass
class RawFrame:
    """One frame as a source delivers it, before resizing."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray | None  # float32 [H, W] metres, 0 = invalid
    seg: np.ndarray | None  # uint8/uint16 [H, W] class ids, 255 = ignore
    K: np.ndarray | None = None  # float64 [3, 3]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetInfo:
    """What travels from the dataset into checkpoints and the exported artifact."""

    name: str
    classes: list[str]
    palette: list[list[int]]
    max_depth: float


class FrameSource(Protocol):
    """A random-access list of frames (synthetic world, folder, NYUv2, a bag extract...)."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def frame(self, index: int) -> RawFrame: ...


def choose_subset(n: int, fraction: float = 1.0, count: int | None = None,
                  explicit: Sequence[int] | None = None, seed: int = 0, salt: int = 0) -> np.ndarray:
    """Boolean mask of which of `n` frames keep a label: an explicit list, a count or a fraction.

    Reproducible from (seed, salt): the same config always keeps the same frames, and nested
    fractions (5 % inside 10 %) pick nested subsets because both read the same permutation.
    """
    keep = np.zeros(n, dtype=bool)
    if explicit is not None:
        idx = np.asarray(list(explicit), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"label frame index out of range 0..{n - 1}: {idx.min()}..{idx.max()}")
        keep[idx] = True
        return keep
    if count is None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"label fraction must be in [0, 1], got {fraction}")
        count = round(fraction * n)
    if not 0 <= count <= n:
        raise ValueError(f"label count must be in [0, {n}], got {count}")
    order = np.random.default_rng([seed, salt, 7919]).permutation(n)
    keep[order[:count]] = True
    return keep


class PseudoLabels(Protocol):
    """Pseudo-label store lookup (see mtl_training.pseudo_label)."""

    def get(self, frame_id: str) -> np.ndarray | None: ...


class MultiTaskDataset(Dataset):
    """Frames + which labels each keeps + transforms -> Samples.

    `keep_seg` / `keep_depth` hide labels the experiment pretends not to have (they stay on disk,
    so pseudo-label accuracy can still be measured against them). Ground truth wins over a
    pseudo-label where both exist.
    """

    def __init__(self, source: FrameSource, size: tuple[int, int], augment: bool = False,
                 keep_seg: np.ndarray | None = None, keep_depth: np.ndarray | None = None,
                 pseudo: PseudoLabels | None = None, seed: int = 0) -> None:
        self.source = source
        self.info = source.info
        self.size = size
        self.augment = augment
        n = len(source)
        self.keep_seg = np.ones(n, bool) if keep_seg is None else np.asarray(keep_seg, bool)
        self.keep_depth = np.ones(n, bool) if keep_depth is None else np.asarray(keep_depth, bool)
        self.pseudo = pseudo
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Vary augmentation per epoch while staying reproducible."""
        self.epoch = epoch

    def frame_id(self, index: int) -> str:
        return str(self.source.frame(index).meta.get("frame_id", f"{index:06d}"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        from mtl_training.data.transforms import make_sample

        raw = self.source.frame(index)
        frame_id = str(raw.meta.get("frame_id", f"{index:06d}"))
        seg, seg_source = None, "none"
        if raw.seg is not None and self.keep_seg[index]:
            seg, seg_source = raw.seg, "gt"
        elif self.pseudo is not None:
            pl = self.pseudo.get(frame_id)
            if pl is not None:
                seg, seg_source = pl, "pseudo"
        depth = raw.depth if self.keep_depth[index] else None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = make_sample(raw.rgb, depth, seg, self.size, raw.K, self.augment, rng)
        sample["seg_source"] = seg_source
        sample["meta"] = {"index": index, "frame_id": frame_id, **raw.meta}
        return sample


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
