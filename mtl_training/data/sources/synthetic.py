"""Procedural indoor RGB-D world, rendered by vectorised ray casting in numpy.

Why this exists: the whole pipeline (teacher, pseudo-labels, student, export, node) needs data with
exact dense labels that costs nothing to download and runs on a laptop CPU in tests. Every frame
is a pure function of ``(seed, index, cfg)``, so a dataset is two integers, not a folder.

Design goal: colour alone must NOT identify the class. Every surface (floor, each wall, ceiling,
every piece of furniture) draws its albedo and texture from one class-independent distribution.
Classes differ only by geometry (height, orientation, size, shape), which a depth input reveals.
That makes the RGB+depth teacher genuinely stronger than an RGB-only model, which is the premise of
teacher -> pseudo-label -> student distillation.

Conventions: world is z-up with the floor at z=0 and the room spanning ``[0, Lx] x [0, Ly] x
[0, Lz]``. The camera follows OpenCV (x right, y down, z forward); ``Frame.T_world_cam`` maps camera
coordinates to world coordinates. Pixel ``(u, v)`` (column, row) has its ray through the pixel
centre, so back-projection is ``depth * K^-1 [u, v, 1]`` with integer ``u, v``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtl_perception.core.contracts import IGNORE_INDEX, DatasetInfo, RawFrame
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources.folder import read_index, write_frame, write_index
from mtl_training.data.sources.holdout import check_split
from mtl_training.data.sources.world_style import WorldStyle, world_style

__all__ = ["CLASSES", "IGNORE_INDEX", "PALETTE", "Frame", "SyntheticSource", "WorldConfig",
           "render_frame", "write_synthetic_folder"]

CLASSES: tuple[str, ...] = ("floor", "wall", "ceiling", "table", "cabinet", "box", "ball")
# Display colours for overlays only; the rendered colours never depend on the class.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (152, 96, 48),  # floor
    (174, 199, 232),  # wall
    (230, 230, 90),  # ceiling
    (255, 127, 14),  # table
    (44, 160, 44),  # cabinet
    (214, 39, 40),  # box
    (148, 103, 189),  # ball
)

_FLOOR, _WALL, _CEILING, _TABLE, _CABINET, _BOX, _BALL = range(len(CLASSES))

# Face codes: 2 * axis + s, where s = 0 means the outward normal is +axis and s = 1 means -axis.
# Code 6 marks a sphere (normal computed from the centre). Room surfaces use the face code as
# their surface id: 0 wall x=0, 1 wall x=Lx, 2 wall y=0, 3 wall y=Ly, 4 floor, 5 ceiling.
_SPHERE_CODE = 6
_FACE_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, 0]],
    dtype=np.float32,
)  # [7, 3]
_ROOM_CLASSES = (_WALL, _WALL, _WALL, _WALL, _FLOOR, _CEILING)

_PATTERN_PLAIN, _PATTERN_STRIPES, _PATTERN_CHECKER, _PATTERN_NOISE = range(4)
_NOISE_WAVES = 3
_CAMERA_KEEP_OUT = 0.45  # metres of free floor around the camera's footprint
_MIN_CLASSES_PER_FRAME = 3
_AIM_ATTEMPTS = 6


@dataclass(frozen=True)
class WorldConfig:
    """Sensor and image settings, and the world's style; the scene distribution of a style is
    fixed by design.

    Attributes:
        height, width: image size in pixels.
        hfov_deg: horizontal field of view; square pixels, so the vertical one follows. None:
            the style's lens (70 degrees in the standard style).
        max_depth: sensor range in metres; farther depth reads 0 (invalid).
        rgb_noise: std of Gaussian pixel noise on the 0..255 scale. None: the style's (4).
        depth_noise: depth noise std at 1 m; grows with z^2 like a structured-light sensor.
        hole_fraction: approximate fraction of depth pixels knocked out as blobs.
        style: `standard` or `robot` (world_style.py: camera mount, light, materials); a
            style other than standard draws its rooms from its own random stream.
    """

    height: int = 120
    width: int = 160
    hfov_deg: float | None = None
    max_depth: float = 10.0
    rgb_noise: float | None = None
    depth_noise: float = 0.01
    hole_fraction: float = 0.03
    style: str = "standard"

    def __post_init__(self) -> None:
        if self.height < 2 or self.width < 2:
            raise ValueError(
                f"WorldConfig: image size must be >= 2x2, got {self.height}x{self.width}"
            )
        world_style(self.style)  # an unknown style fails here, listing the styles
        if not 1.0 <= self.fov_deg <= 170.0:
            raise ValueError(f"WorldConfig: hfov_deg must be in [1, 170], got {self.hfov_deg}")
        if self.max_depth <= 0:
            raise ValueError(f"WorldConfig: max_depth must be > 0 metres, got {self.max_depth}")
        if self.colour_noise < 0 or self.depth_noise < 0:
            raise ValueError("WorldConfig: rgb_noise and depth_noise must be >= 0")
        if not 0.0 <= self.hole_fraction < 1.0:
            raise ValueError(
                f"WorldConfig: hole_fraction must be in [0, 1), got {self.hole_fraction}"
            )

    def with_sensor_noise(self, factor: float) -> WorldConfig:
        """The same world seen by a noisier (factor > 1) or cleaner (< 1) depth sensor.

        Multiplies the sensor model's two error sources (`_sensor_depth`): the z^2 Gaussian noise
        (depth_noise) and the blob dropouts (hole_fraction, capped at 0.5); factor 0 leaves
        noiseless depth with only grazing-angle and out-of-range dropouts. Depth is drawn last
        from a frame's generator, so RGB and segmentation stay bit-identical at every factor.
        """
        if factor < 0:
            raise ValueError(f"WorldConfig: noise factor must be >= 0, got {factor}")
        return replace(self, depth_noise=self.depth_noise * factor,
                       hole_fraction=min(self.hole_fraction * factor, 0.5))

    @property
    def look(self) -> WorldStyle:
        return world_style(self.style)

    @property
    def fov_deg(self) -> float:
        """The horizontal field of view in use: hfov_deg, or the style's lens."""
        return self.look.hfov_deg if self.hfov_deg is None else self.hfov_deg

    @property
    def colour_noise(self) -> float:
        """The colour noise std in use: rgb_noise, or the style's sensor's."""
        return self.look.rgb_noise if self.rgb_noise is None else self.rgb_noise

    def intrinsics(self) -> np.ndarray:
        """Pinhole K [3, 3] (float64) with the principal point at the image centre."""
        fx = 0.5 * self.width / math.tan(math.radians(self.fov_deg) / 2.0)
        return np.array(
            [[fx, 0.0, (self.width - 1) / 2.0], [0.0, fx, (self.height - 1) / 2.0], [0.0, 0.0, 1.0]]
        )


