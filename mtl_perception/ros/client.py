"""Talk to a live perception node: publish frames into it, collect its outputs by stamp.

The demo, the ROS tests, the latency benchmark and bag replay all need the same thing: frames fed
to a real `perception_node` on a real DDS graph, each output matched to its input by header stamp
and timed on one clock, and the node's /diagnostics read back. This module is that one place
(process.py starts and stops the node; replay.py drives a whole recording through it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from mtl_perception.core.codecs import depth_image_to_metres, fill_image, image_to_array
from mtl_perception.ros.diagnostics import DDS_FRAME_LIMIT_BYTES, status_name

OUTPUT_TYPES = {"semantic": Image, "semantic_color": Image, "depth": Image, "confidence": Image,
                "camera_info": CameraInfo, "points": PointCloud2}


class FrameTooLarge(ValueError):
    """A frame above what the DDS profile carries reliably (DDS_FRAME_LIMIT_BYTES)."""


@dataclass
class Received:
    """Outputs of one input frame, with receive times on the client's clock."""

    sent_at: float
    outputs: dict[str, object] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)


def sensor_qos(depth: int = 1, reliable: bool = False) -> QoSProfile:
    """Keep-last `depth`, best effort (the sensor-data profile) unless `reliable`."""
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
                 camera_info_topic: str | None = None, queue_depth: int = 10,
                 reliable_outputs: bool = False) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        # No parameter services: the client has no parameters, and every service is one more
        # entity rclpy's executor walks before each callback.
        self.node = Node("mtl_perception_client", context=self.context,
                         start_parameter_services=False)
        self.compressed = compressed
        in_type = CompressedImage if compressed else Image
        topic = image_topic + ("/compressed" if compressed else "")
        self.image_pub = self.node.create_publisher(in_type, topic, sensor_qos(queue_depth, True))
        self.info_pub = (self.node.create_publisher(CameraInfo, camera_info_topic,
                                                    sensor_qos(queue_depth, True))
                         if camera_info_topic else None)
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)  # notified on every output received
        self.frames: dict[int, Received] = {}
        self.output_topics = {name: f"{node_name}/{name}" for name in outputs}
        self.subs = [
            self.node.create_subscription(OUTPUT_TYPES.get(name, Image), topic,
                                          self._callback(name),
                                          sensor_qos(queue_depth, reliable_outputs))
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
            except Exception:  # shutdown races end the loop
                if not self.context.ok():
                    return
                raise

    def _callback(self, name: str) -> Callable[[Any], None]:
        def on_msg(msg: Any) -> None:
            now = time.perf_counter()
            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.lock:
                rec = self.frames.setdefault(key, Received(sent_at=float("nan")))
                rec.outputs[name] = msg
                rec.received_at[name] = now
                self.arrived.notify_all()

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
        """Publish one RGB frame (JPEG when compressed, else as `encoding`) under `stamp_ns`."""
        header = self.make_header(stamp_ns, frame_id)
        if self.compressed:
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

    def publish_raw(self, msg: Image | CompressedImage, stamp_ns: int) -> None:
        """Publish a prepared message (also malformed ones, for robustness tests).

        Raises FrameTooLarge for a frame above DDS_FRAME_LIMIT_BYTES: the loopback DDS profile
        can lose such frames in transport without telling either side, so they are refused
        here, loudly, instead of disappearing.
        """
        size = len(msg.data)
        if size > DDS_FRAME_LIMIT_BYTES:
            raise FrameTooLarge(f"frame of {size / 1e6:.1f} MB exceeds the "
                                f"{DDS_FRAME_LIMIT_BYTES / 1e6:.0f} MB the DDS profile carries "
                                "reliably (config/fastdds_loopback.xml): send it compressed "
                                "or smaller")
        with self.lock:
            self.frames.setdefault(stamp_ns, Received(sent_at=0.0)).sent_at = time.perf_counter()
        self.image_pub.publish(msg)

    @staticmethod
    def make_header(stamp_ns: int, frame_id: str) -> Header:
        """A header whose stamp is `stamp_ns`: the key outputs are matched by."""
        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return h

    def wait_for(self, stamp_ns: int, outputs: Sequence[str] | None = None,
                 timeout: float = 10.0) -> Received | None:
        """The outputs for one stamp, or None if they did not all arrive in time."""
        names = list(outputs or self.output_topics)

        def complete() -> Received | None:
            rec = self.frames.get(stamp_ns)
            return rec if rec is not None and all(n in rec.outputs for n in names) else None

        # Woken by the callbacks, not polled: a 2 ms polling loop wakes 500 times a second on
        # the same cores as the node it is waiting for (2 on the benchmark machine).
        with self.arrived:
            return self.arrived.wait_for(complete, timeout=timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=2.0)

    def __enter__(self) -> PerceptionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodeDiagnostics:
    """Every /diagnostics status of one perception node, as key -> value dicts, oldest first.

    Each dict also holds the status's level ("0" OK, "1" WARN, "2" ERROR) as
    `diagnostic_level` and its message as `diagnostic_message`.

    Subscribes through a PerceptionClient, whose executor thread spins it: tests wait on counters,
    the benchmark reads the per-stage timings of a whole run.
    """

    def __init__(self, client: PerceptionClient, node_fqn: str) -> None:
        self.name = status_name(node_fqn)  # as the node's diagnostics name its status
        self.lock = threading.Lock()
        self.entries: list[dict[str, str]] = []
        self.sub = client.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 50)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.name:
                with self.lock:
                    self.entries.append({kv.key: kv.value for kv in status.values}
                                        | {"diagnostic_level": str(ord(status.level)),
                                           "diagnostic_message": status.message})

    def snapshot(self) -> list[dict[str, str]]:
        with self.lock:
            return list(self.entries)

    def wait(self, predicate: Callable[[dict[str, str]], bool],
             timeout: float = 10.0) -> dict[str, str]:
        """The newest status once it satisfies `predicate`; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.entries and predicate(self.entries[-1]):
                    return dict(self.entries[-1])
            time.sleep(0.05)
        last = self.snapshot()[-1:] or None
        raise TimeoutError(f"diagnostics never satisfied the condition; last: {last}")


def _encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB -> another raw encoding the node accepts (tests of its input conversions)."""
    conv = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
            "mono8": cv2.COLOR_RGB2GRAY}
    if encoding not in conv:
        raise ValueError(f"cannot encode RGB as {encoding}")
    return cv2.cvtColor(rgb, conv[encoding])


def decode_outputs(rec: Received) -> dict[str, np.ndarray]:
    """Output messages -> arrays (labels as ints, depth/confidence in float32)."""
    out: dict[str, np.ndarray] = {}
    # A snapshot: the client's executor thread may still be adding this frame's other outputs.
    for name, msg in dict(rec.outputs).items():
        if name in ("depth", "confidence"):
            out[name] = depth_image_to_metres(msg)
        elif isinstance(msg, Image):
            out[name] = np.array(image_to_array(msg))
    return out
