"""Hostile frames and camera infos: refused fast, in little memory, counted; the node lives on.

The corpus is generated here (nothing checked in): decompression bombs whose headers claim huge
sizes, truncated and mislabelled compressed images, CameraInfos that would silently corrupt every
point, and a real node over loopback DDS that gets a bomb and then serves the next good frame.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.codecs import (
    MAX_PIXELS,
    ImageConversionError,
    compressed_to_rgb,
    fill_pointcloud2,
)
from mtl_perception.core.geometry.pointcloud import POINT_DTYPE
from mtl_perception.ros.client import FrameTooLarge, NodeDiagnostics, PerceptionClient
from mtl_perception.ros.diagnostics import DDS_FRAME_LIMIT_BYTES
from mtl_perception.ros.pipeline import FramePipeline, check_camera_info
from mtl_perception.ros.process import start_node, stop_node
from mtl_perception.runtime.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]
SMALL = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)


# ---- the corpus ------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(width: int, height: int) -> bytes:
    """A real, decodable all-zero 1-bit grey PNG: tiny file, width x height x 3 bytes decoded."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    rows_per_chunk = max(1, (1 << 20) // len(row))
    parts, left = [], height
    while left:
        n = min(left, rows_per_chunk)
        parts.append(comp.compress(row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def _jpeg() -> bytes:
    return cv2.imencode(".jpg", SMALL)[1].tobytes()


def jpeg_claiming(width: int, height: int, marker: int = 0xC0, prefix: bytes = b"") -> bytes:
    """A real small JPEG whose SOFn says width x height (after optional extra segments)."""
    data = bytearray(_jpeg())
    i = 2
    while True:  # walk to the SOF0 the encoder wrote and rewrite its size
        m, length = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        if m == 0xC0:
            data[i + 1] = marker
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            break
        i += 2 + length
    return bytes(data[:2]) + prefix + bytes(data[2:])


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def hostile_compressed() -> dict[str, bytes]:
    """name -> bytes that must be refused before any large decode."""
    jpg = _jpeg()
    sof_at = jpg.index(b"\xff\xc0")
    scan = jpg[jpg.index(b"\xff\xda"):]
    return {
        "png 30000x30000 zeros": png_bomb(30000, 30000),
        "png 16384x16384 zeros": png_bomb(16384, 16384),
        "png 4097x4097 (just over the pixel bound)": png_bomb(4097, 4097),
        "png 20000x1 (side over the bound)": png_bomb(20000, 1),
        "png 0x0": png_bomb(1, 1).replace(struct.pack(">II", 1, 1), struct.pack(">II", 0, 0), 1),
        "png truncated in IHDR": png_bomb(8, 8)[:20],
        "png without IHDR first": b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"a\x00b") + b"\x00" * 8,
        "jpeg SOF0 65535x65535": jpeg_claiming(65535, 65535),
        "jpeg SOF2 progressive 20000x20000": jpeg_claiming(20000, 20000, 0xC2),
        "jpeg SOF1 4097x4097": jpeg_claiming(4097, 4097, 0xC1),
        "jpeg huge after APP1 and COM": jpeg_claiming(
            30000, 30000, prefix=_segment(0xE1, b"Exif\x00\x00" + b"\x00" * 4000)
            + _segment(0xFE, b"comment")),
        "jpeg height 0 (DNL)": jpeg_claiming(640, 0),
        "jpeg truncated before SOF": jpg[:sof_at + 3],
        "jpeg SOI then garbage": b"\xff\xd8 not a jpeg at all" * 10,
        "jpeg scan before any SOF": b"\xff\xd8" + scan,
        "jpeg 300 segments before SOF": b"\xff\xd8" + _segment(0xFE, b"x") * 300 + jpg[2:],
        "jpeg 100 scans": jpg[:-2] + scan[:-2] * 100 + b"\xff\xd9",
        "webp labelled jpeg": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40,
        "bmp labelled jpeg": cv2.imencode(".bmp", SMALL)[1].tobytes(),
        "tiff labelled png": cv2.imencode(".tiff", SMALL)[1].tobytes(),
        "random bytes": np.random.default_rng(1).integers(0, 255, 5000, np.uint8).tobytes(),
    }


# ---- compressed input ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(hostile_compressed()))
def test_hostile_compressed_is_refused_with_a_reason(name):
    data = hostile_compressed()[name]
    fmt = "png" if "png" in name else "jpeg"
    t0 = time.perf_counter()
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(CompressedImage(format=fmt, data=data))
    assert time.perf_counter() - t0 < 0.5, name
    text = str(err.value)
    assert "\n" not in text and text, name
    if "x" in name.split()[1] and name.split()[1][0].isdigit():  # size bombs name the size
        assert name.split()[1] in text, text


def test_good_compressed_frames_still_decode():
    png = cv2.imencode(".png", SMALL[..., ::-1])[1].tobytes()
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="jpeg", data=png)), SMALL)
    with_exif = jpeg_claiming(32, 24, prefix=_segment(0xE1, b"Exif\x00\x00" + b"\x00" * 64))
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=with_exif)).shape == (24, 32, 3)
    progressive = cv2.imencode(".jpg", SMALL, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=progressive)).shape == (24, 32,
                                                                                          3)


