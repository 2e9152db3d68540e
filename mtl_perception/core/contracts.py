"""The contracts every layer shares: the ignore index, task names, a raw frame, a dataset's info.

Training samples (mtl_training.data) and the deployed node both speak these, so they live below
both. A Sample (the dict a training dataset yields after transforms) holds `image` float32
[3, H, W] normalised (see preprocess.PreprocessSpec), `depth` float32 [1, H, W] metres
(0 = invalid), `seg` int64 [H, W] (IGNORE_INDEX = ignore), `has_seg` / `has_depth` bools,
`seg_source` / `depth_source` ("gt" | "pseudo" | "none"), optionally `K` [3, 3] and `meta`.
A missing label is flagged, not only filled with ignore values: losses, weighting and samplers
need to see which frames carry which labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

IGNORE_INDEX = 255  # class id of "no label" in every label map, ground truth or pseudo
TASKS: tuple[str, ...] = ("seg", "depth")  # the tasks a network can predict
LABEL_SOURCES: tuple[str, ...] = ("gt", "pseudo", "none")


@dataclass
class RawFrame:
    """One frame as a source delivers it, before resizing."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray | None  # float32 [H, W] metres, 0 = invalid
    seg: np.ndarray | None  # uint8/uint16 [H, W] class ids, 255 = ignore
    K: np.ndarray | None = None  # float64 [3, 3] (camera.PinholeCamera.from_matrix reads it)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordedFrame:
    """One recorded colour frame with its ground truth, as a bag reader yields it for extraction
    (training) and for replay through the node."""

    stamp_ns: int
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray | None  # float32 [H, W] metres in the colour camera, 0 = invalid
    seg: np.ndarray | None  # class ids [H, W], 255 = ignore
    K: np.ndarray | None  # colour intrinsics [3, 3]
    frame_id: str
    depth_stamp_ns: int | None = None


@dataclass
class DatasetInfo:
    """What travels from the dataset into checkpoints and the exported artifact."""

    name: str
    classes: list[str]
    palette: list[list[int]]
    max_depth: float


class FrameSource(Protocol):
    """A random-access list of frames (synthetic world, folder, a bag extract...)."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def frame(self, index: int) -> RawFrame: ...
