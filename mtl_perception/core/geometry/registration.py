"""Depth -> colour registration: one camera's depth image re-projected into another camera.

A depth sensor and a colour camera are two cameras: different intrinsics, often a different
resolution and a few centimetres apart. Depth is only ground truth for the colour image after every
depth pixel is lifted to 3D, moved into the colour camera frame and projected with the colour
intrinsics (both through mtl_perception.core.camera.PinholeCamera). Lens distortion is not modelled
(RealSense and most depth drivers publish rectified streams).
"""

from __future__ import annotations

import numpy as np

from mtl_perception.core.camera import PinholeCamera


def needs_registration(depth_camera: PinholeCamera, colour_camera: PinholeCamera,
                       T_colour_depth: np.ndarray | None) -> bool:
    """False when depth is already pixel-aligned with colour (same size, K and pose)."""
    if not depth_camera.same_as(colour_camera):
        return True
    return T_colour_depth is not None and not np.allclose(T_colour_depth, np.eye(4), atol=1e-6)


def register_depth(depth: np.ndarray, depth_camera: PinholeCamera, colour_camera: PinholeCamera,
                   T_colour_depth: np.ndarray | None = None) -> np.ndarray:
    """Re-project a depth image into the colour camera.

    Args:
        depth: float32 [Hd, Wd] metres, 0 = invalid.
        depth_camera: intrinsics of `depth` (its size is taken from `depth`).
        colour_camera: intrinsics and size of the colour image.
        T_colour_depth: [4, 4] with p_colour = T p_depth; None = co-located cameras.

    Returns:
        float32 [H, W] metres along the colour optical axis, 0 where no depth pixel lands.
        Where several depth pixels land on one colour pixel the nearest wins (occlusion). Each
        depth pixel covers ceil(f_colour / f_depth) colour pixels so an upsampled depth image
        does not come out as a sparse grid.
    """
    H, W = colour_camera.size
    T = np.eye(4) if T_colour_depth is None else np.asarray(T_colour_depth, np.float64)
    v, u = np.nonzero(depth > 0)
    P = depth_camera.back_project(u, v, depth[v, u])  # [3, N] in the depth frame
    P = T[:3, :3] @ P + T[:3, 3:4]  # [3, N] in the colour frame
    P = P[:, P[2] > 1e-6]
    Z = P[2]
    uc, vc = colour_camera.project(P)
    scale = max(colour_camera.fx / depth_camera.fx, colour_camera.fy / depth_camera.fy)
    k = int(min(4, max(1, np.ceil(scale - 1e-6))))
    u0 = np.floor(uc - (k - 1) / 2.0 + 0.5).astype(np.int64)
    v0 = np.floor(vc - (k - 1) / 2.0 + 0.5).astype(np.int64)
    out = np.full(H * W, np.inf)
    for du in range(k):
        for dv in range(k):
            ui, vi = u0 + du, v0 + dv
            ok = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
            np.minimum.at(out, vi[ok] * W + ui[ok], Z[ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(H, W).astype(np.float32)
