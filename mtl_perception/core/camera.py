"""The one pinhole camera model: point clouds, registration, training transforms and the node.

Intrinsics change whenever an image does: the node resizes to the network size, training resizes,
crops and mirrors, registration projects into another camera. Every one of those places used to
scale K its own way; here each operation is one method, and all of them keep pixel centres aligned
(pixel i covers [i - 0.5, i + 0.5], so a resize maps centre c to (c + 0.5) * s - 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Focal length bounds, as multiples of the image's longer side (see check_intrinsics).
F_MIN = 0.01
F_MAX = 1000.0


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics (pixels) of an image of `width` x `height` pixels; no distortion."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_matrix(cls, K: np.ndarray | Iterable[float], width: int = 0,
                    height: int = 0) -> PinholeCamera:
        """[3, 3] K (or its 9 row-major values) -> camera; ValueError for unusable intrinsics.

        See check_intrinsics for what is refused and why.
        """
        k = np.asarray(list(K) if not isinstance(K, np.ndarray) else K, np.float64).reshape(-1)
        if k.size != 9:
            raise ValueError(f"K needs 9 values, got {k.size}")
        cam = cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))
        if not np.isfinite(k).all():
            raise ValueError(f"K has non-finite values ({', '.join(f'{v:g}' for v in k)})")
        cam.check_intrinsics()
        return cam

    @classmethod
    def from_camera_info(cls, msg: Any, width: int = 0, height: int = 0) -> PinholeCamera:
        """sensor_msgs/CameraInfo (rclpy, rosbags, ROS 1 `K`) -> camera.

        A CameraInfo with width/height 0 is taken at (width, height). Raises ValueError when K has
        no focal length (an uncalibrated camera) or is otherwise unusable (check_intrinsics).
        """
        k = msg.k if hasattr(msg, "k") else msg.K
        return cls.from_matrix(k, int(msg.width) or width, int(msg.height) or height)

    @classmethod
    def from_camera_info_or_none(cls, msg: Any) -> PinholeCamera | None:
        """Like from_camera_info, but None for the all-zero K some drivers publish (or a bad K)."""
        try:
            return cls.from_camera_info(msg)
        except ValueError:
            return None

    def check_intrinsics(self) -> None:
        """ValueError unless these intrinsics can place a point anywhere sensible.

        Every point is ((u - cx) / fx * z, (v - cy) / fy * z, z), so a bad K corrupts the whole
        cloud silently: NaN cx made every point NaN, fx = 1e-30 put points 1e33 m away. Refused:
        non-finite values; negative sizes; focal lengths <= 0 (an uncalibrated camera: the
        all-zero K some drivers publish); and, once the image size is known, focal lengths
        outside [F_MIN, F_MAX] x the longer side (a field of view wider than 177.7 degrees or
        narrower than 0.06: no pinhole camera) and a principal point more than one image size
        outside the image (crops of a larger sensor keep it within that).
        """
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise ValueError(f"intrinsics not finite (fx={self.fx:g}, fy={self.fy:g}, "
                             f"cx={self.cx:g}, cy={self.cy:g})")
        if self.width < 0 or self.height < 0:
            raise ValueError(f"negative image size {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"K has no focal length (fx={self.fx:g}, fy={self.fy:g})")
        if not (self.width and self.height):
            return
        side = max(self.width, self.height)
        lo, hi = F_MIN * side, F_MAX * side
        if not (lo <= self.fx <= hi and lo <= self.fy <= hi):
            raise ValueError(f"focal length fx={self.fx:g}, fy={self.fy:g} outside "
                             f"[{lo:g}, {hi:g}] px for a {self.width}x{self.height} image "
                             f"({F_MIN:g}..{F_MAX:g} x the longer side)")
        if not (-self.width <= self.cx <= 2 * self.width
                and -self.height <= self.cy <= 2 * self.height):
            raise ValueError(f"principal point ({self.cx:g}, {self.cy:g}) is more than one "
                             f"image size outside the {self.width}x{self.height} image")

    # ---- views ------------------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        """(height, width), numpy order."""
        return self.height, self.width

    def matrix(self) -> np.ndarray:
        """float64 [3, 3] K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    # ---- the image operations ---------------------------------------------------------------

    def resized(self, width: int, height: int) -> PinholeCamera:
        """The same camera seen at another resolution (pixel centres stay aligned).

        A camera without a known size (0 x 0) only takes the new size.
        """
        if (width, height) == (self.width, self.height) or not (self.width and self.height):
            return replace(self, width=int(width), height=int(height))
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                             (self.cy + 0.5) * sy - 0.5, int(width), int(height))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> PinholeCamera:
        """The window [x0, x0 + width) x [y0, y0 + height) of this image."""
        return PinholeCamera(self.fx, self.fy, self.cx - x0, self.cy - y0, int(width),
                             int(height))

    def mirrored(self) -> PinholeCamera:
        """Left-right mirrored image (column u -> width - 1 - u)."""
        return replace(self, cx=(self.width - 1) - self.cx)

    def zoomed_out(self, factor: float) -> PinholeCamera:
        """Focal lengths divided by `factor`: the camera whose depth was divided by `factor`.

        Scale augmentation enlarges the image (the scene seen closer) and divides depth by the
        same factor; the camera consistent with both keeps the unaugmented focal length.
        """
        return replace(self, fx=self.fx / factor, fy=self.fy / factor)

    # ---- geometry ---------------------------------------------------------------------------

    def rays(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ray slopes of every `stride`-th pixel: x [W'] and y [H'] (float32).

        A pixel (u, v) at depth z is the point (rx[u] z, ry[v] z, z) in the optical frame.
        """
        u = np.arange(0, self.width, stride, dtype=np.float32)
        v = np.arange(0, self.height, stride, dtype=np.float32)
        return ((u - np.float32(self.cx)) / np.float32(self.fx),
                (v - np.float32(self.cy)) / np.float32(self.fy))

    def back_project(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixel coordinates + depth -> points [3, N] (float64) in the optical frame."""
        z = np.asarray(z, np.float64)
        return np.stack([(u - self.cx) / self.fx * z, (v - self.cy) / self.fy * z, z])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points [3, N] with z > 0 -> pixel coordinates (u, v), float64."""
        X, Y, Z = points
        return self.fx * X / Z + self.cx, self.fy * Y / Z + self.cy

    def same_as(self, other: PinholeCamera, rtol: float = 1e-4, atol: float = 1e-3) -> bool:
        """Same size and (within tolerance) the same intrinsics."""
        return (self.size == other.size
                and np.allclose(self.matrix(), other.matrix(), rtol=rtol, atol=atol))


def scale_projection(P: Iterable[float], sx: float, sy: float) -> list[float]:
    """A CameraInfo P [3, 4] (12 row-major values) for the image resized by (sx, sy).

    Same pixel-centre rule as PinholeCamera.resized; the baseline terms (Tx, Ty) scale with f.
    """
    p = [float(v) for v in P]
    return [p[0] * sx, 0.0, (p[2] + 0.5) * sx - 0.5, p[3] * sx,
            0.0, p[5] * sy, (p[6] + 0.5) * sy - 0.5, p[7] * sy,
            0.0, 0.0, 1.0, 0.0]
