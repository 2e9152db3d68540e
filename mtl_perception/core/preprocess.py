"""The one preprocessing spec: network input size, channel order, normalisation statistics.

Training writes it into the artifact (`input`), the Predictor reads it back, and both turn a frame
into a network input through the same two functions below, so a model sees on the robot exactly
the tensor it saw in training (test_preprocess_parity checks it for the same frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# (mean, std) per channel on 0..1 values: what an encoder family expects
# (mtl_perception.core.models.backbones.ENCODER_INPUT_STATS)
InputStats = tuple[tuple[float, float, float], tuple[float, float, float]]
IMAGENET_STATS: InputStats = (IMAGENET_MEAN, IMAGENET_STD)
CHANNEL_ORDERS = ("rgb", "bgr")


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [height, width, 3]; area filter when shrinking, bilinear when growing.

    Returns the input itself (no copy) when it already has the size.
    """
    if rgb.shape[:2] == (height, width):
        return rgb
    interp = cv2.INTER_AREA if width < rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB frame becomes the network input (stored in the artifact as `input`)."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, on 0..1 values
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "rgb"  # what the network expects; frames always arrive as RGB

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [height, width, 3] (a view when already there)."""
        return resize_rgb(rgb, self.height, self.width)

    def normalize(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 [h, w, 3] RGB (any size) -> float32 [h, w, 3], channels in network order.

        Writes into `out` (float32, same shape) when given, so a caller serving frames allocates
        nothing per frame. (x - 255 mean) / (255 std) in float32, the same arithmetic for
        training and inference.
        """
        if self.channel_order == "bgr":
            rgb = rgb[..., ::-1]
        if out is None:
            out = np.empty(rgb.shape, np.float32)
        np.subtract(rgb, np.asarray(self.mean, np.float32) * np.float32(255.0), out=out,
                    casting="unsafe")
        np.multiply(out, np.float32(1.0) / (np.asarray(self.std, np.float32) * np.float32(255.0)),
                    out=out)
        return out

    def to_chw(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [h, w, 3] -> contiguous float32 [3, h, w]: the training sample's `image`."""
        return np.ascontiguousarray(self.normalize(rgb).transpose(2, 0, 1))

    def denormalize(self, image: np.ndarray) -> np.ndarray:
        """float [3, h, w] network input -> uint8 [h, w, 3] RGB, for pictures."""
        x = np.asarray(image, np.float32).transpose(1, 2, 0)
        x = x * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    # ---- the artifact's `input` section ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "mean": list(self.mean),
                "std": list(self.std), "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Unvalidated; mtl_perception.core.artifact validates the artifact's copy first."""
        return cls(int(d["height"]), int(d["width"]), _triple(d.get("mean", IMAGENET_MEAN)),
                   _triple(d.get("std", IMAGENET_STD)), str(d.get("channel_order", "rgb")))


def _triple(v: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return a, b, c
