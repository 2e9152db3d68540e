"""Rigid transforms between camera frames: quaternions, 4x4 matrices and a /tf_static tree.

Convention (tf): T_a_b maps points in frame b into frame a, p_a = T_a_b p_b.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

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


def transform_from_msg(tf: Any) -> np.ndarray:
    """geometry_msgs/Transform (rosbags or rclpy message) -> [4, 4]."""
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

    def add_tf_message(self, msg: Any) -> None:
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