@dataclass
class Frame:
    """One rendered RGB-D frame with exact labels.

    Attributes:
        rgb: uint8 [H, W, 3].
        depth: float32 [H, W] metres along the optical axis (z, not ray length), noisy,
            0 = invalid (holes, grazing dropouts, beyond ``max_depth``).
        seg: uint8 [H, W] class ids into ``CLASSES``; every pixel is labelled (closed room).
        K: float64 [3, 3] pinhole intrinsics for H, W.
        depth_clean: float32 [H, W] noiseless z depth of the same render, > 0 everywhere.
        T_world_cam: float64 [4, 4] camera pose, maps OpenCV camera coordinates to world (z-up).
    """

    rgb: np.ndarray
    depth: np.ndarray
    seg: np.ndarray
    K: np.ndarray
    depth_clean: np.ndarray
    T_world_cam: np.ndarray


@dataclass
class _Scene:
    """Primitives of one room. Surfaces are ordered: 6 room faces, then boxes, then spheres."""

    room: np.ndarray  # [3] float32 (Lx, Ly, Lz)
    box_lo: np.ndarray  # [B, 3] float32
    box_hi: np.ndarray  # [B, 3] float32
    sph_c: np.ndarray  # [S, 3] float32
    sph_r: np.ndarray  # [S] float32
    surf_cls: np.ndarray  # [6 + B + S] uint8
    surf_group: np.ndarray  # [6 + B + S] int, surfaces of one object share a material group


@dataclass
class _Materials:
    """Per-group appearance, all drawn from one class-independent distribution."""

    c1: np.ndarray  # [G, 3] float32 albedo 0..1
    c2: np.ndarray  # [G, 3] float32 second albedo for the pattern
    kind: np.ndarray  # [G] int pattern id
    period: np.ndarray  # [G] float32 metres
    rot: np.ndarray  # [G, 2] float32 (cos, sin) of the pattern angle
    offset: np.ndarray  # [G, 2] float32 metres
    wave_k: np.ndarray  # [G, _NOISE_WAVES, 2] float32 wave vectors (cycles per period)
    wave_phase: np.ndarray  # [G, _NOISE_WAVES] float32 radians


