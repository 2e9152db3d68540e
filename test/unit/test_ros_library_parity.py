"""The node's own conversions agree with the field's libraries: cv_bridge and sensor_msgs_py.

The node converts Image / CompressedImage / PointCloud2 with mtl_perception/core/codecs.py and
core/geometry/pointcloud.py instead of cv_bridge and sensor_msgs_py (they also read rosbags
messages, without ROS, and write outputs in place). Here, on real rclpy messages, they must give
the arrays and messages the libraries give: every encoding the node reads, row padding, big
endian, JPEG and PNG, and the point cloud both ways. Each library is skipped with the reason
where it does not import (every ROS install has both; cv_bridge's conversions with an explicit
encoding also need its compiled module, cv_bridge_boost).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.codecs import (
    ENCODINGS,
    compressed_to_rgb,
    fill_image,
    fill_pointcloud2,
    image_to_array,
    image_to_rgb,
    pointcloud2_to_array,
    writable_image,
)
from mtl_perception.core.geometry.pointcloud import PointCloudBuilder

COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


def _library(name: str, why: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} not importable ({exc}); {why}")


@pytest.fixture(scope="module")
def point_cloud2() -> ModuleType:
    return _library("sensor_msgs_py.point_cloud2",
                    "it comes with every ROS 2 install (ros-<distro>-sensor-msgs-py)")


@pytest.fixture(scope="module")
def bridge():
    cv_bridge = _library("cv_bridge", "it comes with ros-<distro>-cv-bridge")
    return cv_bridge.CvBridge()


@pytest.fixture(scope="module")
def bridge_compiled(bridge):
    """cv_bridge whose compiled part is there (needed for imgmsg_to_cv2 and named encodings)."""
    _library("cv_bridge.boost.cv_bridge_boost",
             "cv_bridge's compiled module is needed for imgmsg_to_cv2 and explicit encodings")
    return bridge


def pixels(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    if dtype.kind == "f":
        return rng.uniform(0.1, 20.0, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def image_msg(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image built byte by byte (neither library involved): `pad` bytes after each row."""
    a = array.astype(array.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=bigendian, step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


CASES = [(enc, pad, big) for enc in ENCODINGS for pad in (0, 3)
         for big in ((False, True) if ENCODINGS[enc][0].itemsize > 1 else (False,))]


@pytest.mark.parametrize(("encoding", "pad", "bigendian"), CASES)
def test_image_to_array_is_cv_bridge_passthrough(bridge_compiled, encoding, pad, bigendian):
    msg = image_msg(pixels(encoding), encoding, pad, bigendian)
    ours, theirs = image_to_array(msg), bridge_compiled.imgmsg_to_cv2(msg, "passthrough")
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("encoding", COLOUR)
@pytest.mark.parametrize("pad", [0, 3])
def test_image_to_rgb_is_cv_bridge_rgb8(bridge_compiled, encoding, pad):
    msg = image_msg(pixels(encoding), encoding, pad)
    np.testing.assert_array_equal(image_to_rgb(msg), bridge_compiled.imgmsg_to_cv2(msg, "rgb8"))


def _same_image_message(ours: Image, theirs: Image, encoding: bool = True) -> None:
    assert (ours.height, ours.width, ours.step, bool(ours.is_bigendian)) == (
        theirs.height, theirs.width, theirs.step, bool(theirs.is_bigendian))
    assert bytes(ours.data) == bytes(theirs.data)
    if encoding:
        assert ours.encoding == theirs.encoding


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_output_images_are_cv_bridge_messages(bridge_compiled, encoding):
    """What the node publishes (fill_image, and writable_image filled in place)."""
    array = pixels(encoding, seed=1)
    theirs = bridge_compiled.cv2_to_imgmsg(array, encoding=encoding)
    _same_image_message(fill_image(Image(), array, encoding), theirs)
    msg = Image()
    writable_image(msg, *array.shape[:2], encoding)[...] = array
    _same_image_message(msg, theirs)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_output_image_bytes_are_cv_bridge_passthrough(bridge, encoding):
    """The same without cv_bridge's compiled part: passthrough names the OpenCV type instead."""
    array = pixels(encoding, seed=2)
    theirs = bridge.cv2_to_imgmsg(array, encoding="passthrough")
    dtype, channels = ENCODINGS[encoding]
    assert theirs.encoding == bridge.dtype_with_channels_to_cvtype2(dtype, channels)
    _same_image_message(fill_image(Image(), array, encoding), theirs, encoding=False)


def _scene(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth colour image (JPEG's artefacts are then small, but the test needs none)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_compressed_images_decode_as_cv_bridge_decodes_them(bridge, fmt):
    """Messages made by cv_bridge's encoder; its passthrough decode is BGR, the node's RGB."""
    rgb = _scene()
    msg = bridge.cv2_to_compressed_imgmsg(np.ascontiguousarray(rgb[..., ::-1]), dst_format=fmt)
    ours, theirs = compressed_to_rgb(msg), bridge.compressed_imgmsg_to_cv2(msg)
    np.testing.assert_array_equal(ours, theirs[..., ::-1])
    if fmt == "png":
        np.testing.assert_array_equal(ours, rgb)


def test_grey_png_decodes_as_cv_bridge_grey_in_three_channels(bridge):
    grey = _scene()[..., 0]
    msg = bridge.cv2_to_compressed_imgmsg(grey, dst_format="png")
    theirs = bridge.compressed_imgmsg_to_cv2(msg)
    assert theirs.ndim == 2
    np.testing.assert_array_equal(compressed_to_rgb(msg), cv2.cvtColor(theirs, cv2.COLOR_GRAY2RGB))


def test_compressed_rgb8_is_cv_bridge_rgb8(bridge_compiled):
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", _scene()[..., ::-1])[1].tobytes()
    np.testing.assert_array_equal(compressed_to_rgb(msg),
                                  bridge_compiled.compressed_imgmsg_to_cv2(msg, "rgb8"))


def _points(nan: bool = False) -> np.ndarray:
    """The node's ~/points for a small depth map: x, y, z, packed rgb, label."""
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.5, 8.0, (12, 16)).astype(np.float32)
    depth[0, :3] = 0.0  # invalid: left out
    camera = PinholeCamera(fx=20.0, fy=21.0, cx=7.5, cy=5.5, width=16, height=12)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, (12, 16)).astype(np.uint32)
    points = PointCloudBuilder().build(depth, camera, stride=1, rgb=rgb, labels=labels)
    if nan:
        points["x"][4] = np.nan
    return points


@pytest.mark.parametrize("nan", [False, True])
def test_published_cloud_reads_back_with_sensor_msgs_py(point_cloud2, nan):
    points = _points(nan)
    msg = fill_pointcloud2(PointCloud2(), points, Header(frame_id="camera_optical"),
                          PointField)
    theirs = point_cloud2.read_points(msg)
    assert theirs.dtype.names == points.dtype.names
    for name in points.dtype.names:
        np.testing.assert_array_equal(theirs[name], points[name])
    kept = point_cloud2.read_points(msg, skip_nans=True)  # honours is_dense, as RViz does
    assert len(kept) == len(points) - int(nan)


def test_published_cloud_is_the_message_sensor_msgs_py_creates(point_cloud2):
    points = _points()
    header = Header(frame_id="camera_optical")
    ours = fill_pointcloud2(PointCloud2(), points, header, PointField)
    theirs = point_cloud2.create_cloud(header, ours.fields, points)
    assert [(f.name, f.offset, f.datatype, f.count) for f in ours.fields] == [
        (f.name, f.offset, f.datatype, f.count) for f in theirs.fields]
    assert (ours.height, ours.width, ours.point_step, ours.row_step) == (
        theirs.height, theirs.width, theirs.point_step, theirs.row_step)
    assert bool(ours.is_bigendian) == bool(theirs.is_bigendian) == (sys.byteorder != "little")
    assert bytes(ours.data) == bytes(theirs.data)
    # create_cloud always says is_dense=False; the node says True when no coordinate is NaN
    assert ours.is_dense and not theirs.is_dense


def test_clouds_from_sensor_msgs_py_read_as_it_reads_them(point_cloud2):
    """pointcloud2_to_array (the replay and tests read ~/points with it) on their messages."""
    xyz = np.random.default_rng(4).normal(size=(9, 3)).astype(np.float32)
    msg = point_cloud2.create_cloud_xyz32(Header(), xyz)
    ours, theirs = pointcloud2_to_array(msg), point_cloud2.read_points(msg)
    assert ours.dtype.names == theirs.dtype.names == ("x", "y", "z")
    for name in ours.dtype.names:
        np.testing.assert_array_equal(ours[name], theirs[name])
