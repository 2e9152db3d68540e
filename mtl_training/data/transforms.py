"""Frame -> Sample: resize, augment, normalise. Shared by training, evaluation and the node.

The node's preprocessing (mtl_perception.inference) uses `normalize_rgb` with the mean/std stored in
the artifact, so a model sees the same input statistics on the robot as in training.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from mtl_training.data.datasets import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)  # METHOD.md B scale-crop augmentation


def normalize_rgb(rgb: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float32 [3, H, W], normalised."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def scale_intrinsics(K: np.ndarray, sx: float, sy: float, ox: float = 0.0, oy: float = 0.0
                     ) -> np.ndarray:
    """Intrinsics after scaling by (sx, sy), then cropping at offset (ox, oy) in the new image."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5 - ox
    K2[1, 1] *= sy
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5 - oy
    return K2


def make_sample(rgb: np.ndarray, depth: np.ndarray | None, seg: np.ndarray | None,
                size: tuple[int, int], K: np.ndarray | None = None, augment: bool = False,
                rng: np.random.Generator | None = None) -> dict:
    """Resize (and optionally flip / scale-crop) one frame to the network size `(H, W)`.

    Depth and labels are resized with nearest neighbour: interpolating depth across an object edge
    invents surfaces that do not exist, and interpolating class ids is meaningless.
    """
    h, w = size
    rng = rng or np.random.default_rng()
    scale = float(rng.choice(SCALES)) if augment else 1.0
    sh, sw = round(h * scale), round(w * scale)
    sy, sx = sh / rgb.shape[0], sw / rgb.shape[1]
    rgb_r = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
    depth_r = (None if depth is None
               else cv2.resize(depth, (sw, sh), interpolation=cv2.INTER_NEAREST))
    seg_r = None if seg is None else cv2.resize(seg, (sw, sh), interpolation=cv2.INTER_NEAREST)
    oy = int(rng.integers(0, sh - h + 1)) if sh > h else 0
    ox = int(rng.integers(0, sw - w + 1)) if sw > w else 0
    crop = (slice(oy, oy + h), slice(ox, ox + w))
    rgb_r = rgb_r[crop]
    if depth_r is not None:
        # a scaled-up view is the scene seen closer: divide depth so geometry stays consistent
        depth_r = depth_r[crop] / scale
    if seg_r is not None:
        seg_r = seg_r[crop]
    K_r = None
    if K is not None:
        # with depth divided by `scale`, the consistent camera keeps the unaugmented focal length
        K_r = scale_intrinsics(K, sx, sy, ox, oy)
        K_r[0, 0] /= scale
        K_r[1, 1] /= scale
    if augment and rng.random() < 0.5:
        rgb_r = rgb_r[:, ::-1]
        depth_r = None if depth_r is None else depth_r[:, ::-1]
        seg_r = None if seg_r is None else seg_r[:, ::-1]
        if K_r is not None:
            K_r[0, 2] = (w - 1) - K_r[0, 2]
    sample = {
        "image": torch.from_numpy(normalize_rgb(np.ascontiguousarray(rgb_r))),
        "depth": torch.from_numpy(np.ascontiguousarray(depth_r, dtype=np.float32))[None]
        if depth_r is not None else torch.zeros(1, h, w),
        "seg": torch.from_numpy(np.ascontiguousarray(seg_r).astype(np.int64))
        if seg_r is not None else torch.full((h, w), IGNORE_INDEX, dtype=torch.int64),
        "has_depth": depth_r is not None,
        "has_seg": seg_r is not None,
    }
    if K_r is not None:
        sample["K"] = torch.from_numpy(K_r.astype(np.float32))
    return sample
