"""Depth -> colour registration and the static transforms it needs.

A depth sensor and a colour camera are two cameras: different intrinsics, often a different
resolution and a few centimetres apart. Depth is only ground truth for the colour image after every
depth pixel is lifted to 3D, moved into the colour camera frame and projected with the colour
intrinsics. Lens distortion is not modelled (RealSense and most depth drivers publish rectified
streams); see `register_depth`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> rotation matrix [3, 3] (normalised first)."""
    x, y, z, w = (float(v) for v in q)
    n = np.sqrt(x * x + y * y + z * z + w * w)
    if n < 1e-12:
        raise ValueError("zero-length quaternion")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def make_transform(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """[4, 4] homogeneous transform from a translation and an (x, y, z, w) quaternion."""
    T = np.eye(4)
    T[:3, :3] = quaternion_matrix(quaternion)
    T[:3, 3] = [float(v) for v in translation]
    return T


def invert(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def transform_from_msg(tf) -> np.ndarray:
    """geometry_msgs/Transform (rosbags message) -> [4, 4]."""
    t, r = tf.translation, tf.rotation
    return make_transform((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


class StaticTransforms:
    """A /tf_static tree: look up the transform between any two connected frames.

    Edges follow tf: a transform with parent P and child C maps points in C into P
    (p_P = T p_C), so `lookup(target, source)` returns T with p_target = T p_source.
    """

    def __init__(self) -> None:
        self.edges: dict[str, list[tuple[str, np.ndarray]]] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        self.edges.setdefault(parent, []).append((child, T_parent_child))
        self.edges.setdefault(child, []).append((parent, invert(T_parent_child)))

    def add_tf_message(self, msg) -> None:
        """tf2_msgs/TFMessage with TransformStamped entries."""
        for ts in msg.transforms:
            self.add(ts.header.frame_id, ts.child_frame_id, transform_from_msg(ts.transform))

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        seen = {target}
        queue: deque[tuple[str, np.ndarray]] = deque([(target, np.eye(4))])
        while queue:  # breadth first: T accumulates p_target = T p_frame
            frame, T = queue.popleft()
            for nxt, T_frame_nxt in self.edges.get(frame, ()):
                if nxt in seen:
                    continue
                T_next = T @ T_frame_nxt
                if nxt == source:
                    return T_next
                seen.add(nxt)
                queue.append((nxt, T_next))
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.edges.values()) // 2


def needs_registration(K_depth: np.ndarray, K_colour: np.ndarray, depth_hw: tuple[int, int],
                       colour_hw: tuple[int, int], T_colour_depth: np.ndarray | None) -> bool:
    """False when depth is already pixel-aligned with colour (same size, K and pose)."""
    if tuple(depth_hw) != tuple(colour_hw):
        return True
    if not np.allclose(K_depth, K_colour, rtol=1e-4, atol=1e-3):
        return True
    return T_colour_depth is not None and not np.allclose(T_colour_depth, np.eye(4), atol=1e-6)


def register_depth(depth: np.ndarray, K_depth: np.ndarray, K_colour: np.ndarray,
                   colour_hw: tuple[int, int], T_colour_depth: np.ndarray | None = None
                   ) -> np.ndarray:
    """Re-project a depth image into the colour camera.

    Args:
        depth: float32 [Hd, Wd] metres, 0 = invalid.
        K_depth, K_colour: [3, 3] pinhole intrinsics.
        colour_hw: (H, W) of the colour image.
        T_colour_depth: [4, 4] with p_colour = T p_depth; None = co-located cameras.

    Returns:
        float32 [H, W] metres along the colour optical axis, 0 where no depth pixel lands.
        Where several depth pixels land on one colour pixel the nearest wins (occlusion). Each
        depth pixel covers ceil(f_colour / f_depth) colour pixels so an upsampled depth image
        does not come out as a sparse grid.
    """
    H, W = int(colour_hw[0]), int(colour_hw[1])
    T = np.eye(4) if T_colour_depth is None else np.asarray(T_colour_depth, np.float64)
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    x = (u - K_depth[0, 2]) / K_depth[0, 0] * z
    y = (v - K_depth[1, 2]) / K_depth[1, 1] * z
    P = T[:3, :3] @ np.stack([x, y, z]) + T[:3, 3:4]  # [3, N] in the colour frame
    front = P[2] > 1e-6
    X, Y, Z = P[0, front], P[1, front], P[2, front]
    uc = K_colour[0, 0] * X / Z + K_colour[0, 2]
    vc = K_colour[1, 1] * Y / Z + K_colour[1, 2]
    scale = max(K_colour[0, 0] / K_depth[0, 0], K_colour[1, 1] / K_depth[1, 1])
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


def intrinsics_from_info(k: Iterable[float]) -> np.ndarray | None:
    """CameraInfo.k (or ROS 1 K) -> [3, 3]; None when unset (all zeros, as some drivers publish)."""
    K = np.asarray(list(k), np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return None
    return K