def render_frame(seed: int, index: int, cfg: WorldConfig = WorldConfig()) -> Frame:
    """Render frame ``index`` of the world family ``seed``.

    Deterministic: all randomness comes from ``np.random.default_rng([seed, index])`` (a style
    other than standard appends its own stream id), so the same arguments give bit-identical
    arrays on any machine with the same numpy.

    Args:
        seed: dataset seed (non-negative).
        index: frame index (non-negative); each index is an independent room and camera.
        cfg: image and sensor settings.

    Returns:
        The ``Frame`` with noisy RGB and depth, exact labels, intrinsics and camera pose.
    """
    if seed < 0 or index < 0:
        raise ValueError(
            f"render_frame: seed and index must be >= 0, got seed={seed} index={index}"
        )
    style = cfg.look
    rng = np.random.default_rng([seed, index, *style.stream])
    K = cfg.intrinsics()
    scene, cam_pos = _sample_scene(rng, style)
    materials = _sample_materials(rng, int(scene.surf_group.max()) + 1, style)
    d_cam = _camera_rays(K, cfg.height, cfg.width)  # [3, H*W], z component 1

    # Aim the camera; retry a few orientations so every frame shows at least three classes.
    # Arrays are channel-first ([3, H, W]) so every per-component operation is contiguous.
    for _ in range(_AIM_ATTEMPTS):
        R_wc = _sample_orientation(rng, scene, cam_pos, style)
        # [3, H, W] world directions, still scaled so that the ray parameter is z depth
        dirs = (R_wc.astype(np.float32) @ d_cam).reshape(3, cfg.height, cfg.width)
        t, face, sid = _cast(scene, cam_pos, dirs, R_wc, K)
        seg = scene.surf_cls[sid]  # [H, W]
        present = np.count_nonzero(np.bincount(seg.ravel(), minlength=len(CLASSES)))
        if present >= _MIN_CLASSES_PER_FRAME:
            break

    points = cam_pos[:, None, None] + t * dirs  # [3, H, W] world hit points
    normals = _normals(face, sid, points, scene)  # [3, H, W]
    albedo = _albedo(face, sid, points, normals, scene, materials)  # [3, H, W]
    rgb = _shade(rng, albedo, points, normals, scene.room, cfg)  # [H, W, 3]
    depth = _sensor_depth(rng, t, dirs, normals, cfg)

    T = np.eye(4)
    T[:3, :3] = R_wc
    T[:3, 3] = cam_pos
    return Frame(rgb=rgb, depth=depth, seg=seg, K=K, depth_clean=t, T_world_cam=T)


# ----------------------------------------------------------------------------------------------
# Scene sampling


def _overlaps(rect: tuple[float, float, float, float], others: list, gap: float) -> bool:
    """True if the xy rectangle (x0, y0, x1, y1) comes within ``gap`` of any rectangle in others."""
    x0, y0, x1, y1 = rect
    return any(
        x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in others
    )


