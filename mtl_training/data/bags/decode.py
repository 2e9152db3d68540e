"""Bag messages -> arrays: colour (Image or CompressedImage) and label ids.

The conversions are the core codecs the node uses (mtl_perception.core.codecs), so a bag frame
and a live frame decode identically: depth is `codecs.depth_image_to_metres` with the bag's
16-bit scale, and only the label image's resize to the colour frame is added here. Every failure
raises (ImageConversionError / ValueError): the reader counts it per topic and goes on.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from mtl_perception.core.codecs import compressed_to_rgb, image_to_array, image_to_rgb
from mtl_training.data.bags.reader import COMPRESSED

REP118_SCALE = 0.001  # metres per unit of 16-bit depth unless the bag or the config says otherwise


def decode_colour(msg: Any, msgtype: str) -> np.ndarray:
    """Image or CompressedImage -> uint8 [H, W, 3] RGB."""
    return compressed_to_rgb(msg) if msgtype == COMPRESSED else image_to_rgb(msg)


def decode_label(msg: Any, hw: tuple[int, int]) -> np.ndarray:
    """One-channel Image of class ids -> [H, W] at the colour frame's size (nearest, ids kept)."""
    arr = np.ascontiguousarray(image_to_array(msg))
    if arr.ndim != 2:
        raise ValueError(f"label image must have one channel, got {msg.encoding}")
    if arr.shape != tuple(hw):
        arr = cv2.resize(arr, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return arr
