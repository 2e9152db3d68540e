"""Depth + intrinsics -> points, and PointCloud2 round trips (no ROS graph)."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.geometry.pointcloud import POINT_DTYPE, PointCloudBuilder, pack_rgb

INTR = PinholeCamera(fx=100.0, fy=120.0, cx=15.5, cy=9.5, width=32, height=20)


def test_back_projection_matches_the_pinhole_model():
    depth = np.random.default_rng(0).uniform(0.5, 5.0, (20, 32)).astype(np.float32)
    pts = PointCloudBuilder().build(depth, INTR, stride=1)
    assert pts.dtype == POINT_DTYPE and pts.size == 20 * 32
    v, u = np.mgrid[0:20, 0:32]
    np.testing.assert_allclose(pts["z"], depth.ravel())
    np.testing.assert_allclose(pts["x"], ((u - 15.5) / 100.0 * depth).ravel(), rtol=1e-6)
    np.testing.assert_allclose(pts["y"], ((v - 9.5) / 120.0 * depth).ravel(), rtol=1e-6)


def test_stride_range_and_invalid_depths_are_left_out():
    depth = np.full((20, 32), 2.0, np.float32)
    depth[0, 0], depth[0, 2], depth[2, 0] = 0.0, np.nan, 50.0
    depth[2, 2] = np.inf
    builder = PointCloudBuilder()
    pts = builder.build(depth, INTR, stride=2, max_depth=10.0)
    assert pts.size == 10 * 16 - 4
    assert np.isfinite(pts["z"]).all() and (pts["z"] <= 10).all()
    unlimited = builder.build(depth, INTR, stride=2, max_depth=0.0)
    assert unlimited.size == 10 * 16 - 3  # 50 m kept, inf/nan/0 dropped


def test_colours_and_labels_follow_their_pixels():
    depth = np.ones((20, 32), np.float32)
    rgb = np.random.default_rng(1).integers(0, 255, (20, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, 7, (20, 32)).astype(np.uint8)
    pts = PointCloudBuilder().build(depth, INTR, stride=4, rgb=rgb, labels=labels)
    packed = pts["rgb"].view(np.uint32)
    np.testing.assert_array_equal(packed >> 16, rgb[::4, ::4, 0].ravel())
    np.testing.assert_array_equal((packed >> 8) & 255, rgb[::4, ::4, 1].ravel())
    np.testing.assert_array_equal(packed & 255, rgb[::4, ::4, 2].ravel())
    np.testing.assert_array_equal(pts["label"], labels[::4, ::4].ravel())
    assert pack_rgb(np.array([255, 0, 1], np.uint8)).view(np.uint32) == 0xFF0001


def test_intrinsics_scale_with_resolution_keeping_pixel_centres():
    half = INTR.resized(16, 10)
    assert (half.fx, half.fy) == (50.0, 60.0)
    assert half.cx == pytest.approx(7.5) and half.cy == pytest.approx(4.5)  # image centres
    assert INTR.resized(32, 20) == INTR


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="but the camera is 32x20"):
        PointCloudBuilder().build(np.ones((10, 10), np.float32), INTR)


def test_pointcloud2_round_trip():
    pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels not installed")
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from mtl_perception.core.codecs import fill_pointcloud2, pointcloud2_to_array

    depth = np.random.default_rng(3).uniform(1, 3, (20, 32)).astype(np.float32)
    pts = PointCloudBuilder().build(depth, INTR, stride=2,
                                    labels=np.full((20, 32), 300, np.uint16))
    msg = fill_pointcloud2(PointCloud2(), pts, Header(frame_id="cam"), PointField)
    assert msg.point_step == 20 and msg.width == pts.size and msg.height == 1
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
        ("rgb", 12, PointField.FLOAT32), ("label", 16, PointField.UINT32)]
    back = pointcloud2_to_array(msg)
    for name in POINT_DTYPE.names:
        np.testing.assert_array_equal(back[name], pts[name])
    assert (back["label"] == 300).all()
