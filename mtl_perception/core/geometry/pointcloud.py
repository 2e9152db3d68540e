"""Depth + pinhole intrinsics (+ colours, class ids) -> 3-D points, in plain numpy.

Points are in the camera's optical frame (REP 103: x right, y down, z forward), the frame of the
input header, so RViz and TF place them without a transform. The ray directions of a given image
size, intrinsics and stride are computed once and reused; each frame then costs one mask, a few
gathers and multiplies.
"""

from __future__ import annotations

import numpy as np

from mtl_perception.core.camera import PinholeCamera

# RViz convention: rgb is a float32 field whose bytes are the packed uint32 0x00RRGGBB.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"),
                        ("label", "<u4")])


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

    def _rays_for(self, camera: PinholeCamera, stride: int) -> tuple[np.ndarray, np.ndarray]:
        key = (camera, stride)
        if key != self._key or self._rays is None:
            rx, ry = camera.rays(stride)  # [W'], [H']
            grid_x = np.broadcast_to(rx[None, :], (ry.size, rx.size))  # [H', W'] views
            grid_y = np.broadcast_to(ry[:, None], (ry.size, rx.size))
            self._key, self._rays = key, (grid_x, grid_y)
        return self._rays

    def build(self, depth: np.ndarray, camera: PinholeCamera, stride: int = 1,
              max_depth: float = 0.0, rgb: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        """Depth [H, W] metres -> structured POINT_DTYPE [N] for every `stride`-th pixel.

        Pixels with depth <= 0, non-finite, or beyond `max_depth` (0 = no limit) are left out.
        `rgb` uint8 [H, W, 3] and `labels` [H, W] are sampled at the same pixels (zeros if None).
        """
        h, w = depth.shape
        if (w, h) != (camera.width, camera.height):
            raise ValueError(f"depth is {w}x{h} but the camera is {camera.width}x{camera.height}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        grid_x, grid_y = self._rays_for(camera, stride)
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