def _sample_scene(rng: np.random.Generator, style: WorldStyle) -> tuple[_Scene, np.ndarray]:
    """Sample a room, a camera position and furniture that keeps clear of the camera.

    The camera position is drawn first and furniture avoids its footprint, so the camera can never
    end up inside (or pressed against) an object and no rejection loop over cameras is needed.
    """
    lx, ly = rng.uniform(3.0, 7.0, size=2)
    lz = rng.uniform(2.4, 3.2)
    cam = np.array(
        [rng.uniform(0.5, lx - 0.5), rng.uniform(0.5, ly - 0.5), rng.uniform(*style.camera_height)],
        dtype=np.float32,
    )
    k = _CAMERA_KEEP_OUT
    floor_rects: list = [(cam[0] - k, cam[1] - k, cam[0] + k, cam[1] + k)]
    boxes: list[tuple[list[float], list[float], int, int]] = []  # (lo, hi, class, group)
    spheres: list[tuple[list[float], float, int, int]] = []  # (centre, radius, class, group)
    tables: list[tuple[float, float, float, float, float]] = []  # top rect + top height
    table_items: list[list] = []
    group = 6  # groups 0..5 are the room faces (walls may share one group, see below)

    for _ in range(rng.integers(1, 4)):  # cabinets against walls
        width, depth = rng.uniform(0.5, 1.2), rng.uniform(0.35, 0.6)
        height = min(rng.uniform(0.9, 2.1), lz - 0.15)
        wall = int(rng.integers(0, 4))
        along = ly if wall < 2 else lx
        s = rng.uniform(0.0, max(along - width, 0.0))
        if wall == 0:
            rect = (0.0, s, depth, s + width)
        elif wall == 1:
            rect = (lx - depth, s, lx, s + width)
        elif wall == 2:
            rect = (s, 0.0, s + width, depth)
        else:
            rect = (s, ly - depth, s + width, ly)
        if _overlaps(rect, floor_rects, 0.02):
            continue
        floor_rects.append(rect)
        boxes.append(([rect[0], rect[1], 0.0], [rect[2], rect[3], height], _CABINET, group))
        group += 1

    for _ in range(rng.integers(1, 4)):  # tables: a top slab on four legs
        for _try in range(12):
            sx, sy = rng.uniform(0.7, 1.6), rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:
                sx, sy = sy, sx
            x0, y0 = rng.uniform(0.1, lx - sx - 0.1), rng.uniform(0.1, ly - sy - 0.1)
            rect = (x0, y0, x0 + sx, y0 + sy)
            if not _overlaps(rect, floor_rects, 0.15):
                break
        else:
            continue
        floor_rects.append(rect)
        top = rng.uniform(0.7, 0.8)
        thick = rng.uniform(0.03, 0.06)
        leg = rng.uniform(0.04, 0.08)
        inset = rng.uniform(0.02, 0.1)
        boxes.append(([x0, y0, top - thick], [x0 + sx, y0 + sy, top], _TABLE, group))
        for lx0 in (x0 + inset, x0 + sx - inset - leg):
            for ly0 in (y0 + inset, y0 + sy - inset - leg):
                boxes.append(([lx0, ly0, 0.0], [lx0 + leg, ly0 + leg, top - thick], _TABLE, group))
        group += 1
        tables.append((*rect, top))
        table_items.append([])

    n_boxes, n_balls = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    for cls in [_BOX] * n_boxes + [_BALL] * n_balls:
        if cls == _BOX:
            size = rng.uniform(0.12, 0.5, size=3)
            size[2] = min(size[2], 0.45)
            half_x, half_y = size[0] / 2, size[1] / 2
        else:
            radius = rng.uniform(0.07, 0.22)
            half_x = half_y = radius
        on_table = bool(tables) and rng.random() < 0.5
        for _try in range(12):
            if on_table:
                ti = int(rng.integers(0, len(tables)))
                tx0, ty0, tx1, ty1, base = tables[ti]
                lo_x, hi_x, lo_y, hi_y = tx0 + half_x, tx1 - half_x, ty0 + half_y, ty1 - half_y
                others = table_items[ti]
            else:
                base = 0.0
                lo_x, hi_x = half_x + 0.02, lx - half_x - 0.02
                lo_y, hi_y = half_y + 0.02, ly - half_y - 0.02
                others = floor_rects
            if lo_x >= hi_x or lo_y >= hi_y:
                continue
            cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            rect = (cx - half_x, cy - half_y, cx + half_x, cy + half_y)
            if not _overlaps(rect, others, 0.03):
                break
        else:
            continue
        others.append(rect)
        if cls == _BOX:
            boxes.append(([rect[0], rect[1], base], [rect[2], rect[3], base + size[2]], cls, group))
        else:
            spheres.append(([cx, cy, base + radius], radius, cls, group))
        group += 1

    # Walls are often painted alike: sometimes all four share one material. This does not change
    # the marginal appearance distribution of any single surface, so colour stays class-free.
    room_groups = [0, 0, 0, 0, 4, 5] if rng.random() < 0.5 else [0, 1, 2, 3, 4, 5]
    scene = _Scene(
        room=np.array([lx, ly, lz], dtype=np.float32),
        box_lo=np.array([b[0] for b in boxes], dtype=np.float32).reshape(-1, 3),
        box_hi=np.array([b[1] for b in boxes], dtype=np.float32).reshape(-1, 3),
        sph_c=np.array([s[0] for s in spheres], dtype=np.float32).reshape(-1, 3),
        sph_r=np.array([s[1] for s in spheres], dtype=np.float32),
        surf_cls=np.array(
            list(_ROOM_CLASSES) + [b[2] for b in boxes] + [s[2] for s in spheres], dtype=np.uint8
        ),
        surf_group=np.array(room_groups + [b[3] for b in boxes] + [s[3] for s in spheres]),
    )
    return scene, cam


