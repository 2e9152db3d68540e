"""Depth + pinhole intrinsics (+ colours, class ids) -> 3-D points, in plain numpy.

Points are in the camera's optical frame (REP 103: x right, y down, z forward), the frame of the
input header, so RViz and TF place them without a transform. The ray directions of a given image
size, intrinsics and stride are computed once and reused; each frame then costs one mask, a few
gathers and multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# RViz convention: rgb is a float32 field whose bytes are the packed uint32 0x00RRGGBB.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"),
                        ("label", "<u4")])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of `width` x `height` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, msg: Any, width: int = 0, height: int = 0) -> Intrinsics:
        """CameraInfo -> Intrinsics; a CameraInfo with width/height 0 is taken at (width, height).

        Raises ValueError when K has no focal length (an uncalibrated camera).
        """
        k = [float(v) for v in msg.k]
        if not (k[0] > 0 and k[4] > 0):
            raise ValueError(f"camera_info K has no focal length (fx={k[0]}, fy={k[4]})")
        w = int(msg.width) or width
        h = int(msg.height) or height
        return cls(k[0], k[4], k[2], k[5], w, h)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera seen at another resolution (pixel centres stay aligned)."""
        if (width, height) == (self.width, self.height) or not (self.width and self.height):
            return Intrinsics(self.fx, self.fy, self.cx, self.cy, width, height)
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 [...] holding 0x00RRGGBB bits (PCL / RViz rgb field)."""
    rgb = rgb.astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return packed.view(np.float32)


class PointCloudBuilder:
    """Back-projects depth maps; caches the per-pixel rays for the last size/intrinsics/stride."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rays: tuple[np.ndarray, np.ndarray] | None = None

    def _rays_for(self, intr: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
        key = (intr, stride)
        if key != self._key or self._rays is None:
            u = np.arange(0, intr.width, stride, dtype=np.float32)
            v = np.arange(0, intr.height, stride, dtype=np.float32)
            rx = (u - np.float32(intr.cx)) / np.float32(intr.fx)  # [W']
            ry = (v - np.float32(intr.cy)) / np.float32(intr.fy)  # [H']
            grid_x = np.broadcast_to(rx[None, :], (v.size, u.size))  # [H', W'] views
            grid_y = np.broadcast_to(ry[:, None], (v.size, u.size))
            self._key, self._rays = key, (grid_x, grid_y)
        return self._rays

    def build(self, depth: np.ndarray, intr: Intrinsics, stride: int = 1, max_depth: float = 0.0,
              rgb: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
        """Depth [H, W] metres -> structured POINT_DTYPE [N] for every `stride`-th pixel.

        Pixels with depth <= 0, non-finite, or beyond `max_depth` (0 = no limit) are left out.
        `rgb` uint8 [H, W, 3] and `labels` [H, W] are sampled at the same pixels (zeros if None).
        """
        h, w = depth.shape
        if (w, h) != (intr.width, intr.height):
            raise ValueError(f"depth is {w}x{h} but intrinsics are for "
                             f"{intr.width}x{intr.height}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        grid_x, grid_y = self._rays_for(intr, stride)
        z = depth[::stride, ::stride]  # [H', W'] view
        valid = z > 0  # NaN compares False, so NaN is dropped here too
        if max_depth > 0:
            valid &= z <= max_depth
        else:
            valid &= np.isfinite(z)
        zs = z[valid]  # [N]
        points = np.empty(zs.size, POINT_DTYPE)
        points["z"] = zs
        points["x"] = grid_x[valid] * zs
        points["y"] = grid_y[valid] * zs
        if rgb is not None:
            points["rgb"] = pack_rgb(rgb[::stride, ::stride][valid])
        else:
            points["rgb"] = 0.0
        points["label"] = labels[::stride, ::stride][valid] if labels is not None else 0
        return points
