"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Duck-typed: works on rclpy messages (data is array.array) and rosbags messages (data is a numpy
array) alike, because both expose height, width, encoding, step, is_bigendian and a buffer in data.
Every malformed message raises ImageConversionError with the reason, so callers can drop the frame
and count it instead of crashing.
"""

from __future__ import annotations

import array
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
# 16.8 MP (4096 x 4096): above every camera the node is meant for (4K UHD is 8.3 MP, a 12 MP
# sensor 12.6 MP). A decoded frame costs 3 bytes a pixel (50 MB here) and the node's outputs at
# input resolution another ~12 (labels, colours, depth, confidence), so a frame at this bound
# still fits the few hundred MB a serving node holds anyway; the old 64 MP bound let one 0.8 MB
# PNG claim a 200 MB decode and 1 GB of outputs. Raw and compressed frames share the bound.
MAX_PIXELS = 4096 * 4096
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class ImageConversionError(ValueError):
    """The message cannot be read as an image; the text says why."""


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def image_to_array(msg: Any) -> np.ndarray:
    """Image message -> array view [H, W] or [H, W, C] honouring step (row padding) and byte order.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding '{enc}' "
                                   f"(supported: {', '.join(sorted(ENCODINGS))})")
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(w, h)
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(f"step {step} < width x bytes per pixel ({row})")
    buf = _buffer(msg.data)
    if buf.size < step * (h - 1) + row:
        raise ImageConversionError(f"data has {buf.size} bytes, {step * (h - 1) + row} "
                                   f"needed for {w}x{h} {enc} with step {step}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    arr = rows.view(dtype.newbyteorder(">") if msg.is_bigendian and dtype.itemsize > 1 else dtype)
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(dtype)
    return arr


def image_to_rgb(msg: Any, contiguous: bool = True) -> np.ndarray:
    """Any supported colour/grey Image -> uint8 [H, W, 3] RGB (mono16 as grey, top 8 bits).

    rgb8 comes back as a view of the message buffer; with row padding that view is strided, and
    `contiguous=False` keeps it so (OpenCV reads strided rows), saving a full-frame copy. Every
    other encoding is converted by OpenCV straight from the (possibly padded) view: one pass.
    """
    arr = image_to_array(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return np.ascontiguousarray(arr) if contiguous else arr
    conversion = _TO_RGB.get(enc)
    if conversion is not None:
        return cv2.cvtColor(arr, conversion)
    if enc in ("mono16", "16UC1"):
        return cv2.cvtColor((arr >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    raise ImageConversionError(f"encoding '{enc}' is not a colour or grey image")


_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0..CF except DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone (no length field): TEM, RST0..7, SOI; EOI ends the stream.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8), 0xD8])
_JPEG_MAX_SEGMENTS = 256
# A progressive JPEG re-walks every coefficient of the frame once per scan, so a small file of
# many tiny scans is a CPU bomb; encoders write about 10 (libjpeg's default script).
_JPEG_MAX_SCANS = 64


def compressed_size(data: np.ndarray) -> tuple[str, int, int]:
    """(kind, width, height) from a PNG (IHDR) or JPEG (SOFn) header, without decoding.

    The header is all a decompression bomb cannot fake: a 0.8 MB PNG of zeros says
    16384 x 16384 in its first 24 bytes and would take 1.5 GB and 6 s to decode. Only PNG and
    JPEG are recognised (by their bytes, not the message's format string); anything else
    (WebP, BMP, TIFF, ... which OpenCV would otherwise decode unbounded) raises
    ImageConversionError, as does a header that ends or breaks before the size.
    """
    head = data[:16].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        if data.size < 24 or data[12:16].tobytes() != b"IHDR":
            raise ImageConversionError("cannot decode compressed image: PNG header (IHDR) "
                                       f"missing or truncated ({data.size} bytes)")
        w = int.from_bytes(data[16:20].tobytes(), "big")
        h = int.from_bytes(data[20:24].tobytes(), "big")
        return "png", w, h
    if head.startswith(b"\xff\xd8"):
        w, h = _jpeg_size(data)
        # FF DA is start of scan: entropy-coded data never holds FF + non-zero (byte stuffing),
        # so this counts every scan (and over-counts only bytes inside APPn/COM segments).
        scans = data.tobytes().count(b"\xff\xda")
        if scans > _JPEG_MAX_SCANS:
            raise ImageConversionError(f"JPEG {w}x{h} has {scans} scans (at most "
                                       f"{_JPEG_MAX_SCANS} accepted), not decoded")
        return "jpeg", w, h
    raise ImageConversionError(f"unknown compressed image type (first bytes {head[:4].hex(' ')}"
                               "): only PNG and JPEG are decoded")


def _jpeg_size(data: np.ndarray) -> tuple[int, int]:
    """(width, height) from the first SOFn segment, walking the marker segments before it.

    Bounded work whatever the bytes: at most _JPEG_MAX_SEGMENTS segments are walked (cameras
    write a handful: APPn, DQT, DHT, DRI), each a jump by its length field.
    """
    mv = memoryview(data).cast("B")
    n, i = len(mv), 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        if i < n and mv[i] != 0xFF:  # stray bytes before a marker: libjpeg skips them too
            found = np.flatnonzero(data[i:] == 0xFF)
            i = i + int(found[0]) if found.size else n
        while i < n and mv[i] == 0xFF:  # fill bytes
            i += 1
        if i + 2 >= n:
            break
        marker = mv[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = (mv[i] << 8) | mv[i + 1]
        if length < 2:
            break
        if marker in _JPEG_SOF:
            if i + 7 > n:
                break
            h = (mv[i + 3] << 8) | mv[i + 4]
            w = (mv[i + 5] << 8) | mv[i + 6]
            if h == 0:  # height given later by a DNL marker: unknown until decoded
                raise ImageConversionError("cannot decode compressed image: JPEG frame height "
                                           "0 (set by a DNL marker) is not accepted")
            return w, h
        i += length
    raise ImageConversionError("cannot decode compressed image: JPEG header ends or breaks "
                               f"before the frame size (no SOF marker found in {n} bytes)")


def check_size(width: int, height: int, where: str = "") -> None:
    """ImageConversionError unless 0 < side <= MAX_SIDE and width x height <= MAX_PIXELS."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise ImageConversionError(
            f"invalid size {width}x{height}{where} (accepted: sides 1..{MAX_SIDE}, "
            f"at most {MAX_PIXELS / 1e6:.1f} MP)")


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage (jpeg/png, any image_transport format string) -> uint8 [H, W, 3] RGB.

    The format string only gates what we accept (compressedDepth and video codecs are refused);
    the type is read from the bytes, so a PNG labelled jpeg still decodes. The size is read from
    the header and checked before anything is decoded: a frame too big to accept is refused in
    microseconds instead of after a decode that can take gigabytes (see compressed_size).
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or (fmt and not any(f in fmt for f in COMPRESSED_FORMATS)):
        raise ImageConversionError(f"unsupported compressed format '{msg.format}' "
                                   "(supported: jpeg, png)")
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("empty compressed image")
    kind, w, h = compressed_size(buf)
    check_size(w, h, f" in the {kind} header, not decoded")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageConversionError(f"cannot decode compressed image (format '{msg.format}', "
                                   f"{buf.size} bytes)")
    h, w = img.shape[:2]
    check_size(w, h)  # EXIF rotation may swap the sides; nothing else changes the size
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second frame buffer


def depth_image_to_metres(msg: Any, scale_16bit: float = 0.001) -> np.ndarray:
    """Depth Image -> float32 [H, W] metres, 0 = invalid.

    16UC1/mono16 hold integer units of `scale_16bit` metres: millimetres by REP 118, but a
    recording can say otherwise (the RealSense SDK's "Depth Units" option), so bag readers pass
    the recorded scale. 32FC1 is metres already; NaN, inf and negative values become 0.
    """
    arr = image_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return arr.astype(np.float32) * np.float32(scale_16bit)
    if msg.encoding == "32FC1":
        d = np.array(arr, dtype=np.float32)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raise ImageConversionError(f"encoding '{msg.encoding}' is not a depth image "
                               "(16UC1, mono16 or 32FC1)")


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
    _store_bytes(msg, array)
    return msg


def _store_bytes(msg: Any, array_: np.ndarray) -> None:
    """Put the bytes of `array_` into msg.data with one copy at most.

    rosbags messages hold numpy arrays (a view, no copy). rclpy messages hold an array.array that
    the data setter copies again unless ROS_PYTHON_CHECK_FIELDS is set, so the bytes are written
    into the message's own array.array in place instead of assigning a new one.
    """
    raw = np.ascontiguousarray(array_).reshape(-1).view(np.uint8)
    data = getattr(msg, "data", None)
    if isinstance(data, np.ndarray):
        msg.data = raw
    elif not isinstance(data, array.array):
        msg.data = raw.tobytes()
    elif len(data) == raw.size:
        np.frombuffer(data, np.uint8)[:] = raw
    else:
        del data[:]
        data.frombytes(raw)


def writable_image(msg: Any, height: int, width: int, encoding: str) -> np.ndarray:
    """A writable numpy view [H, W] / [H, W, C] onto an rclpy Image's own data buffer.

    The node computes outputs straight into the message (cv2 `dst=`, numpy `out=`), so publishing
    costs no extra copy; the buffer is reused while the size stays the same. rclpy serialises on
    publish(), so the next frame may overwrite the buffer as soon as publish() returns.
    """
    dtype, channels = ENCODINGS[encoding]
    step = width * channels * dtype.itemsize
    nbytes = step * height
    data = msg.data
    if not isinstance(data, array.array) or len(data) != nbytes:
        msg.data = array.array("B", bytes(nbytes))
        data = msg.data  # the setter may store a copy: view what the message holds
    msg.height, msg.width, msg.step = int(height), int(width), int(step)
    msg.encoding = encoding
    msg.is_bigendian = 0 if isinstance(msg.is_bigendian, int) else False
    view = np.frombuffer(data, dtype=dtype)
    return view.reshape(height, width, channels) if channels > 1 else view.reshape(height, width)


# PointField datatypes (sensor_msgs/PointField constants) <-> numpy
POINT_FIELD_TYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8), 2: np.dtype(np.uint8), 3: np.dtype(np.int16), 4: np.dtype(np.uint16),
    5: np.dtype(np.int32), 6: np.dtype(np.uint32), 7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
_NUMPY_TO_POINT_FIELD = {dt: code for code, dt in POINT_FIELD_TYPES.items()}


def fill_pointcloud2(msg: Any, points: np.ndarray, header: Any, field_type: Any) -> Any:
    """Structured array [N] -> unorganised PointCloud2 (height 1), fields in dtype order.

    `field_type` is the PointField class of the message package in use (rclpy or rosbags).
    """
    dt = points.dtype
    if dt.names is None:
        raise ValueError("points must be a structured array (see pointcloud.POINT_DTYPE)")
    fields = []
    for name in dt.names:
        fdt, offset = dt.fields[name][0], dt.fields[name][1]
        fields.append(field_type(name=name, offset=int(offset),
                                 datatype=_NUMPY_TO_POINT_FIELD[fdt.newbyteorder("=")],
                                 count=1))
    msg.header = header
    msg.height, msg.width = 1, int(points.shape[0])
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = int(dt.itemsize)
    msg.row_step = int(dt.itemsize * points.shape[0])
    # Dense = no NaN/inf coordinates. PointCloudBuilder leaves invalid depths out, but bad
    # intrinsics (or another producer) can still put NaN in x/y, so it is computed, not assumed.
    msg.is_dense = bool(all(np.isfinite(points[name]).all() for name in ("x", "y", "z")
                            if name in dt.names and dt.fields[name][0].kind == "f"))
    raw = np.ascontiguousarray(points).view(np.uint8).reshape(-1)
    _store_bytes(msg, raw)
    return msg


def pointcloud2_to_array(msg: Any) -> np.ndarray:
    """PointCloud2 -> structured array [height * width] with the message's named fields."""
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in POINT_FIELD_TYPES:
            raise ImageConversionError(f"point field '{f.name}' has unknown datatype {f.datatype}")
        dt = POINT_FIELD_TYPES[f.datatype]
        dt = dt.newbyteorder(">") if msg.is_bigendian else dt
        names.append(f.name)
        formats.append((dt, (int(f.count),)) if f.count > 1 else dt)
        offsets.append(int(f.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    buf = _buffer(msg.data)
    if buf.size < n * msg.point_step:
        raise ImageConversionError(f"point cloud data has {buf.size} bytes, "
                                   f"{n * msg.point_step} needed")
    return np.frombuffer(buf[: n * msg.point_step].tobytes(), dtype=dtype)