def _sample_materials(rng: np.random.Generator, n: int, style: WorldStyle) -> _Materials:
    """Draw ``n`` materials from ONE distribution shared by every class (see module docstring)."""
    sat, val = style.saturation, style.value
    hsv = np.stack(
        [rng.uniform(0, 1, n), rng.uniform(*sat, n), rng.uniform(*val, n)], axis=1
    )
    c1 = _hsv_to_rgb(hsv)
    # Second colour: a darker/lighter shade of the first, or an unrelated colour.
    hsv_shade = hsv.copy()
    hsv_shade[:, 2] = np.clip(hsv[:, 2] * rng.uniform(0.45, 1.3, n), 0.05, 1.0)
    shade = _hsv_to_rgb(hsv_shade)
    other = _hsv_to_rgb(
        np.stack([rng.uniform(0, 1, n), rng.uniform(*sat, n), rng.uniform(*val, n)], 1)
    )
    c2 = np.where((rng.random(n) < 0.6)[:, None], shade, other)
    angle = rng.uniform(0, np.pi, n)
    kind = rng.integers(0, 4, n)
    if style.plain > 0:  # drawn only by such a style: the standard stream stays as it was
        kind = np.where(rng.random(n) < style.plain, _PATTERN_PLAIN, kind)
    return _Materials(
        c1=c1.astype(np.float32),
        c2=c2.astype(np.float32),
        kind=kind,
        period=np.exp(rng.uniform(np.log(0.05), np.log(0.6), n)).astype(np.float32),
        rot=np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32),
        offset=rng.uniform(0, 10, (n, 2)).astype(np.float32),
        wave_k=(rng.normal(size=(n, _NOISE_WAVES, 2)) * 0.7).astype(np.float32),
        wave_phase=rng.uniform(0, 2 * np.pi, (n, _NOISE_WAVES)).astype(np.float32),
    )


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV [N, 3] in 0..1 -> RGB [N, 3] in 0..1 (sampling in HSV gives natural-looking colours)."""
    h, s, v = hsv[:, 0] * 6.0, hsv[:, 1], hsv[:, 2]
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None]) % 6.0  # [N, 3]
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _sample_orientation(rng: np.random.Generator, scene: _Scene, cam: np.ndarray,
                        style: WorldStyle) -> np.ndarray:
    """Camera rotation R_world_cam [3, 3]: aim near a random object, look slightly down, small roll.

    Aiming at furniture most of the time keeps frames informative (a bare wall teaches little);
    the jitter and the occasional fully random yaw keep the view distribution broad.
    """
    centres = np.concatenate([(scene.box_lo + scene.box_hi) / 2, scene.sph_c], axis=0)
    if len(centres) and rng.random() < 0.85:
        target = centres[rng.integers(0, len(centres))]
        yaw = math.atan2(target[1] - cam[1], target[0] - cam[0]) + rng.uniform(-0.4, 0.4)
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    pitch = math.radians(rng.uniform(*style.pitch_deg))  # positive = looking down
    roll = math.radians(rng.uniform(-4.0, 4.0))
    cp = math.cos(pitch)
    fwd = np.array([math.cos(yaw) * cp, math.sin(yaw) * cp, -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, fwd], axis=1)  # columns: camera x, y, z in world


# ----------------------------------------------------------------------------------------------
# Ray casting


def _camera_rays(K: np.ndarray, h: int, w: int) -> np.ndarray:
    """Camera-frame ray directions [3, H*W] float32 with z = 1, so the ray parameter is z depth."""
    u = (np.arange(w, dtype=np.float64) - K[0, 2]) / K[0, 0]  # [W]
    v = (np.arange(h, dtype=np.float64) - K[1, 2]) / K[1, 1]  # [H]
    rays = np.empty((3, h, w), dtype=np.float32)
    rays[0] = u[None, :]
    rays[1] = v[:, None]
    rays[2] = 1.0
    return rays.reshape(3, h * w)


def _screen_rect(
    corners: np.ndarray, cam: np.ndarray, R_wc: np.ndarray, K: np.ndarray, h: int, w: int
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (r0, r1, c0, c1) that can see the convex hull of ``corners`` [8, 3].

    Culling to this rectangle is what makes casting dozens of primitives cheap at 640x480: a table
    leg only costs the few hundred pixels it can cover. Conservative: the projection of a convex
    hull is the hull of the projected corners when all lie in front of the camera; otherwise fall
    back to the full image (or skip when everything is behind).
    """
    pc = (corners - cam) @ R_wc  # [8, 3] camera frame
    z = pc[:, 2]
    if np.all(z <= 1e-6):
        return None
    if np.any(z <= 1e-3):
        return 0, h, 0, w
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    c0, c1 = max(math.floor(u.min()), 0), min(math.floor(u.max()) + 1, w)
    r0, r1 = max(math.floor(v.min()), 0), min(math.floor(v.max()) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


_CORNER_SELECT = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=bool)


