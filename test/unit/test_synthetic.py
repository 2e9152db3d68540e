"""Tests for the procedural RGB-D world: determinism, label/geometry consistency, sensor model,
and the design goal that colour alone does not identify the class."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtl_training.data.sources.synthetic import (
    CLASSES,
    IGNORE_INDEX,
    PALETTE,
    Frame,
    WorldConfig,
    render_frame,
)

SMALL = WorldConfig(height=60, width=80)  # keeps the statistical tests fast


def _world_points(frame: Frame) -> np.ndarray:
    """Back-project depth_clean with K and T_world_cam -> world points [H, W, 3]."""
    h, w = frame.depth_clean.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    cam = (pix @ np.linalg.inv(frame.K).T) * frame.depth_clean[..., None]  # [H, W, 3]
    return cam @ frame.T_world_cam[:3, :3].T + frame.T_world_cam[:3, 3]


def _frames(seed: int, n: int, cfg: WorldConfig = SMALL) -> list[Frame]:
    return [render_frame(seed, i, cfg) for i in range(n)]


def test_same_inputs_are_bit_identical() -> None:
    a, b = render_frame(7, 3), render_frame(7, 3)
    for name in ("rgb", "depth", "seg", "K", "depth_clean", "T_world_cam"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_different_index_or_seed_gives_a_different_scene() -> None:
    base = render_frame(7, 3, SMALL)
    for other in (render_frame(7, 4, SMALL), render_frame(8, 3, SMALL)):
        assert not np.array_equal(base.depth_clean, other.depth_clean)
        assert not np.array_equal(base.T_world_cam, other.T_world_cam)


def test_shapes_dtypes_and_intrinsics() -> None:
    cfg = WorldConfig(height=48, width=64, hfov_deg=90.0)
    f = render_frame(0, 0, cfg)
    assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (48, 64) and f.depth.dtype == np.float32
    assert f.depth_clean.shape == (48, 64) and f.depth_clean.dtype == np.float32
    assert f.seg.shape == (48, 64) and f.seg.dtype == np.uint8
    assert f.K.shape == (3, 3) and f.K.dtype == np.float64
    assert f.T_world_cam.shape == (4, 4) and f.T_world_cam.dtype == np.float64
    # hfov 90 deg -> fx = half the width; principal point at the pixel-centre image middle.
    np.testing.assert_allclose(f.K, [[32.0, 0, 31.5], [0, 32.0, 23.5], [0, 0, 1]])
    R = f.T_world_cam[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert f.seg.max() < len(CLASSES) and IGNORE_INDEX not in f.seg  # every pixel labelled


def test_palette_matches_classes() -> None:
    assert len(PALETTE) == len(CLASSES) == 7
    assert len(set(PALETTE)) == len(PALETTE)
    assert all(len(c) == 3 and all(0 <= x <= 255 for x in c) for c in PALETTE)


def test_all_classes_appear_and_every_frame_has_three() -> None:
    seen = np.zeros(len(CLASSES), dtype=bool)
    for f in _frames(0, 20):
        present = np.bincount(f.seg.ravel(), minlength=len(CLASSES)) > 0
        assert present.sum() >= 3
        seen |= present
    assert seen.all(), [c for c, s in zip(CLASSES, seen, strict=True) if not s]


def test_labels_agree_with_geometry() -> None:
    floor, wall, ceiling = (CLASSES.index(c) for c in ("floor", "wall", "ceiling"))
    ceilings_seen = 0
    for f in _frames(1, 20):
        p = _world_points(f)  # [H, W, 3]
        z = p[..., 2]
        cam = f.T_world_cam[:3, 3]
        assert 0.8 <= cam[2] <= 1.8
        assert f.depth_clean.min() > 0.2  # the camera is never inside or against an object
        # Floor pixels lie on z = 0; nothing lies below the floor.
        assert np.abs(z[f.seg == floor]).max() < 2e-3
        assert z.min() > -2e-3
        # The room is a box: the ceiling is one plane at 2.4..3.2 m above everything else.
        assert z.max() < 3.2 + 2e-3
        if (f.seg == ceiling).any():
            ceilings_seen += 1
            top = np.median(z[f.seg == ceiling])
            assert 2.4 - 1e-3 <= top <= 3.2 + 1e-3
            assert np.abs(z[f.seg == ceiling] - top).max() < 2e-3
            assert (z[f.seg > ceiling] < top - 0.05).all()  # furniture never reaches it
        xy = p[..., :2]
        lo, hi = xy.min(axis=(0, 1)), xy.max(axis=(0, 1))
        on_wall = xy[f.seg == wall]  # [n, 2]: each wall pixel sits on one of the four planes
        gap = np.minimum(np.abs(on_wall - lo), np.abs(on_wall - hi)).min(axis=1)
        assert gap.max() < 2e-3
    assert ceilings_seen > 0


def test_depth_sensor_model() -> None:
    residuals = []
    for f in _frames(2, 10):
        assert (f.depth_clean > 0).all()
        valid = f.depth != 0
        assert 0.005 < 1.0 - valid.mean() < 0.3  # holes and dropouts exist but are not everywhere
        z = f.depth_clean[valid]
        residual = (f.depth[valid] - z) / z**2  # noise std is depth_noise * z^2, cut at 4 sigma
        assert np.abs(residual).max() <= 4 * SMALL.depth_noise * 1.001 + 1e-5
        residuals.append(residual)
    assert np.concatenate(residuals).std() == pytest.approx(SMALL.depth_noise, rel=0.1)


def test_depth_range_noise_free_and_hole_fraction() -> None:
    near = WorldConfig(height=60, width=80, max_depth=2.5, depth_noise=0.0, hole_fraction=0.0)
    f = render_frame(3, 0, near)
    assert (f.depth[f.depth_clean > 2.5] == 0).all()
    kept = f.depth != 0
    assert kept.any()
    assert np.array_equal(f.depth[kept], f.depth_clean[kept])  # no noise -> exact readings

    def invalid_fraction(hole_fraction: float) -> float:
        cfg = WorldConfig(height=60, width=80, hole_fraction=hole_fraction)
        return float(np.mean([(f.depth == 0).mean() for f in _frames(3, 20, cfg)]))

    added = invalid_fraction(0.1) - invalid_fraction(0.0)
    assert 0.06 < added < 0.12


def test_rgb_noise_level() -> None:
    clean = render_frame(4, 0, WorldConfig(height=60, width=80, rgb_noise=0.0)).rgb
    noisy = render_frame(4, 0, WorldConfig(height=60, width=80, rgb_noise=4.0)).rgb
    diff = noisy.astype(np.float64) - clean
    inside = (clean > 20) & (clean < 235)  # away from clipping
    assert diff[inside].std() == pytest.approx(4.0, rel=0.15)


def _balanced_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, n_bins: int
) -> float:
    """Histogram Bayes classifier (equal class priors) fitted on one set, scored on another."""
    n = len(CLASSES)
    counts = np.zeros((n_bins, n))
    np.add.at(counts, (train_x, train_y), 1)
    likelihood = (counts + 1e-3) / (counts.sum(axis=0) + 1e-3 * n_bins)
    pred = likelihood.argmax(axis=1)[test_x]
    return float(np.mean([(pred[test_y == c] == c).mean() for c in range(n)]))


def test_colour_does_not_identify_class_but_geometry_does() -> None:
    """The premise of RGB-D teacher -> RGB student: colour alone is near chance, depth is not."""

    def features(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        frames = _frames(seed, 50)
        rgb = np.concatenate([f.rgb.reshape(-1, 3) for f in frames]).astype(np.int64)  # [N, 3]
        q = rgb // 32  # 8 levels per channel -> 512 colour bins
        colour = q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]
        z = np.concatenate([_world_points(f)[..., 2].ravel() for f in frames])
        height = np.clip(z / 0.05, 0, 79).astype(np.int64)  # 5 cm height bins
        return colour, height, np.concatenate([f.seg.ravel() for f in frames]), rgb

    colour_a, height_a, seg_a, rgb = features(10)
    colour_b, height_b, seg_b, _ = features(11)
    chance = 1.0 / len(CLASSES)
    colour_acc = _balanced_accuracy(colour_a, seg_a, colour_b, seg_b, 512)
    height_acc = _balanced_accuracy(height_a, seg_a, height_b, seg_b, 80)
    assert colour_acc < chance + 0.1, colour_acc
    assert height_acc > chance + 0.3, height_acc

    # Per-class mean chromaticity sits close together relative to each class's own spread.
    # Brightness is left out on purpose: it carries Lambertian shading, i.e. orientation, which
    # is geometry and allowed to differ by class (room faces are always lit from inside, object
    # faces can turn away). Chromaticity carries the albedo, which must be class-free. A 25 %
    # class tint pushes this ratio to about 2; the unbiased world stays below about 0.85.
    chroma = rgb / (rgb.sum(axis=1, keepdims=True) + 1.0)  # [N, 3]
    means = np.stack([chroma[seg_a == c].mean(axis=0) for c in range(len(CLASSES))])  # [7, 3]
    spread = min(math.sqrt(chroma[seg_a == c].var(axis=0).sum()) for c in range(len(CLASSES)))
    max_gap = max(np.linalg.norm(means[i] - means[j]) for i in range(7) for j in range(i))
    assert max_gap < 1.1 * spread, (max_gap, spread)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 1},
        {"hfov_deg": 0.0},
        {"max_depth": -1.0},
        {"rgb_noise": -1.0},
        {"hole_fraction": 1.0},
    ],
)
def test_bad_config_fails_fast(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="WorldConfig"):
        WorldConfig(**kwargs)


def test_negative_seed_or_index_fails_fast() -> None:
    with pytest.raises(ValueError, match="render_frame"):
        render_frame(-1, 0)


def test_sensor_noise_factor_changes_only_the_depth_sensor():
    """The noisy-privileged-depth study compares teachers across noise factors: the scene, its
    colours and labels must be the same frames at every factor, only the sensor differs."""
    frames = {f: render_frame(4, 2, SMALL.with_sensor_noise(f)) for f in (0.0, 1.0, 3.0)}
    base = frames[1.0]
    for f in (0.0, 3.0):
        assert np.array_equal(frames[f].rgb, base.rgb) and np.array_equal(frames[f].seg, base.seg)
        assert np.array_equal(frames[f].depth_clean, base.depth_clean)
        assert not np.array_equal(frames[f].depth, base.depth)
    quiet = frames[0.0]
    valid = quiet.depth > 0
    # factor 0: where the sensor returns depth it is exact; what is missing is dropouts only
    assert valid.mean() > 0.5
    assert np.allclose(quiet.depth[valid], quiet.depth_clean[valid], rtol=1e-6)
    noisy = frames[3.0]
    both = (noisy.depth > 0) & (base.depth > 0)

    def err(fr: Frame) -> float:
        return float(np.abs(fr.depth[both] - fr.depth_clean[both]).mean())

    assert err(noisy) > 2.0 * err(base) and (noisy.depth > 0).mean() < (base.depth > 0).mean()
    with pytest.raises(ValueError, match="noise factor"):
        SMALL.with_sensor_noise(-1.0)
