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


class DepthRegistration:
    """register_depth for one camera pair, with everything that depends only on the cameras
    computed once: per depth pixel the colour-camera ray K_c R K_d^-1 [u, v, 1], so a frame costs
    one multiply-add per coordinate, a divide, and the z-buffer splat (a bag's frames all share
    one pair: extraction builds this once per bag). Calls only read the tables, so threads may
    share one (pass `depth_shape` to build them up front)."""

    def __init__(self, depth_camera: PinholeCamera, colour_camera: PinholeCamera,
                 T_colour_depth: np.ndarray | None = None,
                 depth_shape: tuple[int, int] | None = None) -> None:
        self.depth_camera, self.colour_camera = depth_camera, colour_camera
        T = np.eye(4) if T_colour_depth is None else np.asarray(T_colour_depth, np.float64)
        self.T = T
        self._shape: tuple[int, int] | None = None
        self._rays = np.empty((3, 0))
        Kc = colour_camera.matrix().astype(np.float64)
        self._KcR, self._b = Kc @ T[:3, :3], Kc @ T[:3, 3]  # [3, 3], [3]
        scale = max(colour_camera.fx / depth_camera.fx, colour_camera.fy / depth_camera.fy)
        self.k = int(min(4, max(1, np.ceil(scale - 1e-6))))  # colour pixels per depth pixel
        if depth_shape is not None:  # built now, so threads sharing this never race to build it
            self._rays_for(tuple(depth_shape))

    def _rays_for(self, shape: tuple[int, int]) -> np.ndarray:
        """[3, Hd * Wd] K_c R K_d^-1 [u, v, 1] for every depth pixel (cached per size)."""
        if self._shape != shape:
            h, w = shape
            v, u = np.mgrid[0:h, 0:w]
            ones = np.ones(h * w)
            rays = self.depth_camera.back_project(u.reshape(-1), v.reshape(-1), ones)
            self._rays, self._shape = self._KcR @ rays, shape
        return self._rays

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        """float32 [Hd, Wd] metres -> float32 [H, W] metres in the colour camera."""
        H, W = self.colour_camera.size
        k = self.k
        z = depth.reshape(-1).astype(np.float64)  # [N], every depth pixel (no gathers)
        rays = self._rays_for(depth.shape)  # [3, N]
        Z = rays[2] * z + self._b[2]  # depth along the colour axis
        hit = (z > 0) & (Z > 1e-6)  # a valid depth pixel in front of the colour camera
        Zs = np.where(hit, Z, 1.0)  # stand-in where not: those never reach the splat
        half = (k - 1) / 2.0 - 0.5
        # the k x k block's corner: floor(u - (k - 1) / 2 + 0.5), clipped so it casts safely
        u0 = np.floor((rays[0] * z + self._b[0]) / Zs - half)
        v0 = np.floor((rays[1] * z + self._b[1]) / Zs - half)
        np.clip(u0, -k - 1, W + 1, out=u0)
        np.clip(v0, -k - 1, H + 1, out=v0)
        ui, vi = u0.astype(np.int64), v0.astype(np.int64)
        base = vi * W + ui
        dump = H * W  # one extra cell receives every splat that misses the image
        out = np.full(dump + 1, np.inf)
        in_u = [(ui >= -du) & (ui < W - du) for du in range(k)]
        for dv in range(k):
            rows = hit & (vi >= -dv) & (vi < H - dv)
            for du in range(k):
                idx = np.where(rows & in_u[du], base + (dv * W + du), dump)
                np.minimum.at(out, idx, Z)
        out = out[:dump]
        out[np.isinf(out)] = 0.0
        return out.reshape(H, W).astype(np.float32)


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
    return DepthRegistration(depth_camera, colour_camera, T_colour_depth)(depth)