def _cast(
    scene: _Scene, cam: np.ndarray, dirs: np.ndarray, R_wc: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit per pixel: z depth t [H, W] float32, face code [H, W] int8, surface id [H, W]."""
    _, h, w = dirs.shape
    dirs = np.where(np.abs(dirs) < 1e-12, np.float32(1e-12), dirs)  # no 0 * inf in the slabs
    inv = 1.0 / dirs  # [3, H, W]
    pos = dirs > 0  # [3, H, W]

    # Room: the ray leaves the closed box through the face whose plane it reaches first.
    tx, ty, tz = ((np.where(pos[i], scene.room[i], 0.0) - cam[i]) * inv[i] for i in range(3))
    t = np.minimum(np.minimum(tx, ty), tz)  # [H, W], > 0 because the camera is inside
    axis = np.where(tz == t, 2, np.where(ty == t, 1, 0))  # [H, W]
    face = (2 * axis + np.choose(axis, pos)).astype(np.int8)
    sid = face.astype(np.int16)  # room surface id == face code

    # Boxes: slab method on the culled pixel rectangle; views write back into t/face/sid.
    for b in range(len(scene.box_lo)):
        lo, hi = scene.box_lo[b], scene.box_hi[b]
        rect = _screen_rect(np.where(_CORNER_SELECT, hi, lo), cam, R_wc, K, h, w)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        iv = inv[:, r0:r1, c0:c1]  # [3, h', w']
        t1, t2 = (lo - cam)[:, None, None] * iv, (hi - cam)[:, None, None] * iv
        t_near_ax = np.minimum(t1, t2)  # [3, h', w']
        t_far_ax = np.maximum(t1, t2)
        t_near = np.maximum(np.maximum(t_near_ax[0], t_near_ax[1]), t_near_ax[2])  # [h', w']
        t_far = np.minimum(np.minimum(t_far_ax[0], t_far_ax[1]), t_far_ax[2])
        tv = t[r0:r1, c0:c1]
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < tv)
        if not hit.any():
            continue
        ax = t_near_ax[:, hit].argmax(axis=0)  # [n] entry axis
        going_pos = pos[:, r0:r1, c0:c1][:, hit][ax, np.arange(len(ax))]  # enters the -axis face
        tv[hit] = t_near[hit]
        face[r0:r1, c0:c1][hit] = 2 * ax + going_pos
        sid[r0:r1, c0:c1][hit] = 6 + b

    # Spheres: nearest root of |o + t d - c|^2 = r^2 (camera is outside, so the smaller root).
    n_boxes = len(scene.box_lo)
    for s in range(len(scene.sph_c)):
        c, r = scene.sph_c[s], scene.sph_r[s]
        rect = _screen_rect(np.where(_CORNER_SELECT, c + r, c - r), cam, R_wc, K, h, w)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        d = dirs[:, r0:r1, c0:c1]  # [3, h', w']
        oc = cam - c
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]  # [h', w']
        half_b = d[0] * oc[0] + d[1] * oc[1] + d[2] * oc[2]
        disc = half_b * half_b - a * (oc @ oc - r * r)
        tv = t[r0:r1, c0:c1]
        hit = disc > 0
        t_hit = np.full(tv.shape, np.inf, dtype=np.float32)
        t_hit[hit] = (-half_b[hit] - np.sqrt(disc[hit])) / a[hit]
        hit &= (t_hit > 0) & (t_hit < tv)
        tv[hit] = t_hit[hit]
        face[r0:r1, c0:c1][hit] = _SPHERE_CODE
        sid[r0:r1, c0:c1][hit] = 6 + n_boxes + s
    return t, face, sid


# ----------------------------------------------------------------------------------------------
# Appearance


def _normals(face: np.ndarray, sid: np.ndarray, points: np.ndarray, scene: _Scene) -> np.ndarray:
    """Unit surface normals [3, H, W] facing the camera side (room normals point inward)."""
    normals = _FACE_NORMALS.T[:, face]  # [3, H, W]
    on_sphere = face == _SPHERE_CODE
    if on_sphere.any():
        k = sid[on_sphere] - 6 - len(scene.box_lo)  # [n]
        normals[:, on_sphere] = (points[:, on_sphere] - scene.sph_c[k].T) / scene.sph_r[k]
    return normals


def _albedo(
    face: np.ndarray,
    sid: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    scene: _Scene,
    mat: _Materials,
) -> np.ndarray:
    """Textured albedo [3, H, W] in 0..1 from each surface's material and its surface coordinates.

    Textures live in metric surface coordinates (the two in-plane world axes, or longitude x
    radius and height on spheres), so patterns stay fixed to the surface as the camera moves.
    """
    axis = face >> 1  # [H, W] normal axis (3 on spheres)
    u = np.where(axis == 0, points[1], points[0])  # [H, W]
    v = np.where(axis == 2, points[1], points[2])
    on_sphere = face == _SPHERE_CODE
    if on_sphere.any():
        k = sid[on_sphere] - 6 - len(scene.box_lo)
        u[on_sphere] = np.arctan2(normals[1, on_sphere], normals[0, on_sphere]) * scene.sph_r[k]
    g = scene.surf_group[sid]  # [H, W] material group per pixel
    cos, sin = mat.rot[:, 0][g], mat.rot[:, 1][g]  # [H, W]
    inv_period = (1.0 / mat.period)[g]
    pu = (cos * u + sin * v + mat.offset[:, 0][g]) * inv_period  # [H, W] pattern coordinates
    pv = (cos * v - sin * u + mat.offset[:, 1][g]) * inv_period
    kind = mat.kind[g]
    pattern = np.zeros(u.shape, dtype=np.float32)  # plain -> 0
    iu = np.floor(pu).astype(np.int32)
    stripes = kind == _PATTERN_STRIPES
    pattern[stripes] = iu[stripes] & 1
    checker = kind == _PATTERN_CHECKER
    pattern[checker] = (iu[checker] + np.floor(pv[checker]).astype(np.int32)) & 1
    noisy = kind == _PATTERN_NOISE
    if noisy.any():
        wk, ph = mat.wave_k[g[noisy]], mat.wave_phase[g[noisy]]  # [n, waves, 2], [n, waves]
        arg = 2 * np.pi * (wk[..., 0] * pu[noisy, None] + wk[..., 1] * pv[noisy, None]) + ph
        pattern[noisy] = np.clip(0.5 + 0.8 * np.sin(arg).mean(axis=-1), 0.0, 1.0)
    c1, dc = mat.c1.T, (mat.c2 - mat.c1).T  # [3, G]
    return np.stack([c1[i][g] + dc[i][g] * pattern for i in range(3)])  # [3, H, W]


def _shade(
    rng: np.random.Generator,
    albedo: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    room: np.ndarray,
    cfg: WorldConfig,
) -> np.ndarray:
    """Lambertian shading from one point light plus ambient, exposure and Gaussian noise -> uint8.

    No shadows: they would need a second cast and add a cue (contact shadows) that is mostly
    geometric anyway. The light sits at a random height so no class is systematically darker.
    """
    lx, ly, lz = (float(v) for v in room)
    light = np.array(
        [rng.uniform(0.2, lx - 0.2), rng.uniform(0.2, ly - 0.2), rng.uniform(0.35, 0.85) * lz],
        dtype=np.float32,
    )
    style = cfg.look
    ambient = rng.uniform(*style.ambient)
    power = rng.uniform(0.8, 1.3)
    exposure = rng.uniform(*style.exposure)
    to_light = light[:, None, None] - points  # [3, H, W]
    dist2 = to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2  # [H, W]
    n_dot_l = normals[0] * to_light[0] + normals[1] * to_light[1] + normals[2] * to_light[2]
    cos = np.maximum(n_dot_l / np.sqrt(dist2), 0.0)
    falloff = 1.0 / (1.0 + 0.04 * dist2)
    shade = np.float32(ambient) + np.float32(power * (1 - ambient)) * cos * falloff  # [H, W]
    shade *= np.float32(255.0 * exposure)
    h, w = shade.shape
    rgb = np.empty((h, w, 3), dtype=np.float32)
    noise = rng.standard_normal((3, h, w), dtype=np.float32) if cfg.colour_noise > 0 else None
    for i in range(3):
        lit = shade if style.colour_gain[i] == 1.0 else shade * np.float32(style.colour_gain[i])
        channel = albedo[i] * lit + 0.5  # +0.5: round instead of truncate below
        if noise is not None:
            channel += noise[i] * np.float32(cfg.colour_noise)
        rgb[..., i] = channel
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Depth sensor model


def _sensor_depth(
    rng: np.random.Generator,
    z: np.ndarray,
    dirs: np.ndarray,
    normals: np.ndarray,
    cfg: WorldConfig,
) -> np.ndarray:
    """Noisy z depth [H, W] float32 with holes: 0 marks every invalid pixel.

    Mimics a structured-light sensor: noise std grows with z^2 (truncated at 4 sigma so a
    reading is never wildly off), blob-shaped dropouts (absorbing or specular patches) and
    dropouts where the ray grazes the surface.
    """
    h, w = z.shape
    noise = np.clip(rng.standard_normal((h, w), dtype=np.float32), -4.0, 4.0)
    depth = z + np.float32(cfg.depth_noise) * z * z * noise  # [H, W]
    invalid = (z > cfg.max_depth) | (depth <= 0)

    # Grazing angle: dropout probability rises as |cos(incidence)| falls below ~0.2.
    d_dot_n = dirs[0] * normals[0] + dirs[1] * normals[1] + dirs[2] * normals[2]  # [H, W]
    cos_inc = np.abs(d_dot_n) / np.sqrt(dirs[0] ** 2 + dirs[1] ** 2 + dirs[2] ** 2)
    p_drop = np.clip((0.2 - cos_inc) * (1.0 / 0.15), 0.0, 1.0)
    invalid |= rng.random((h, w), dtype=np.float32) < p_drop

    # A few irregular elliptical blobs that together cover about hole_fraction of the image.
    n_blobs = int(rng.integers(2, 6))
    if cfg.hole_fraction > 0:
        area = cfg.hole_fraction * h * w / n_blobs
        for _ in range(n_blobs):
            aspect = rng.uniform(0.5, 2.0)
            rx, ry = math.sqrt(area * aspect / math.pi), math.sqrt(area / (aspect * math.pi))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            freq, phase = int(rng.integers(2, 6)), rng.uniform(0, 2 * np.pi)
            r0, r1 = max(int(cy - 1.3 * ry), 0), min(int(cy + 1.3 * ry) + 1, h)
            c0, c1 = max(int(cx - 1.3 * rx), 0), min(int(cx + 1.3 * rx) + 1, w)
            if r0 >= r1 or c0 >= c1:
                continue
            dy = (np.arange(r0, r1, dtype=np.float32)[:, None] - cy) / ry  # [h', 1]
            dx = (np.arange(c0, c1, dtype=np.float32)[None, :] - cx) / rx  # [1, w']
            radius = 1.0 + 0.2 * np.sin(freq * np.arctan2(dy, dx) + phase)  # [h', w']
            invalid[r0:r1, c0:c1] |= dx * dx + dy * dy < radius * radius
    depth[invalid] = 0.0
    return depth


# -- dataset side ------------------------------------------------------------------------------
class SyntheticSource:
    """Frames `start .. start+count-1` of the world as a FrameSource (rendered on demand, cached).

    Training and validation read disjoint index ranges of the same seed, so held-out frames are
    new rooms, not new views of training rooms.
    """

    VAL_OFFSET = 1_000_000

    def __init__(self, seed: int, start: int, count: int, cfg: WorldConfig = WorldConfig(),
                 cache: bool = True) -> None:
        self.seed, self.start, self.count, self.cfg = seed, start, count, cfg
        self.info = DatasetInfo("synthetic", list(CLASSES), [list(c) for c in PALETTE],
                                cfg.max_depth)
        self._cache: dict[int, object] | None = {} if cache else None

    def __len__(self) -> int:
        return self.count

    def frame(self, index: int) -> RawFrame:
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} out of range 0..{self.count - 1}")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        f = render_frame(self.seed, self.start + index, self.cfg)
        raw = RawFrame(f.rgb, f.depth, f.seg, f.K,
                       {"source": "synthetic", "frame_id": f"{self.start + index:07d}",
                        "seed": self.seed})
        if self._cache is not None:
            self._cache[index] = raw
        return raw


SYNTHETIC_MAX_DEPTH = 10.0  # metres: the world's range when data.max_depth is None
TEST_OFFSET = 2_000_000  # the test split's first world index (train 0.., val VAL_OFFSET..)


def _world(cfg: DataConfig) -> WorldConfig:
    return WorldConfig(height=cfg.render_height, width=cfg.render_width,
                       max_depth=cfg.max_depth or SYNTHETIC_MAX_DEPTH, style=cfg.style)


def source(cfg: DataConfig, split: str) -> SyntheticSource:
    """`data.name: synthetic`: disjoint index ranges of one world seed per split (val and test
    both hold data.val_frames frames)."""
    check_split(split)
    if cfg.classes is not None and cfg.classes != len(CLASSES):
        raise ConfigError(f"data.classes: the synthetic world has {len(CLASSES)} classes, got "
                          f"{cfg.classes}")
    start = {"train": 0, "val": SyntheticSource.VAL_OFFSET, "test": TEST_OFFSET}[split]
    count = cfg.train_frames if split == "train" else cfg.val_frames
    return SyntheticSource(cfg.seed, start, count, _world(cfg))


def splits(cfg: DataConfig) -> tuple[SyntheticSource, SyntheticSource]:
    """`data.name: synthetic`: disjoint index ranges of one world seed."""
    return source(cfg, "train"), source(cfg, "val")


def write_synthetic_folder(out: str | Path, data_cfg: DataConfig) -> dict[str, Any]:
    """Render train + val frames into a folder dataset (mtl_training.data.sources.folder layout).

    Re-running with the same settings reuses a complete folder instead of rendering it again.
    """
    out = Path(out)
    world = _world(data_cfg)
    params = {"seed": data_cfg.seed, "train_frames": data_cfg.train_frames,
              "val_frames": data_cfg.val_frames, "height": world.height, "width": world.width,
              "max_depth": world.max_depth}
    if world.style != "standard":  # a folder rendered before styles existed is standard
        params["style"] = world.style
    if (out / "dataset.json").is_file():
        index = read_index(out)
        if index.get("synthetic") == params:
            return {"frames": len(index["frames"]), "fps": float("inf"), "reused": True}
    out.mkdir(parents=True, exist_ok=True)
    train = SyntheticSource(data_cfg.seed, 0, data_cfg.train_frames, world, cache=False)
    val = SyntheticSource(data_cfg.seed, SyntheticSource.VAL_OFFSET, data_cfg.val_frames, world,
                          cache=False)
    entries, splits = [], {"train": [], "val": []}
    t0 = time.perf_counter()
    jobs = [("train", train, i) for i in range(len(train))] + [("val", val, i)
                                                               for i in range(len(val))]
    for split, src, i in tqdm(jobs, desc="synth", unit="frame", disable=None):
        raw = src.frame(i)
        fid = f"{split}_{raw.meta['frame_id']}"
        entries.append(write_frame(out, fid, raw.rgb, raw.depth, raw.seg, raw.K,
                                   {"world_index": src.start + i, "seed": data_cfg.seed,
                                    "style": world.style}))
        splits[split].append(fid)
    seconds = time.perf_counter() - t0
    write_index(out, train.info, entries, splits, extra={"synthetic": params})
    return {"frames": len(entries), "fps": len(entries) / max(seconds, 1e-9), "reused": False}
