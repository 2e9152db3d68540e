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
        """float32 [Hd, Wd] metres -> float32 [H, W] metres in the colour camera.

        Each valid depth pixel covers the k x k block whose corner is floor(u - (k - 1) / 2 +
        0.5), nearest depth winning. The z-buffer is taken once per block corner (one scatter-
        min over the depth pixels), then the k x k blocks are laid out as k^2 shifted minima of
        that corner grid over the whole image: the same result as splatting every block pixel,
        with k^2 dense passes instead of k^2 scatters (the slow part of numpy).
        """
        H, W = self.colour_camera.size
        k, pad = self.k, self.k - 1
        z = depth.reshape(-1)
        rays = self._rays_for(depth.shape)  # [3, N]
        sel = np.flatnonzero(np.isfinite(z) & (z > 0))  # valid depth pixels
        zv = z[sel].astype(np.float64)
        Z = rays[2, sel] * zv + self._b[2]  # depth along the colour axis
        front = Z > 1e-6  # in front of the colour camera
        if not front.all():
            sel, zv, Z = sel[front], zv[front], Z[front]
        half = (k - 1) / 2.0 - 0.5
        u0 = np.floor((rays[0, sel] * zv + self._b[0]) / Z - half)
        v0 = np.floor((rays[1, sel] * zv + self._b[1]) / Z - half)
        # blocks that touch the image: corner in [-pad, W) x [-pad, H)
        touch = (u0 >= -pad) & (u0 < W) & (v0 >= -pad) & (v0 < H)
        Wp = W + pad
        v0 += pad
        v0 *= Wp
        v0 += u0
        v0 += pad  # the corner's cell in the padded grid (exact: integers in float64)
        Zc = Z.astype(np.float32)
        if not touch.all():
            v0, Zc = v0[touch], Zc[touch]
        corners = np.full((H + pad) * Wp, np.inf, np.float32)
        np.minimum.at(corners, v0.astype(np.intp), Zc)
        corners = corners.reshape(H + pad, Wp)
        # pixel (y, x) is covered by the blocks with corner (y - dv, x - du), 0 <= dv, du < k
        out = corners[pad:pad + H, pad:pad + W].copy()
        for dv in range(k):
            for du in range(k):
                if dv or du:
                    np.minimum(out, corners[pad - dv:pad - dv + H, pad - du:pad - du + W],
                               out=out)
        out[np.isinf(out)] = 0.0
        return out


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
