"""perception_node: RGB in; class ids, colours, metric depth, confidence and points out.

ROS at the edge only: parameters, QoS, subscriptions, publishing and diagnostics live here;
decoding, inference and geometry are plain Python (conversions.py, inference.py, pointcloud.py)
that tests call without a graph.

Threading: inference runs in the image callback, on the executor's thread. Handing frames to a
worker thread cost 2-3 ms per frame in an A/B benchmark (a thread wake-up and a GIL hand-over
while the executor rebuilds its wait set), and the DDS reader queue already gives "newest frame
wins": with the default `qos.depth: 1`, frames that arrive during inference replace each other
and the next callback takes the newest. Frames skipped that way are counted from the publishers'
sequence numbers. camera_info, parameter services and diagnostics run between frames (they wait
at most one inference).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from mtl_perception.core.codecs import (
    ImageConversionError,
    compressed_to_rgb,
    fill_pointcloud2,
    image_to_rgb,
    writable_image,
)
from mtl_perception.core.artifact import ArtifactError
from mtl_perception.runtime.memory import retain_freed_memory
from mtl_perception.runtime.predictor import NonFiniteOutput, Predictor
from mtl_perception.core.camera import PinholeCamera, scale_projection
from mtl_perception.core.geometry.pointcloud import PointCloudBuilder

NODE_NAME = "mtl_perception"
LOG_THROTTLE_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
OUTPUTS = ("semantic", "semantic_color", "depth", "confidence", "points", "camera_info")


class StartupError(RuntimeError):
    """Start-up cannot proceed (bad parameter, missing model): one line, non-zero exit."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description and what values are allowed."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()  # allowed strings; a regex when `pattern` is set
    pattern: str = ""
    low: float | None = None  # numeric range, inclusive
    high: float | None = None
    dynamic: bool = False  # changeable at run time

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None:
            kind = "an integer" if isinstance(self.default, int) else "a number"
            return f"{kind} in [{self.low}, {self.high}]"
        return f"a {type(self.default).__name__}"

    def descriptor(self) -> ParameterDescriptor:
        text = f"{self.description} Allowed: {self.allowed()}."
        d = ParameterDescriptor(name=self.name, description=text, read_only=not self.dynamic)
        if self.low is not None and isinstance(self.default, bool):
            raise TypeError(self.name)
        if self.low is not None and isinstance(self.default, int):
            d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high),
                                            step=1)]
        elif self.low is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.low),
                                                         to_value=float(self.high), step=0.0)]
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        return d


# Every parameter, declared once; config/perception.yaml and the README table mirror this list.
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Exported model artifact (.safetensors, `mtl-train export`)."),
    ParamSpec("device", "auto", "Inference device; auto picks cuda when available.",
              ("auto", "cpu", "cuda", "cuda:N"), pattern=r"auto|cpu|cuda(:\d+)?"),
    ParamSpec("precision", "fp32", "Numeric precision; fp16/bf16 need a CUDA device.",
              ("fp32", "fp16", "bf16")),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0 keeps the PyTorch default.",
              low=0, high=256),
    ParamSpec("warmup_runs", 2, "Forward passes before the first frame (kernel selection).",
              low=0, high=100),
    ParamSpec("image_transport", "raw",
              "raw subscribes `image` (Image); compressed subscribes `image/compressed`.",
              ("raw", "compressed")),
    ParamSpec("output_resolution", "input",
              "Outputs at the input image size, or at the (cheaper) network input size.",
              ("input", "network")),
    ParamSpec("max_rate_hz", 0.0, "Process at most this many frames per second; 0 = every "
              "frame the node can keep up with.", low=0.0, high=1000.0, dynamic=True),
    ParamSpec("qos.reliability", "best_effort",
              "Reliability of image input and outputs (sensor-data profile is best_effort).",
              ("best_effort", "reliable")),
    ParamSpec("qos.depth", 1, "Queue depth (keep-last) of image input and outputs; 1 = always "
              "the newest frame, more = queued frames are all processed, in order.",
              low=1, high=100),
    *(ParamSpec(f"publish.{name}", True, f"Publish ~/{name}.", dynamic=True)
      for name in OUTPUTS),
    ParamSpec("points.stride", 4, "Use every n-th pixel in x and y for ~/points.",
              low=1, high=64, dynamic=True),
    ParamSpec("points.max_depth", 10.0, "Leave out points farther than this (metres); 0 = no "
              "limit.", low=0.0, high=1000.0, dynamic=True),
)
SPECS = {p.name: p for p in PARAMS}


