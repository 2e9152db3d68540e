"""Frame -> Sample: resize, augment, normalise (training and pseudo-labelling).

Normalisation is the artifact's PreprocessSpec (mtl_perception.core.preprocess), the same
functions the Predictor runs on the robot; intrinsics follow the image through
mtl_perception.core.camera.PinholeCamera.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats, PreprocessSpec, resize_rgb

SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)  # METHOD.md B scale-crop augmentation
# colour jitter at strength 1: brightness, contrast and per-channel gain (white balance) ranges
JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_CHANNEL = 0.4, 0.3, 0.25


def colour_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Photometric augmentation of uint8 [H, W, 3]: brightness x U(1 -/+ 0.4 s), contrast
    about the frame's mean x U(1 -/+ 0.3 s), each channel x U(1 -/+ 0.25 s) (a white balance
    or a light's colour cast), clipped to 0..255.

    Why: a robot's camera sees the benchmark's classes under other light, exposure and white
    balance; geometry augmentation alone leaves a network free to key on a source's colours.
    """
    b = rng.uniform(1 - JITTER_BRIGHTNESS * strength, 1 + JITTER_BRIGHTNESS * strength)
    c = rng.uniform(1 - JITTER_CONTRAST * strength, 1 + JITTER_CONTRAST * strength)
    gains = rng.uniform(1 - JITTER_CHANNEL * strength, 1 + JITTER_CHANNEL * strength, 3)
    x = rgb.astype(np.float32)
    mean = float(x.mean())
    x = ((x - mean) * np.float32(c) + np.float32(mean)) * (np.float32(b) * gains.astype(np.float32))
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def make_sample(rgb: np.ndarray, depth: np.ndarray | None, seg: np.ndarray | None,
                size: tuple[int, int], K: np.ndarray | None = None, augment: bool = False,
                rng: np.random.Generator | None = None, *,
                inverse_depth: bool = False, stats: InputStats = IMAGENET_STATS,
                jitter: float = 0.0) -> dict[str, Any]:
    """Resize (and optionally flip / scale-crop) one frame to the network size `(H, W)`.

    Augmentation (METHOD.md B): scale s from SCALES, resize to s x (H, W), random crop back to
    (H, W), then a horizontal flip with p = 0.5. Depth and labels are resized with nearest
    neighbour: interpolating depth across an object edge invents surfaces that do not exist, and
    interpolating class ids is meaningless. `inverse_depth`: the depth channel holds 1/m, which
    a zoom multiplies instead of dividing. `stats`: the (mean, std) normalisation the model's
    encoder expects (backbones.encoder_input_stats), the same the artifact's PreprocessSpec holds.
    `jitter` > 0 (with `augment`): colour_jitter at that strength, drawn after the geometry, so
    a run without it draws exactly what it drew before.
    """
    h, w = size
    rng = rng or np.random.default_rng()
    scale = float(rng.choice(SCALES)) if augment else 1.0
    sh, sw = round(h * scale), round(w * scale)
    rgb_r = resize_rgb(rgb, sh, sw)
    depth_r = (None if depth is None
               else cv2.resize(depth, (sw, sh), interpolation=cv2.INTER_NEAREST))
    seg_r = None if seg is None else cv2.resize(seg, (sw, sh), interpolation=cv2.INTER_NEAREST)
    oy = int(rng.integers(0, sh - h + 1)) if sh > h else 0
    ox = int(rng.integers(0, sw - w + 1)) if sw > w else 0
    crop = (slice(oy, oy + h), slice(ox, ox + w))
    rgb_r = rgb_r[crop]
    if depth_r is not None:
        # a scaled-up view is the scene seen closer: divide depth so geometry stays consistent
        depth_r = depth_r[crop] * scale if inverse_depth else depth_r[crop] / scale
    if seg_r is not None:
        seg_r = seg_r[crop]
    camera = None
    if K is not None:
        # with depth divided by `scale`, the consistent camera keeps the unaugmented focal length
        camera = (PinholeCamera.from_matrix(K, rgb.shape[1], rgb.shape[0]).resized(sw, sh)
                  .cropped(ox, oy, w, h).zoomed_out(scale))
    if augment and rng.random() < 0.5:
        rgb_r = rgb_r[:, ::-1]
        depth_r = None if depth_r is None else depth_r[:, ::-1]
        seg_r = None if seg_r is None else seg_r[:, ::-1]
        if camera is not None:
            camera = camera.mirrored()
    if augment and jitter > 0:
        rgb_r = colour_jitter(rgb_r, jitter, rng)
    sample = {
        "image": torch.from_numpy(PreprocessSpec(h, w, *stats).to_chw(np.ascontiguousarray(rgb_r))),
        "depth": torch.from_numpy(np.ascontiguousarray(depth_r, dtype=np.float32))[None]
        if depth_r is not None else torch.zeros(1, h, w),
        "seg": torch.from_numpy(np.ascontiguousarray(seg_r).astype(np.int64))
        if seg_r is not None else torch.full((h, w), IGNORE_INDEX, dtype=torch.int64),
        "has_depth": depth_r is not None,
        "has_seg": seg_r is not None,
    }
    if camera is not None:
        sample["K"] = torch.from_numpy(camera.matrix().astype(np.float32))
    return sample
