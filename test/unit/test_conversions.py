"""Conversions on real rclpy sensor_msgs messages (no ROS graph needed)."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels not installed")
from sensor_msgs.msg import Image

from mtl_perception.core.codecs import (
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


def test_16bit_depth_is_millimetres_unless_the_recording_says_otherwise():
    units = np.array([[0, 1000, 65535]], np.uint16)
    msg = fill_image(Image(), units, "mono16")
    rep118 = depth_image_to_metres(msg)
    assert rep118.dtype == np.float32 and np.allclose(rep118, units * 1e-3)
    assert np.allclose(depth_image_to_metres(msg, 1e-4), units * 1e-4)  # RealSense "Depth Units"


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


@pytest.mark.parametrize("encoding", ["rgba8", "bgra8", "mono16"])
def test_more_encodings_with_padding(encoding):
    import cv2

    if encoding == "mono16":
        grey = RGB[..., 1].copy()
        out = image_to_rgb(_msg(grey.astype(np.uint16) << 8, "mono16", 4))
        assert np.array_equal(out[..., 0], grey)
        return
    alpha = np.full(RGB.shape[:2], 9, np.uint8)
    src = np.dstack([RGB, alpha]) if encoding == "rgba8" else np.dstack([RGB[..., ::-1], alpha])
    assert np.array_equal(image_to_rgb(_msg(np.ascontiguousarray(src), encoding, 4)), RGB)
    assert cv2 is not None


def test_rgb8_view_is_not_copied_when_asked():
    m = _msg(RGB, "rgb8", 2)
    view = image_to_rgb(m, contiguous=False)
    assert np.array_equal(view, RGB) and not view.flags["C_CONTIGUOUS"]


def test_compressed_jpeg_png_and_corrupt():
    import cv2
    from sensor_msgs.msg import CompressedImage

    from mtl_perception.core.codecs import compressed_to_rgb

    png = CompressedImage(format="png", data=cv2.imencode(".png", RGB[..., ::-1])[1].tobytes())
    assert np.array_equal(compressed_to_rgb(png), RGB)
    jpg = cv2.imencode(".jpg", RGB[..., ::-1])[1].tobytes()
    assert compressed_to_rgb(CompressedImage(format="rgb8; jpeg compressed bgr8",
                                             data=jpg)).shape == RGB.shape
    for bad, needle in ((CompressedImage(format="jpeg", data=jpg[:20]), "cannot decode"),
                        (CompressedImage(format="jpeg", data=b""), "empty"),
                        (CompressedImage(format="16UC1; compressedDepth png", data=jpg),
                         "unsupported"),
                        (CompressedImage(format="theora", data=jpg), "unsupported")):
        with pytest.raises(ImageConversionError, match=needle):
            compressed_to_rgb(bad)


def test_writable_image_writes_into_the_message_and_reuses_it():
    from mtl_perception.core.codecs import image_to_array, writable_image

    m = Image()
    view = writable_image(m, 3, 4, "32FC1")
    view[:] = 1.5
    assert (m.height, m.width, m.step, m.encoding) == (3, 4, 16, "32FC1")
    assert np.array_equal(image_to_array(m), np.full((3, 4), 1.5, np.float32))
    buf = m.data
    writable_image(m, 3, 4, "32FC1")[:] = 2.0
    assert m.data is buf and image_to_array(m)[0, 0] == 2.0