@dataclass
class Stats:
    """Counters for /diagnostics; totals since start plus a window since the last report."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # published but never taken: replaced by a newer one, or lost in transit
    rejected: int = 0  # bad input or non-finite output: frame not published
    errors: int = 0  # inference failed for another reason
    rate_limited: int = 0  # skipped by max_rate_hz
    idle: int = 0  # nobody subscribed to any output
    last_reject: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, this window
    stages: dict[str, list[float]] = field(default_factory=dict)  # seconds, this window
    window_start: float = field(default_factory=time.monotonic)
    window_received: int = 0
    window_dropped: int = 0
    window_processed: int = 0
    window_rejected: int = 0


class PerceptionNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._declare_parameters()
        p = self.params
        if not p["model_path"]:
            raise StartupError("parameter 'model_path' is empty: set it to an exported "
                               ".safetensors artifact (mtl-train export)")
        try:
            self.predictor = Predictor(p["model_path"], device=p["device"],
                                       precision=p["precision"], num_threads=p["num_threads"])
        except ArtifactError as exc:
            raise StartupError(str(exc)) from exc
        except ValueError as exc:  # device / precision combinations the host cannot run
            raise StartupError(f"parameters 'device'/'precision': {exc}") from exc
        try:
            self.predictor.warmup(p["warmup_runs"])
        except (RuntimeError, NonFiniteOutput) as exc:
            self.get_logger().warning(f"warm-up failed ({exc}); frames may be rejected")

        self.stats = Stats()
        self.lock = threading.Lock()
        self.palette = np.asarray(self.predictor.palette, np.uint8)[: len(self.predictor.classes)]
        self.label_encoding = "mono8" if len(self.predictor.classes) <= 255 else "16UC1"
        self.cloud_builder = PointCloudBuilder()
        self.camera_info: CameraInfo | None = None
        self.out_msgs = {name: Image() for name in ("semantic", "semantic_color", "depth",
                                                    "confidence")}

        qos = QoSProfile(
            reliability=(ReliabilityPolicy.RELIABLE if p["qos.reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            history=HistoryPolicy.KEEP_LAST, depth=p["qos.depth"],
            durability=DurabilityPolicy.VOLATILE)
        tasks = self.predictor.tasks
        self.available = {
            "semantic": "seg" in tasks, "semantic_color": "seg" in tasks,
            "confidence": "seg" in tasks, "depth": "depth" in tasks,
            "points": "depth" in tasks, "camera_info": True,
        }
        types = {"points": PointCloud2, "camera_info": CameraInfo}
        self.pubs = {name: self.create_publisher(types.get(name, Image), f"~/{name}", qos)
                     for name in OUTPUTS if self.available[name]}
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self._last_accept = -1e9
        self._last_seq: dict[bytes, int] = {}  # publisher gid -> last sequence number taken

        self.add_on_set_parameters_callback(self._on_set_parameters)
        info_qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT,
                              history=HistoryPolicy.KEEP_LAST, depth=1)
        self.info_sub = self.create_subscription(CameraInfo, "camera_info",
                                                 self.camera_info_callback, info_qos)
        if p["image_transport"] == "compressed":
            # Like image_transport: the remapped base topic + "/compressed".
            topic = self.resolve_topic_name("image") + "/compressed"
            self.image_sub = self.create_subscription(CompressedImage, topic,
                                                      self._image_callback(), qos)
        else:
            self.image_sub = self.create_subscription(Image, "image", self._image_callback(), qos)
        self.diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

        h, w = self.predictor.input_size
        missing = [n for n, ok in self.available.items() if not ok]
        self.get_logger().info(
            f"model {p['model_path']}: {len(self.predictor.classes)} classes, input {w}x{h}, "
            f"device {self.predictor.device} ({p['precision']}); listening on "
            f"{self.image_sub.topic_name} ({p['image_transport']}, {p['qos.reliability']})"
            + (f"; model has no {', '.join(missing)}" if missing else ""))

    # ---- parameters -------------------------------------------------------------------------

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in PARAMS:
            try:
                value = self.declare_parameter(spec.name, spec.default, spec.descriptor()).value
            except ParameterException as exc:
                got = re.search(r"to '([^']*)'|\(([^)]*)\)", str(exc))
                shown = next((g for g in got.groups() if g is not None), "?") if got else "?"
                if not (isinstance(spec.default, float) and re.fullmatch(r"-?\d+", shown)):
                    raise StartupError(f"parameter '{spec.name}' must be {spec.allowed()} "
                                       f"(got {shown})") from exc
                # YAML `5` for a double: take it as 5.0 rather than refusing to start.
                value = self._declare_as_float(spec, float(shown))
            if spec.choices and not re.fullmatch(spec.pattern or "|".join(spec.choices), value):
                raise StartupError(f"parameter '{spec.name}' must be {spec.allowed()} "
                                   f"(got '{value}')")
            values[spec.name] = value
        return values

    def _declare_as_float(self, spec: ParamSpec, value: float) -> float:
        try:
            return self.declare_parameter(spec.name, value, spec.descriptor(),
                                          ignore_override=True).value
        except ParameterException as exc:
            raise StartupError(f"parameter '{spec.name}' must be {spec.allowed()} "
                               f"(got {value:g})") from exc

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes: publish switches, max_rate_hz, points.* (ranges checked by rclpy)."""
        for param in params:
            spec = SPECS.get(param.name)
            if spec is not None and not spec.dynamic:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} is read-only after start-up")
        with self.lock:
            for param in params:
                if param.name in SPECS:
                    self.params[param.name] = param.value
        return SetParametersResult(successful=True)

    # ---- input ------------------------------------------------------------------------------

    def camera_info_callback(self, msg: CameraInfo) -> None:
        self.camera_info = msg  # latest wins; no time sync, so no frame waits for it

    def _image_callback(self) -> Callable[..., None]:
        """image_callback with message info where rclpy passes it (Iron and later), else without."""
        if hasattr(Subscription, "CallbackType"):
            return self.image_callback
        return lambda msg: self.image_callback(msg, None)

    def image_callback(self, msg: Image | CompressedImage, info: dict[str, Any] | None) -> None:
        now = time.perf_counter()
        received_ns = info.get("received_timestamp") if info else None
        queued = max(time.time_ns() - received_ns, 0) * 1e-9 if received_ns else 0.0
        with self.lock:
            self.stats.received += 1
            self.stats.window_received += 1
            self._count_skipped(info)
            rate = self.params["max_rate_hz"]
            if rate > 0 and now - self._last_accept < 1.0 / rate:
                self.stats.rate_limited += 1
                return
            self._last_accept = now
        try:
            self.process(msg, now, queued)
        except Exception as exc:  # the node must outlive any one frame
            if not self.context.ok():
                return  # shutting down: publishers are gone
            self._count_error(f"{type(exc).__name__}: {exc}")

    def _count_skipped(self, info: dict[str, Any] | None) -> None:
        """Frames a publisher sent that this node never took (newest-wins queue, transport loss)."""
        seq = info.get("publication_sequence_number") if info else None
        if not seq:  # rmw without sequence numbers: nothing to count
            return
        gid = info.get("publisher_gid") or {}
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        last = self._last_seq.get(key)
        if last is not None and seq > last + 1:
            self.stats.dropped += seq - last - 1
            self.stats.window_dropped += seq - last - 1
        self._last_seq[key] = seq

    # ---- one frame --------------------------------------------------------------------------

    def wanted(self) -> dict[str, bool]:
        """Outputs switched on, present in the model and with at least one subscriber."""
        with self.lock:
            return {name: self.params[f"publish.{name}"] and pub.get_subscription_count() > 0
                    for name, pub in self.pubs.items()}

    def process(self, msg: Image | CompressedImage, received_at: float,
                queued: float = 0.0) -> None:
        """Decode, infer, publish one frame; bad frames are logged (throttled) and counted."""
        t_start = time.perf_counter()
        want = self.wanted()
        if not any(want.values()):
            with self.lock:
                self.stats.idle += 1
            return
        t0 = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg)
            else:
                rgb = image_to_rgb(msg, contiguous=False)
        except (ImageConversionError, cv2.error) as exc:
            self._reject(str(exc))
            return
        t1 = time.perf_counter()

        network = self.params["output_resolution"] == "network"
        h, w = self.predictor.input_size if network else rgb.shape[:2]
        intr = None
        if want.get("points") or want.get("camera_info"):
            intr = self._output_intrinsics(rgb.shape[1], rgb.shape[0], w, h)
            if intr is None:
                want["points"] = want["camera_info"] = False
        need = set()
        if want.get("semantic") or want.get("semantic_color") or want.get("points"):
            need.add("labels")
        if want.get("confidence"):
            need.add("confidence")
        if want.get("depth") or want.get("points"):
            need.add("depth")
        if not need:  # only ~/camera_info is wanted (or nothing left): no inference at all
            if want.get("camera_info"):
                self.pubs["camera_info"].publish(scaled_camera_info(self.camera_info,
                                                                    msg.header, intr))
            return
        # Outputs are computed straight into the outgoing messages' buffers.
        dst = {}
        if want.get("semantic"):
            dst["labels"] = writable_image(self.out_msgs["semantic"], h, w, self.label_encoding)
        for name in ("depth", "confidence"):
            if want.get(name):
                dst[name] = writable_image(self.out_msgs[name], h, w, "32FC1")
        try:
            pred = self.predictor.predict(rgb, "network" if network else "input", need, dst)
        except (NonFiniteOutput, ValueError, cv2.error) as exc:
            self._reject(str(exc))
            return
        t2 = time.perf_counter()

        header = msg.header
        if want.get("semantic"):
            out = self.out_msgs["semantic"]
            out.header = header
            self.pubs["semantic"].publish(out)
        if want.get("semantic_color"):
            out = self.out_msgs["semantic_color"]
            np.take(self.palette, pred.labels, axis=0, mode="clip",
                    out=writable_image(out, h, w, "rgb8"))
            out.header = header
            self.pubs["semantic_color"].publish(out)
        for name in ("depth", "confidence"):
            if want.get(name):
                out = self.out_msgs[name]
                out.header = header
                self.pubs[name].publish(out)
        if want.get("points"):
            with self.lock:
                stride, max_depth = self.params["points.stride"], self.params["points.max_depth"]
            colours = pred.network_rgb if network else rgb
            points = self.cloud_builder.build(pred.depth, intr, stride, max_depth, colours,
                                              pred.labels)
            self.pubs["points"].publish(fill_pointcloud2(PointCloud2(), points, header,
                                                         PointField))
        if want.get("camera_info"):
            self.pubs["camera_info"].publish(scaled_camera_info(self.camera_info, header, intr))
        t3 = time.perf_counter()

        with self.lock:
            s = self.stats
            s.processed += 1
            s.window_processed += 1
            s.latencies.append(t3 - received_at + queued)  # DDS reception -> last publish
            stages = {"queue": queued, "subscribers": t0 - t_start,
                      "decode": t1 - t0, **pred.timings, "publish": t3 - t2}
            for k, v in stages.items():
                s.stages.setdefault(k, []).append(v)

    def _output_intrinsics(self, in_w: int, in_h: int, out_w: int, out_h: int
                           ) -> PinholeCamera | None:
        info = self.camera_info
        if info is None:
            self.get_logger().warning("no camera_info received yet: ~/points and ~/camera_info "
                                      "wait for it", throttle_duration_sec=LOG_THROTTLE_S)
            return None
        try:
            intr = PinholeCamera.from_camera_info(info, in_w, in_h)
        except ValueError as exc:
            self.get_logger().warning(f"ignoring camera_info: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return None
        return intr.resized(out_w, out_h)

    def _reject(self, reason: str) -> None:
        with self.lock:
            self.stats.rejected += 1
            self.stats.window_rejected += 1
            self.stats.last_reject = reason
        self.get_logger().warning(f"dropped frame: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    def _count_error(self, reason: str) -> None:
        with self.lock:
            self.stats.errors += 1
            self.stats.last_reject = reason
        self.get_logger().error(f"inference failed, frame dropped: {reason}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    # ---- diagnostics ------------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self.lock:
            s = self.stats
            dt = max(now - s.window_start, 1e-6)
            lat = np.asarray(s.latencies) * 1000.0
            values = {
                "input_rate_hz": f"{(s.window_received + s.window_dropped) / dt:.2f}",
                "output_rate_hz": f"{s.window_processed / dt:.2f}",
                "latency_mean_ms": f"{lat.mean():.2f}" if lat.size else "nan",
                "latency_max_ms": f"{lat.max():.2f}" if lat.size else "nan",
                "frames_received": str(s.received),
                "frames_processed": str(s.processed),
                "frames_dropped": str(s.dropped),
                "frames_rejected": str(s.rejected),
                "frames_failed": str(s.errors),
                "frames_rate_limited": str(s.rate_limited),
                "frames_without_subscribers": str(s.idle),
                "last_reject_reason": s.last_reject,
                "device": str(self.predictor.device),
                "precision": self.params["precision"],
                "model": str(self.params["model_path"]),
            }
            for k, v in s.stages.items():
                values[f"{k}_ms"] = f"{1000.0 * float(np.mean(v)):.2f}"
            window_rejected = s.window_rejected
            s.latencies, s.stages = [], {}
            s.window_start, s.window_received, s.window_processed = now, 0, 0
            s.window_dropped = 0
            s.window_rejected = 0
        if window_rejected:
            level, message = DiagnosticStatus.WARN, f"{window_rejected} bad frame(s) dropped"
        elif s.errors and values["output_rate_hz"] == "0.00":
            level, message = DiagnosticStatus.ERROR, "inference failing"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: "
                                  "perception", message=message,
                                  hardware_id=str(self.predictor.device),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)



def scaled_camera_info(info: CameraInfo, header: Any, intr: PinholeCamera) -> CameraInfo:
    """The camera_info of the outputs: same camera, K and P scaled to the output size."""
    out = CameraInfo(header=header, width=intr.width, height=intr.height,
                     distortion_model=info.distortion_model, d=info.d, r=info.r)
    sx = intr.fx / info.k[0]
    sy = intr.fy / info.k[4]
    out.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    if info.p[0] > 0 and info.p[5] > 0:
        out.p = scale_projection(info.p, sx, sy)
    else:
        out.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return out


def main(args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args)
    except KeyboardInterrupt:
        return 0
    node = None
    code = 0
    retain_freed_memory()  # this process exists to serve frames: no page faults per frame
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except StartupError as exc:
        print(f"{NODE_NAME}: error: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
