"""perception_node: RGB in; class ids, colours, metric depth, confidence and points out.

The ROS edge only: parameters (declared from params.PARAMS), QoS, publishers, subscriptions,
callbacks and the diagnostics timer. What happens to a frame is pipeline.py, what is counted and
reported is diagnostics.py; both are plain code that tests call without a graph.

Threading: inference runs in the image callback, on the executor's thread. Handing frames to a
worker thread cost 2-3 ms per frame in an A/B benchmark (a thread wake-up and a GIL hand-over
while the executor rebuilds its wait set), and the DDS reader queue already gives "newest frame
wins": with the default `qos.depth: 1`, frames that arrive during inference replace each other
and the next callback takes the newest. Frames skipped that way are counted from the publishers'
sequence numbers. camera_info, parameter services and diagnostics run between frames (they wait
at most one inference).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mtl_perception.core.artifact import ArtifactError
from mtl_perception.ros.diagnostics import (
    DDS_FRAME_LIMIT_BYTES,
    SkipCounter,
    Stats,
    diagnostic_array,
    take_window,
)
from mtl_perception.ros.params import OUTPUTS, PARAMS, SPECS, ParamError, ParamSpec, validate
from mtl_perception.ros.pipeline import (
    FramePipeline,
    FrameRejected,
    FrameSettings,
    available_outputs,
    check_camera_info,
)
from mtl_perception.runtime.memory import retain_freed_memory
from mtl_perception.runtime.predictor import NonFiniteOutput, Predictor

NODE_NAME = "mtl_perception"
LOG_THROTTLE_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0


class StartupError(RuntimeError):
    """Start-up cannot proceed (bad parameter, missing model): one line, non-zero exit."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter.

    Dynamic typing lets every value reach params.validate, which checks type, range and choices
    for start-up and run-time changes alike (rclpy's own checks would need its error text parsed).
    """
    return ParameterDescriptor(name=spec.name, description=spec.help_text(),
                               read_only=not spec.dynamic, dynamic_typing=True,
                               additional_constraints=spec.allowed())


class PerceptionNode(Node):
    """Serves every image on `image` (or `image/compressed`) to the ~/ outputs."""

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
        self.skips = SkipCounter()
        self.lock = threading.Lock()
        self.pipeline = FramePipeline(self.predictor, p["output_resolution"] == "network",
                                      self._warn_camera, self.get_logger().warning)
        self.camera_info: CameraInfo | None = None

        qos = QoSProfile(
            reliability=(ReliabilityPolicy.RELIABLE if p["qos.reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            history=HistoryPolicy.KEEP_LAST, depth=p["qos.depth"],
            durability=DurabilityPolicy.VOLATILE)
        self.available = available_outputs(self.predictor.tasks)
        types = {"points": PointCloud2, "camera_info": CameraInfo}
        self.pubs = {name: self.create_publisher(types.get(name, Image), f"~/{name}", qos)
                     for name in OUTPUTS if self.available[name]}
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_accept = -1e9

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
        """Declare every parameter once; a bad value stops start-up with one line."""
        values: dict[str, Any] = {}
        for spec in PARAMS:
            value = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
            try:
                values[spec.name] = validate(spec, value)
            except ParamError as exc:
                raise StartupError(str(exc)) from exc
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes: publish switches, max_rate_hz, points.*; all or nothing."""
        accepted = {}
        for param in params:
            spec = SPECS.get(param.name)
            if spec is None:
                continue
            if not spec.dynamic:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} is read-only after start-up")
            try:
                accepted[param.name] = validate(spec, param.value)
            except ParamError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        with self.lock:
            self.params.update(accepted)
        return SetParametersResult(successful=True)

    # ---- input ------------------------------------------------------------------------------

    def camera_info_callback(self, msg: CameraInfo) -> None:
        """Latest good CameraInfo wins (no time sync, so no frame waits for it).

        An unusable one (NaN, fx = 1e-30, ...) is counted, logged (throttled) and ignored: the
        last good one stays in use, and without one ~/points and ~/camera_info wait.
        """
        try:
            check_camera_info(msg)
        except ValueError as exc:
            with self.lock:
                self.stats.camera_info_rejected += 1
            self.get_logger().warning(f"ignoring camera_info: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        self.camera_info = msg

    def _image_callback(self) -> Callable[..., None]:
        """image_callback with message info where rclpy passes it (Iron and later), else without."""
        if hasattr(Subscription, "CallbackType"):
            return self.image_callback
        return lambda msg: self.image_callback(msg, None)

    def image_callback(self, msg: Image | CompressedImage, info: dict[str, Any] | None) -> None:
        now = time.perf_counter()
        received_ns = info.get("received_timestamp") if info else None
        queued = max(time.time_ns() - received_ns, 0) * 1e-9 if received_ns else 0.0
        oversized = len(msg.data) > DDS_FRAME_LIMIT_BYTES
        with self.lock:
            self.stats.count_received(self.skips.skipped(info))
            self.stats.oversized += oversized
        if oversized:  # this one arrived; others of its size may be lost in transport, unseen
            self.get_logger().warning(
                f"frame of {len(msg.data) / 1e6:.1f} MB is above the "
                f"{DDS_FRAME_LIMIT_BYTES / 1e6:.0f} MB the loopback DDS profile carries "
                "reliably: frames of this size can be lost in transport without a count",
                throttle_duration_sec=LOG_THROTTLE_S)
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

    # ---- one frame --------------------------------------------------------------------------

    def wanted(self) -> dict[str, bool]:
        """Outputs switched on, present in the model and with at least one subscriber."""
        with self.lock:
            return {name: self.params[f"publish.{name}"] and pub.get_subscription_count() > 0
                    for name, pub in self.pubs.items()}

    def process(self, msg: Image | CompressedImage, received_at: float,
                queued: float = 0.0) -> None:
        """Serve one frame (pipeline.py); bad frames are logged (throttled) and counted."""
        t_start = time.perf_counter()
        want = self.wanted()
        if not any(want.values()):
            with self.lock:
                self.stats.idle += 1
            return
        with self.lock:
            settings = FrameSettings(self.params["points.stride"],
                                     self.params["points.max_depth"])
        t0 = time.perf_counter()
        try:
            result = self.pipeline.process(msg, want, self.camera_info, settings, self.pubs)
        except FrameRejected as exc:
            self._reject(str(exc))
            return
        if result is None:  # nothing needed inference
            return
        with self.lock:
            # Latency: DDS reception -> last publish.
            self.stats.count_processed(result.finished - received_at + queued,
                                       {"queue": queued, "subscribers": t0 - t_start,
                                        **result.stages})

    def _warn_camera(self, reason: str) -> None:
        self.get_logger().warning(reason, throttle_duration_sec=LOG_THROTTLE_S)

    def _reject(self, reason: str) -> None:
        with self.lock:
            self.stats.count_rejected(reason)
        self.get_logger().warning(f"dropped frame: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    def _count_error(self, reason: str) -> None:
        with self.lock:
            self.stats.count_error(reason)
        self.get_logger().error(f"inference failed, frame dropped: {reason}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    # ---- diagnostics ------------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        context = {"device": str(self.predictor.device), "precision": self.params["precision"],
                   "model": str(self.params["model_path"])}
        with self.lock:
            level, message, values = take_window(self.stats, time.monotonic(), context)
        self.diag_pub.publish(diagnostic_array(self.get_fully_qualified_name(),
                                               str(self.predictor.device), level, message,
                                               values, self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    """The `perception_node` console script: spin until Ctrl-C; 1 when start-up fails."""
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
