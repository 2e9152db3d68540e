"""What a bag says about its cameras: both CameraInfos, the depth->colour extrinsic, depth units.

The extrinsic comes from the first source that has it: the config (`bag.extrinsic`), /tf_static,
or the RealSense SDK's own per-stream tf topics (`/device_N/sensor_M/<stream>/tf/K`, which
rosbag files recorded by the SDK carry instead of /tf_static). Depth registration then decides
from the cameras whether depth must be moved into the colour camera at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.geometry.registration import needs_registration
from mtl_perception.core.geometry.transforms import (
    StaticTransforms,
    invert,
    make_transform,
    transform_from_msg,
)
from mtl_training.config import BagConfig
from mtl_training.data.bags.reader import (
    CAMERA_INFO,
    TF_MESSAGE,
    TRANSFORM,
    BagError,
    safe_messages,
)

_VENDOR_TF = re.compile(r"^(/device_\d+)/sensor_\d+/([^/]+)/tf/\d+$")
_VENDOR_DEPTH_UNITS = re.compile(r"^/device_\d+/sensor_\d+/option/Depth Units/value$")
_VENDOR_STREAM = re.compile(r"^(/device_\d+)/sensor_\d+/([^/]+)/")


@dataclass
class CameraModel:
    """What one CameraInfo says (camera None when the driver left K zero)."""

    camera: PinholeCamera | None
    width: int
    height: int
    frame_id: str
    distortion_model: str = ""
    D: list[float] = field(default_factory=list)


@dataclass
class Calibration:
    """Everything read from a bag's calibration topics (first CameraInfo of each camera)."""

    rgb_info: CameraModel | None = None
    depth_info: CameraModel | None = None
    tf: StaticTransforms = field(default_factory=StaticTransforms)
    vendor_tf: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> T_ref_stream
    depth_units: float | None = None  # metres per 16-bit unit, when the recording says


def camera_model(msg: Any) -> CameraModel:
    """A CameraInfo message (ROS 1 `D` or ROS 2 `d`) -> CameraModel."""
    d = msg.d if hasattr(msg, "d") else msg.D
    return CameraModel(PinholeCamera.from_camera_info_or_none(msg), int(msg.width),
                       int(msg.height), msg.header.frame_id, msg.distortion_model,
                       [float(v) for v in d])


def read_calibration(reader: AnyReader, topics: dict[str, str | None],
                     bad_message: Callable[[str], None]) -> Calibration:
    """One read of the calibration topics; an undecodable message is passed to `bad_message`."""
    cal = Calibration()
    infos = (topics["rgb_info"], topics["depth_info"])
    wanted = [c for c in reader.connections if (
        (c.topic in infos and c.msgtype == CAMERA_INFO)
        or (c.topic == "/tf_static" and c.msgtype == TF_MESSAGE)
        or (_VENDOR_TF.match(c.topic) and c.msgtype == TRANSFORM)
        or _VENDOR_DEPTH_UNITS.match(c.topic))]
    for conn, _, raw in safe_messages(reader, wanted, lambda e: None):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception:  # untrusted bag content: counted and reported per topic
            bad_message(conn.topic)
            continue
        if conn.msgtype == CAMERA_INFO:
            model = camera_model(msg)
            if conn.topic == topics["rgb_info"] and cal.rgb_info is None:
                cal.rgb_info = model
            if conn.topic == topics["depth_info"] and cal.depth_info is None:
                cal.depth_info = model
        elif conn.msgtype == TF_MESSAGE:
            cal.tf.add_tf_message(msg)
        elif conn.msgtype == TRANSFORM:
            m = _VENDOR_TF.match(conn.topic)
            cal.vendor_tf[f"{m.group(1)}/{m.group(2)}"] = transform_from_msg(msg)
        elif hasattr(msg, "data"):
            cal.depth_units = float(msg.data)
    return cal


def vendor_stream(topic: str | None) -> str | None:
    """'/device_0/sensor_1/Color_0/image/data' -> '/device_0/Color_0' (RealSense SDK layout)."""
    m = _VENDOR_STREAM.match(topic or "")
    return f"{m.group(1)}/{m.group(2)}" if m else None


def extrinsic(cfg: BagConfig, cal: Calibration, topics: dict[str, str | None],
              colour_frame: str, depth_frame: str) -> tuple[np.ndarray | None, str]:
    """T_colour_depth [4, 4] (p_colour = T p_depth) and where it came from (for the report)."""
    if cfg.extrinsic is not None:
        if len(cfg.extrinsic) != 7:
            raise BagError("bag.extrinsic must be [tx, ty, tz, qx, qy, qz, qw]")
        return make_transform(cfg.extrinsic[:3], cfg.extrinsic[3:]), "config bag.extrinsic"
    if colour_frame and depth_frame and colour_frame != depth_frame and len(cal.tf):
        T = cal.tf.lookup(colour_frame, depth_frame)
        if T is not None:
            return T, f"/tf_static {depth_frame} -> {colour_frame}"
    cs, ds = vendor_stream(topics["rgb"]), vendor_stream(topics["depth"])
    if cs in cal.vendor_tf and ds in cal.vendor_tf:
        # The SDK stores each stream's extrinsic FROM the device's reference stream (depth):
        # p_stream = T_s p_reference, so p_colour = T_c inv(T_d) p_depth. Checked on the sample
        # recording: depth edges line up with colour edges this way and not with the inverse.
        T = cal.vendor_tf[cs] @ invert(cal.vendor_tf[ds])
        return T, f"RealSense tf topics ({ds.split('/')[-1]} -> {cs.split('/')[-1]})"
    return None, "none found (cameras assumed co-located; set bag.extrinsic)"


def registration_mode(depth_hw: tuple[int, int], colour_hw: tuple[int, int],
                      cam_d: PinholeCamera | None, cam_c: PinholeCamera | None,
                      T: np.ndarray | None, extrinsic_source: str,
                      path: Path) -> tuple[bool, str]:
    """(register depth into colour?, how depth was used) for the bag's first pair.

    Without both CameraInfos depth can only be used as recorded, which is right when it is the
    colour image's size (an aligned-depth topic) and an error otherwise.
    """
    if cam_d is None or cam_c is None:
        if tuple(depth_hw) == tuple(colour_hw):
            return False, "used as recorded (no camera_info: assumed already registered)"
        raise BagError(f"{path}: cannot register depth {depth_hw[1]}x{depth_hw[0]} into colour "
                       f"{colour_hw[1]}x{colour_hw[0]}: camera_info missing for "
                       f"{'depth' if cam_d is None else 'colour'} (set bag.rgb_info_topic / "
                       "bag.depth_info_topic)")
    depth_cam = cam_d.resized(depth_hw[1], depth_hw[0])
    colour_cam = cam_c.resized(colour_hw[1], colour_hw[0])
    if needs_registration(depth_cam, colour_cam, T):
        return True, f"registered into colour (extrinsic: {extrinsic_source})"
    return False, "already registered to colour (same size, intrinsics and frame)"
