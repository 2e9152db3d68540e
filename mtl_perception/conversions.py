"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Duck-typed: works on rclpy messages (data is array.array) and rosbags messages (data is a numpy
array) alike, because both expose height, width, encoding, step, is_bigendian and a buffer in data.
Every malformed message raises ImageConversionError with the reason, so callers can drop the frame
and count it instead of crashing.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
MAX_SIDE = 16384  # larger images are certainly corrupt headers, not cameras


class ImageConversionError(ValueError):
    """The message cannot be read as an image; the text says why."""


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def image_to_array(msg: Any) -> np.ndarray:
    """Image message -> array view [H, W] or [H, W, C] honouring step (row padding) and endianness."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding '{enc}' "
                                   f"(supported: {', '.join(sorted(ENCODINGS))})")
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ImageConversionError(f"invalid size {w}x{h}")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(f"step {step} < width x bytes per pixel ({row})")
    buf = _buffer(msg.data)
    if buf.size < step * (h - 1) + row:
        raise ImageConversionError(f"data has {buf.size} bytes, {encoding_size(h, step, row)} "
                                   f"needed for {w}x{h} {enc} with step {step}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    arr = rows.view(dtype.newbyteorder(">") if msg.is_bigendian and dtype.itemsize > 1 else dtype)
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(dtype)
    return arr


def encoding_size(h: int, step: int, row: int) -> int:
    return step * (h - 1) + row


def image_to_rgb(msg: Any) -> np.ndarray:
    """Any supported colour/grey Image -> contiguous uint8 [H, W, 3] RGB (mono16 scaled to 8 bit)."""
    arr = image_to_array(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return np.ascontiguousarray(arr)
    if enc == "bgr8":
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGBA2RGB)
    if enc == "bgra8":
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGRA2RGB)
    if enc in ("mono8", "8UC1"):
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)
    if enc in ("mono16", "16UC1"):
        grey = (arr >> 8).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    raise ImageConversionError(f"encoding '{enc}' is not a colour or grey image")


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage (jpeg/png) -> uint8 [H, W, 3] RGB."""
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("empty compressed image")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageConversionError(f"cannot decode compressed image (format '{msg.format}', "
                                   f"{buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def depth_image_to_metres(msg: Any) -> np.ndarray:
    """Depth Image -> float32 [H, W] metres, 0 = invalid (REP 118: 16UC1/mono16 are millimetres)."""
    arr = image_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return arr.astype(np.float32) * 0.001
    if msg.encoding == "32FC1":
        d = np.array(arr, dtype=np.float32)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raise ImageConversionError(f"encoding '{msg.encoding}' is not a depth image")


def fill_image(msg: Any, array: np.ndarray, encoding: str, header: Any | None = None) -> Any:
    """Write a contiguous array into an Image message (rclpy or rosbags) and return it."""
    array = np.ascontiguousarray(array)
    dtype, channels = ENCODINGS[encoding]
    if array.dtype != dtype:
        raise ValueError(f"{encoding} needs {dtype}, got {array.dtype}")
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0 if isinstance(msg.is_bigendian, int) else False
    msg.step = int(array.shape[1] * channels * dtype.itemsize)
    msg.data = _message_bytes(msg, array)
    return msg


def _message_bytes(msg: Any, array: np.ndarray) -> Any:
    """rosbags wants a numpy uint8 array; rclpy accepts any bytes-like buffer cheaply."""
    if isinstance(getattr(msg, "data", None), np.ndarray):
        return array.reshape(-1).view(np.uint8)
    return array.tobytes()
