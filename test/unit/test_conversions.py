"""Conversions on real rclpy sensor_msgs messages (no ROS graph needed)."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels not installed")
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.conversions import (  # noqa: E402
    ImageConversionError,
    depth_image_to_metres,
    fill_image,
    image_to_rgb,
)


def _msg(arr, encoding, pad=0):
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    m = Image(height=h, width=w, encoding=encoding, step=row.shape[1] + pad)
    m.data = data.tobytes()
    return m


RGB = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_with_row_padding(pad):
    assert np.array_equal(image_to_rgb(_msg(RGB, "rgb8", pad)), RGB)
    assert np.array_equal(image_to_rgb(_msg(RGB[..., ::-1].copy(), "bgr8", pad)), RGB)
    grey = RGB[..., 0].copy()
    out = image_to_rgb(_msg(grey, "mono8", pad))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 1], grey)


def test_round_trip_depth_and_labels():
    depth = np.random.default_rng(1).random((4, 6)).astype(np.float32) * 5
    msg = fill_image(Image(), depth, "32FC1")
    assert msg.step == 24 and msg.encoding == "32FC1"
    assert np.array_equal(depth_image_to_metres(msg), depth)
    mm = fill_image(Image(), (depth * 1000).astype(np.uint16), "16UC1")
    assert np.allclose(depth_image_to_metres(mm), depth, atol=1e-3)


@pytest.mark.parametrize("change,needle", [
    ({"encoding": "yuv422_yuy2"}, "unsupported encoding"),
    ({"height": 0}, "invalid size"),
    ({"width": 100000}, "invalid size"),
    ({"step": 3}, "step"),
    ({"height": 50}, "bytes"),
])
def test_malformed_messages_raise_with_reason(change, needle):
    m = _msg(RGB, "rgb8")
    for k, v in change.items():
        setattr(m, k, v)
    with pytest.raises(ImageConversionError, match=needle):
        image_to_rgb(m)
