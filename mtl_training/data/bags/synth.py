"""Write realistic RGB-D rosbags from the procedural world, with the `rosbags` writer.

Tests and the extraction benchmark need bags with the quirks real robots produce (compressed
colour, each depth encoding, a depth camera with its own intrinsics, stamps that differ between
sensors, missing camera_info, out-of-order stamps). Rendering them from the synthetic world keeps
ground truth exact: the colour camera's true depth is known, so registration can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mtl_training.data.sources.synthetic import WorldConfig, render_frame

RGB_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_rect_raw"
RGB_INFO_TOPIC = "/camera/color/camera_info"
DEPTH_INFO_TOPIC = "/camera/depth/camera_info"
LABEL_TOPIC = "/camera/color/labels"


@dataclass
class SynthBagSpec:
    frames: int = 6
    height: int = 60
    width: int = 80
    storage: str = "mcap"  # mcap | sqlite3 | ros1
    compressed: bool = False  # colour as CompressedImage (jpeg) on RGB_TOPIC/compressed
    depth_encoding: str = "16UC1"  # 16UC1 | mono16 | 32FC1
    depth_scale: int = 1  # depth camera resolution = colour / depth_scale (1 = registered)
    camera_info: bool = True
    labels: bool = False
    period_s: float = 0.1
    depth_offset_s: float = 0.01  # depth stamps lag colour stamps by this
    shuffle_stamps: bool = False  # record colour messages out of stamp order
    seed: int = 0
    start_s: float = 1000.0
    # /tf_static colour -> depth optical frame (depth camera's pose in the colour frame):
    # translation metres + quaternion (x, y, z, w); None = no tf (cameras co-located)
    tf_static: tuple[float, ...] | None = None
    zero_stamps: tuple[int, ...] = ()  # frames stamped 0 on colour and depth (all: no clock)
    repeat_stamps: tuple[int, ...] = ()  # frames whose header stamps repeat the previous frame's
    # (topic, frame index) pairs whose message is random bytes of the same length (seeded)
    random_bytes: tuple[tuple[str, int], ...] = ()
    # 32FC1 only: every depth pixel of every frame this value (nan, -inf: a broken sensor)
    depth_fill: float | None = None


def _typestore(spec: SynthBagSpec):
    return get_typestore(Stores.ROS1_NOETIC if spec.storage == "ros1" else Stores.ROS2_HUMBLE)


def _header(ts, stamp_ns: int, frame_id: str, ros1: bool):
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    if ros1:
        return Header(seq=0, stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def make_image(ts, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str,
               ros1: bool = False):
    Image = ts.types["sensor_msgs/msg/Image"]
    array = np.ascontiguousarray(array)
    step = array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    return Image(header=_header(ts, stamp_ns, frame_id, ros1), height=array.shape[0],
                 width=array.shape[1], encoding=encoding, is_bigendian=0, step=step,
                 data=array.reshape(-1).view(np.uint8))


def make_camera_info(ts, stamp_ns: int, frame_id: str, K: np.ndarray, h: int, w: int,
                     ros1: bool = False):
    Info = ts.types["sensor_msgs/msg/CameraInfo"]
    RoI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    P = np.zeros(12)
    P[:3] = K[0]
    P[4:7] = K[1]
    P[8:11] = K[2]
    kw = dict(header=_header(ts, stamp_ns, frame_id, ros1), height=h, width=w,
              distortion_model="plumb_bob", binning_x=0, binning_y=0,
              roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    names = ("D", "K", "R", "P") if ros1 else ("d", "k", "r", "p")
    kw.update({names[0]: np.zeros(5), names[1]: K.reshape(-1).astype(np.float64),
               names[2]: np.eye(3).reshape(-1), names[3]: P})
    return Info(**kw)


def depth_intrinsics(K: np.ndarray, scale: int) -> np.ndarray:
    """Intrinsics of the image `full[::scale, ::scale]` (depth pixel i is full pixel scale*i)."""
    Kd = K.copy()
    Kd[:2, :3] /= scale
    return Kd


def write_synthetic_bag(path: str | Path, spec: SynthBagSpec | None = None) -> dict:
    """Write a bag; returns the ground truth {stamps, depth (colour camera), seg, K}.

    `stamps` are the true colour times; the messages carry them unless `zero_stamps` or
    `repeat_stamps` ask for a faulty driver (then `header_stamps` is what the bag says).
    """
    path = Path(path)
    spec = spec or SynthBagSpec()
    ts = _typestore(spec)
    ros1 = spec.storage == "ros1"
    world = WorldConfig(height=spec.height, width=spec.width)
    K = world.intrinsics()
    Kd = depth_intrinsics(K, spec.depth_scale)
    dh, dw = spec.height // spec.depth_scale, spec.width // spec.depth_scale
    frames = [render_frame(spec.seed, i, world) for i in range(spec.frames)]
    stamps = [round((spec.start_s + i * spec.period_s) * 1e9) for i in range(spec.frames)]
    header = list(stamps)  # what the messages say (ground truth `stamps` is the true time)
    for i in spec.repeat_stamps:
        header[i] = header[i - 1]
    for i in spec.zero_stamps:
        header[i] = 0
    order = list(range(spec.frames))
    if spec.shuffle_stamps:
        order = list(np.random.default_rng(spec.seed).permutation(spec.frames))

    garbage = set(spec.random_bytes)
    noise = np.random.default_rng([spec.seed, 99])

    def ser(msg, typ, topic=None, i=None):
        raw = ts.serialize_ros1(msg, typ) if ros1 else ts.serialize_cdr(msg, typ)
        if (topic, i) in garbage:
            return noise.integers(0, 256, len(raw), dtype=np.uint8).tobytes()
        return raw

    if ros1:
        writer = Writer1(path)
    else:
        plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=9, storage_plugin=plugin)
    img_t, cimg_t = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
    info_t = "sensor_msgs/msg/CameraInfo"
    with writer:
        rgb_topic = RGB_TOPIC + ("/compressed" if spec.compressed else "")
        c_rgb = writer.add_connection(rgb_topic, cimg_t if spec.compressed else img_t,
                                      typestore=ts)
        c_depth = writer.add_connection(DEPTH_TOPIC, img_t, typestore=ts)
        c_lab = writer.add_connection(LABEL_TOPIC, img_t, typestore=ts) if spec.labels else None
        if spec.camera_info:
            c_ri = writer.add_connection(RGB_INFO_TOPIC, info_t, typestore=ts)
            c_di = writer.add_connection(DEPTH_INFO_TOPIC, info_t, typestore=ts)
        if spec.tf_static is not None:
            _write_tf_static(writer, ts, ser, stamps[0], spec.tf_static, ros1)
        receive = [0] * spec.frames
        for n, i in enumerate(order):
            f, stamp = frames[i], header[i]
            t_rec = stamps[0] + n * int(spec.period_s * 1e9) + 5_000_000  # receive time
            receive[i] = t_rec
            if spec.compressed:
                _ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, 95])
                Comp = ts.types[cimg_t]
                msg = Comp(header=_header(ts, stamp, "camera_color_optical_frame", ros1),
                           format="jpeg", data=np.frombuffer(buf.tobytes(), np.uint8))
            else:
                msg = make_image(ts, stamp, "camera_color_optical_frame", f.rgb, "rgb8", ros1)
            writer.write(c_rgb, t_rec, ser(msg, cimg_t if spec.compressed else img_t, rgb_topic, i))
            depth = f.depth
            if spec.depth_scale > 1:
                depth = depth[::spec.depth_scale, ::spec.depth_scale][:dh, :dw]
            if spec.depth_encoding == "32FC1":
                arr = depth.astype(np.float32)
                arr[arr == 0] = np.nan
                if spec.depth_fill is not None:
                    arr[:] = spec.depth_fill
            else:
                arr = np.round(depth * 1000).astype(np.uint16)
            dstamp = stamp + int(spec.depth_offset_s * 1e9) if stamp else 0
            dmsg = make_image(ts, dstamp, "camera_depth_optical_frame", arr, spec.depth_encoding,
                              ros1)
            writer.write(c_depth, t_rec + 1000, ser(dmsg, img_t, DEPTH_TOPIC, i))
            if c_lab is not None:
                lmsg = make_image(ts, stamp, "camera_color_optical_frame", f.seg, "mono8", ros1)
                writer.write(c_lab, t_rec + 2000, ser(lmsg, img_t, LABEL_TOPIC, i))
            if spec.camera_info:
                writer.write(c_ri, t_rec + 3000, ser(make_camera_info(
                    ts, stamp, "camera_color_optical_frame", K, spec.height, spec.width, ros1),
                    info_t, RGB_INFO_TOPIC, i))
                writer.write(c_di, t_rec + 4000, ser(make_camera_info(
                    ts, dstamp, "camera_depth_optical_frame", Kd, dh, dw, ros1), info_t,
                    DEPTH_INFO_TOPIC, i))
    return {"stamps": stamps, "header_stamps": header, "receive_stamps": receive,
            "depth": [f.depth for f in frames], "seg": [f.seg for f in frames],
            "rgb": [f.rgb for f in frames], "K": K, "K_depth": Kd}


def _write_tf_static(writer, ts, ser, stamp_ns: int, pose: tuple[float, ...], ros1: bool) -> None:
    T = ts.types
    tf_t = "tf2_msgs/msg/TFMessage"
    if tf_t not in T:  # the noetic store has no tf2_msgs
        ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", tf_t))
    conn = writer.add_connection("/tf_static", tf_t, typestore=ts)
    tr = T["geometry_msgs/msg/Transform"](
        translation=T["geometry_msgs/msg/Vector3"](x=pose[0], y=pose[1], z=pose[2]),
        rotation=T["geometry_msgs/msg/Quaternion"](x=pose[3], y=pose[4], z=pose[5], w=pose[6]))
    stamped = T["geometry_msgs/msg/TransformStamped"](
        header=_header(ts, stamp_ns, "camera_color_optical_frame", ros1),
        child_frame_id="camera_depth_optical_frame", transform=tr)
    writer.write(conn, stamp_ns, ser(T[tf_t](transforms=[stamped]), tf_t))