# Peak RSS from VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
# (pytest, with torch loaded), VmHWM belongs to the new process image.
_MEASURE = """
import json, sys, time
from sensor_msgs.msg import CompressedImage
from mtl_perception.core.codecs import ImageConversionError, compressed_to_rgb
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
out = {}
for path in sys.argv[1:]:
    msg = CompressedImage(format="png", data=open(path, "rb").read())
    before = hwm_kb()
    t0 = time.perf_counter()
    try:
        compressed_to_rgb(msg)
        result = "decoded"
    except ImageConversionError as exc:
        result = str(exc)
    out[path] = {"s": time.perf_counter() - t0, "result": result,
                 "grew_kb": hwm_kb() - before}
out["peak_kb"] = hwm_kb()
print(json.dumps(out))
"""


def test_bombs_cost_milliseconds_and_no_memory(tmp_path):
    """The issue's bombs in a fresh process: peak RSS is the process's, not pytest's."""
    paths = []
    for w in (30000, 16384):
        p = tmp_path / f"zero{w}.png"
        p.write_bytes(png_bomb(w, w))
        paths.append(str(p))
    run = subprocess.run([sys.executable, "-c", _MEASURE, *paths], capture_output=True,
                         text=True, timeout=60, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for p in paths:
        assert "not decoded" in out[p]["result"], out[p]
        assert out[p]["s"] < 1.0, out[p]
        assert out[p]["grew_kb"] < 50 * 1024, out[p]
    assert out["peak_kb"] < 300 * 1024, out


def test_pixel_bound_is_what_a_camera_sends():
    assert 3840 * 2160 <= 4000 * 3000 <= MAX_PIXELS < 16384 * 16384 // 8


# ---- camera info -----------------------------------------------------------------------------

def _info(width: int = 640, height: int = 480, fx: float = 500.0, fy: float = 500.0,
          cx: float = 319.5, cy: float = 239.5) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _bad_infos() -> dict[str, CameraInfo]:
    nan_p = _info()
    nan_p.p = [float("nan")] * 12
    return {
        "NaN cx": _info(cx=float("nan")),
        "NaN cy": _info(cy=float("nan")),
        "inf fy": _info(fy=float("inf")),
        "fx 1e-30": _info(fx=1e-30),
        "fx 0 (uncalibrated)": _info(fx=0.0, fy=0.0),
        "negative fy": _info(fy=-500.0),
        "fx 1e12": _info(fx=1e12),
        "cx far outside the image": _info(cx=1e9),
        "P not finite": nan_p,
    }


@pytest.mark.parametrize("name", list(_bad_infos()))
def test_bad_camera_info_is_refused(name):
    with pytest.raises(ValueError) as err:
        check_camera_info(_bad_infos()[name])
    assert "\n" not in str(err.value)


def test_good_camera_info_and_sizeless_one_pass():
    assert check_camera_info(_info()).fx == 500.0
    sizeless = _info(width=0, height=0)
    assert check_camera_info(sizeless).size == (0, 0)
    # ...but the size check still applies once an image gives the size
    with pytest.raises(ValueError, match="focal length"):
        PinholeCamera.from_camera_info(_info(width=0, height=0, fx=1e-3), 640, 480)


class _Pub:
    def __init__(self) -> None:
        self.msgs: list[object] = []

    def publish(self, msg: object) -> None:
        self.msgs.append(msg)


def test_aspect_mismatch_warns_once_per_size_pair(tiny_artifact):
    notices: list[str] = []
    pipe = FramePipeline(Predictor(tiny_artifact, device="cpu"), network_resolution=False,
                         warn=lambda _: None, notice=notices.append)
    info = _info(1280, 720, fx=900.0, fy=900.0, cx=639.5, cy=359.5)
    for _ in range(3):
        cam = pipe.output_camera(info, 640, 480, 640, 480)
    assert len(notices) == 1 and "1280x720" in notices[0] and "640x480" in notices[0]
    assert (cam.fx, cam.fy) == (450.0, 600.0)  # still served, as the warning says
    pipe.output_camera(info, 320, 240, 320, 240)  # another pair: one more warning
    assert len(notices) == 2
    pipe.output_camera(info, 640, 360, 640, 360)  # same aspect ratio: no warning
    assert len(notices) == 2


# ---- point clouds ----------------------------------------------------------------------------

def test_cloud_is_dense_only_without_nan():
    pts = np.zeros(4, POINT_DTYPE)
    pts["z"] = 1.0
    assert fill_pointcloud2(PointCloud2(), pts, None, PointField).is_dense is True
    pts["x"][2] = np.nan
    assert fill_pointcloud2(PointCloud2(), pts, None, PointField).is_dense is False
    pts["x"][2], pts["y"][0] = 0.0, np.inf
    assert fill_pointcloud2(PointCloud2(), pts, None, PointField).is_dense is False


# ---- transport limit -------------------------------------------------------------------------

@pytest.mark.ros
def test_client_refuses_a_frame_the_dds_profile_cannot_carry():
    with PerceptionClient(node_name="/nobody/mtl_perception", image_topic="/nobody/image",
                          outputs=()) as client:
        big = Image(height=1, width=DDS_FRAME_LIMIT_BYTES // 3 + 1, encoding="rgb8")
        big.step = big.width * 3
        big.data = bytes(big.step)
        with pytest.raises(FrameTooLarge, match="MB"):
            client.publish_raw(big, 1)


# ---- a real node -----------------------------------------------------------------------------

def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.ros
def test_node_refuses_bombs_and_bad_camera_info_then_serves(tiny_artifact, tmp_path):
    log = tmp_path / "node.log"
    ns, image, info_topic = "/hostile", "/hostile/image", "/hostile/camera_info"
    proc = start_node(tiny_artifact, params={"device": "cpu", "image_transport": "compressed"},
                      params_file=REPO / "config" / "perception.yaml",
                      remaps={"__ns": ns, "image": image, "camera_info": info_topic},
                      log_path=log)
    client = PerceptionClient(node_name=f"{ns}/mtl_perception", image_topic=image,
                              outputs=("depth", "points"), compressed=True,
                              camera_info_topic=info_topic)
    diag = NodeDiagnostics(client, f"{ns}/mtl_perception")
    stamp = [1_700_000_000_000_000_000]

    def send(msg, info: CameraInfo | None = None) -> int:
        stamp[0] += 10_000_000
        msg.header = client.make_header(stamp[0], "cam")
        if info is not None:
            info.header = msg.header
            client.info_pub.publish(info)
        client.publish_raw(msg, stamp[0])
        return stamp[0]

    rgb = np.ascontiguousarray(np.repeat(np.repeat(SMALL, 2, 0), 2, 1))  # 64x48
    good = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes())
    good_info = _info(64, 48, 50.0, 55.0, 31.5, 23.5)

    def served(info: CameraInfo | None, outputs=("depth", "points")):
        for _ in range(4):  # best effort input: resend until answered
            rec = client.wait_for(send(good, info), outputs, timeout=5)
            if rec is not None:
                return rec
        raise AssertionError(f"good frame not served; log:\n{log.read_text()}")

    try:
        client.wait_until_connected(timeout=90)
        served(good_info)
        hwm_before = _vm_hwm_mb(proc.pid)
        bombs = [png_bomb(30000, 30000), png_bomb(16384, 16384), jpeg_claiming(65535, 65535)]
        for data in bombs:
            bad = send(CompressedImage(format="png", data=data))
            assert client.wait_for(bad, ("depth",), timeout=1.0) is None
        d = diag.wait(lambda d: int(d["frames_rejected"]) >= len(bombs), timeout=15)
        assert "not decoded" in d["last_reject_reason"], d
        served(good_info)  # the next good frame is still answered
        assert _vm_hwm_mb(proc.pid) - hwm_before < 100, "a bomb grew the node's peak memory"

        # A bad camera_info is counted and ignored: the last good one keeps points flowing.
        served(_info(64, 48, fx=1e-30))
        d = diag.wait(lambda d: int(d["camera_info_rejected"]) >= 1, timeout=15)
        # A camera_info of another aspect ratio warns once, naming both sizes.
        for _ in range(2):
            served(_info(1280, 720, 900.0, 900.0, 639.5, 359.5))
        assert proc.poll() is None
    finally:
        client.close()
        code = stop_node(proc)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text
    assert "ignoring camera_info" in text and "1e-30" in text, text
    mismatch = [line for line in text.splitlines() if "aspect ratios differ" in line]
    assert len(mismatch) == 1 and "1280x720" in mismatch[0] and "64x48" in mismatch[0], text
