"""Drive a live perception node: start it, publish frames into it, collect its outputs by stamp.

The demo, the ROS tests, the latency benchmark and bag replay evaluation all need the same thing:
a real `perception_node` process on a real DDS graph, fed frames, with each output matched to its
input by header stamp and timed on one clock. This module is that one place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mtl_perception.conversions import depth_image_to_metres, fill_image, image_to_array

OUTPUT_TYPES = {"semantic": Image, "semantic_color": Image, "depth": Image, "confidence": Image,
                "camera_info": CameraInfo}


def node_command(model_path: str | Path, params: dict[str, object] | None = None,
                 params_file: str | Path | None = None, remaps: dict[str, str] | None = None,
                 ) -> list[str]:
    """The command line the launch file would run: executable + --ros-args."""
    exe = shutil.which("perception_node")
    cmd = [exe] if exe else [sys.executable, "-m", "mtl_perception.node"]
    cmd += ["--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    cmd += ["-p", f"model_path:={model_path}"]
    for k, v in (params or {}).items():
        cmd += ["-p", f"{k}:={_param_text(v)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def _param_text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def start_node(model_path: str | Path, params: dict[str, object] | None = None,
               params_file: str | Path | None = None, remaps: dict[str, str] | None = None,
               log_path: str | Path | None = None) -> subprocess.Popen:
    """Start perception_node as its own process (stdout/stderr to log_path if given)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with proc
    return subprocess.Popen(node_command(model_path, params, params_file, remaps), stdout=out,
                            stderr=subprocess.STDOUT, env=os.environ.copy())


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Ctrl-C first (what a user does), kill if it hangs; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Received:
    """Outputs of one input frame, with receive times on the client's clock."""

    sent_at: float
    outputs: dict[str, object] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)


def sensor_qos(depth: int = 1, reliable: bool = False) -> QoSProfile:
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT,
                      history=HistoryPolicy.KEEP_LAST, depth=depth)


class PerceptionClient:
    """Publishes images to a node's input and collects its outputs, keyed by header stamp (ns).

    Runs its own rclpy context and a background executor thread, so callers (tests, demo,
    benchmarks) stay plain blocking Python.
    """

    def __init__(self, node_name: str = "/mtl_perception", image_topic: str = "/image",
                 outputs: Sequence[str] = ("semantic", "depth"), compressed: bool = False,
                 camera_info_topic: str | None = None, queue_depth: int = 10) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("mtl_perception_client", context=self.context)
        self.compressed = compressed
        in_type = CompressedImage if compressed else Image
        topic = image_topic + ("/compressed" if compressed else "")
        self.image_pub = self.node.create_publisher(in_type, topic, sensor_qos(queue_depth, True))
        self.info_pub = (self.node.create_publisher(CameraInfo, camera_info_topic,
                                                    sensor_qos(queue_depth, True))
                         if camera_info_topic else None)
        self.lock = threading.Lock()
        self.frames: dict[int, Received] = {}
        self.output_topics = {name: f"{node_name}/{name}" for name in outputs}
        self.subs = [
            self.node.create_subscription(OUTPUT_TYPES.get(name, Image), topic,
                                          self._callback(name), sensor_qos(queue_depth))
            for name, topic in self.output_topics.items()
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races end the loop
                if not self.context.ok():
                    return
                raise

    def _callback(self, name: str):
        def on_msg(msg) -> None:
            now = time.perf_counter()
            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.lock:
                rec = self.frames.setdefault(key, Received(sent_at=float("nan")))
                rec.outputs[name] = msg
                rec.received_at[name] = now

        return on_msg

    def wait_until_connected(self, timeout: float = 30.0) -> None:
        """Block until the node subscribes to our input and publishes every watched output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.image_pub.get_subscription_count() > 0 and all(
                    s.get_publisher_count() > 0 for s in self.subs):
                return
            time.sleep(0.05)
        raise TimeoutError(f"perception node did not connect within {timeout:.0f} s "
                           f"(outputs {list(self.output_topics.values())})")

    def publish_rgb(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera",
                    encoding: str = "rgb8", camera_info: CameraInfo | None = None) -> None:
        header = self.make_header(stamp_ns, frame_id)
        if self.compressed:
            import cv2

            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ValueError("JPEG encoding failed")
            msg = CompressedImage(header=header, format="jpeg", data=buf.tobytes())
        else:
            arr = rgb if encoding == "rgb8" else _encode(rgb, encoding)
            msg = fill_image(Image(), arr, encoding, header)
        if camera_info is not None and self.info_pub is not None:
            camera_info.header = header
            self.info_pub.publish(camera_info)
        self.publish_raw(msg, stamp_ns)

    def publish_raw(self, msg, stamp_ns: int) -> None:
        """Publish a prepared message (also malformed ones, for robustness tests)."""
        with self.lock:
            self.frames.setdefault(stamp_ns, Received(sent_at=0.0)).sent_at = time.perf_counter()
        self.image_pub.publish(msg)

    @staticmethod
    def make_header(stamp_ns: int, frame_id: str):
        from std_msgs.msg import Header

        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return h

    def wait_for(self, stamp_ns: int, outputs: Sequence[str] | None = None,
                 timeout: float = 10.0) -> Received | None:
        """The outputs for one stamp, or None if they did not all arrive in time."""
        names = list(outputs or self.output_topics)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                rec = self.frames.get(stamp_ns)
                if rec is not None and all(n in rec.outputs for n in names):
                    return rec
            time.sleep(0.002)
        return None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=2.0)

    def __enter__(self) -> PerceptionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    import cv2

    conv = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
            "mono8": cv2.COLOR_RGB2GRAY}
    if encoding not in conv:
        raise ValueError(f"cannot encode RGB as {encoding}")
    return cv2.cvtColor(rgb, conv[encoding])


def decode_outputs(rec: Received) -> dict[str, np.ndarray]:
    """Output messages -> arrays (labels as ints, depth/confidence in float32)."""
    out: dict[str, np.ndarray] = {}
    for name, msg in rec.outputs.items():
        if name in ("depth", "confidence"):
            out[name] = depth_image_to_metres(msg)
        elif isinstance(msg, Image):
            out[name] = np.array(image_to_array(msg))
    return out
