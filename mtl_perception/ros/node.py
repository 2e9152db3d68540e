"""perception_node: RGB in; class ids, colours, metric depth, confidence and points out.

The ROS edge only: parameters (declared from params.PARAMS), QoS, publishers, subscriptions,
callbacks and the diagnostics timer. What happens to a frame is pipeline.py, what is counted and
reported is diagnostics.py; both are plain code that tests call without a graph.

A managed (lifecycle) node: configure loads the model, activate creates the topics, deactivate
removes them and keeps the model, cleanup frees it. `autostart` (default true) does configure +
activate at start and exits 1 after one line when that fails; `--help` prints the usage.

Threading: inference runs in the image callback, on the executor's thread. Handing frames to a
worker thread cost 2-3 ms per frame in an A/B benchmark (a thread wake-up and a GIL hand-over
while the executor rebuilds its wait set), and the DDS reader queue already gives "newest frame
wins": with the default `qos.depth: 1`, frames that arrive during inference replace each other
and the next callback takes the newest. Frames skipped that way are counted from the publishers'
sequence numbers. camera_info, parameter services and diagnostics run between frames (they wait
at most one inference).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.task import Future
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
from mtl_perception.runtime.backend import BackendError
from mtl_perception.runtime.memory import PeakGrowth, retain_freed_memory
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
    None is read-only for rclpy: a lifecycle node takes new configure-time values while
    unconfigured, and _on_set_parameters refuses them once configured.
    """
    return ParameterDescriptor(name=spec.name, description=spec.help_text(),
                               read_only=False, dynamic_typing=True,
                               additional_constraints=spec.allowed())


class PerceptionNode(LifecycleNode):
    """Serves every image on `image` (or `image/compressed`) to the ~/ outputs.

    A managed (lifecycle) node, in the shape yolo_ros and Nav2 use:
    - unconfigured: parameters declared (all of them may be set now), nothing loaded;
    - configure: parameters checked, model loaded and warmed up (the slow part, done once);
    - activate: publishers, subscriptions and the diagnostics timer created: frames flow;
    - deactivate: those destroyed again, the model kept: activate is instant;
    - cleanup: the model freed, back to unconfigured; shutdown: everything freed.
    `autostart` (default true) runs configure + activate at start (see main).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self.params: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.startup_error = ""  # why the last configure/activate failed (one line)
        self.log_failures = True  # main() prints the one line itself while autostarting
        self.predictor: Predictor | None = None
        self.pipeline: FramePipeline | None = None
        self.stats = Stats()
        self.skips = SkipCounter()
        self.camera_info: CameraInfo | None = None
        self.pubs: dict[str, Any] = {}
        self.diag_pub: Any = None
        self.image_sub: Any = None
        self.info_sub: Any = None
        self.diag_timer: Any = None
        self.available: dict[str, bool] = {}
        self._last_accept = -1e9
        self.finished = Future()  # done at the shutdown transition: main() then exits 0
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def autostart(self) -> bool:
        """The `autostart` parameter (a non-boolean value is a start-up error)."""
        try:
            return validate(SPECS["autostart"], self.get_parameter("autostart").value)
        except ParamError as exc:
            raise StartupError(str(exc)) from exc

    def state_label(self) -> str:
        """The lifecycle state: unconfigured, inactive, active, finalized (or a transition)."""
        return str(self._state_machine.current_state[1])

    # ---- lifecycle ----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check every parameter, load and warm up the model; FAILURE (one line) if it cannot."""
        try:
            self._configure()
        except StartupError as exc:
            self.startup_error = str(exc)
            self.predictor = self.pipeline = None
            if self.log_failures:
                self.get_logger().error(f"configure failed: {self.startup_error}")
            return TransitionCallbackReturn.FAILURE
        self.startup_error = ""
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create publishers, subscriptions and the diagnostics timer: frames flow from now on."""
        self._open_topics()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop serving (topics and timer go); the model stays loaded for the next activate."""
        self._close_topics()
        self.get_logger().info("inactive: model kept loaded, no topics")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and the per-frame buffers (back to unconfigured)."""
        self._release()
        self.get_logger().info("unconfigured: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything; main() then leaves its spin and the process exits 0 (finalized is
        final: a lifecycle manager and launch expect the process to end)."""
        self._release()
        self.get_logger().info("finalized: exiting")
        self.finished.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free everything and go back to unconfigured."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Topics and model gone: what cleanup, shutdown and error all leave behind."""
        self._close_topics()
        self.predictor = self.pipeline = None

    def _configure(self) -> None:
        """Load the model and warm it up, refusing one that cannot serve: non-finite warm-up
        output, or more memory than `max_model_memory_mb` grown while loading and warming up."""
        self.params = self._read_parameters()
        p = self.params
        if not p["model_path"]:
            raise StartupError("parameter 'model_path' is empty: set it to an exported "
                               ".safetensors or .onnx model (mtl-train export)")
        growth = PeakGrowth()
        try:
            predictor = Predictor(p["model_path"], device=p["device"],
                                  precision=p["precision"], num_threads=p["num_threads"],
                                  backend=p["backend"])
        except ArtifactError as exc:
            raise StartupError(str(exc)) from exc
        except BackendError as exc:  # backend / device / precision the host cannot run
            raise StartupError(f"parameters 'backend'/'device'/'precision': {exc}") from exc
        try:
            predictor.warmup(p["warmup_runs"])
        except (RuntimeError, NonFiniteOutput) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StartupError(f"{p['model_path']}: warm-up failed ({reason}): the model would "
                               "reject every frame") from exc
        grown_mb = growth.bytes() / 2**20
        if p["max_model_memory_mb"] and grown_mb > p["max_model_memory_mb"]:
            raise StartupError(
                f"{p['model_path']}: loading and warming up the model took {grown_mb:.0f} MiB "
                f"of memory, above max_model_memory_mb {p['max_model_memory_mb']} (raise the "
                "parameter if the model really needs it)")
        self.predictor = predictor
        self.pipeline = FramePipeline(predictor, p["output_resolution"] == "network",
                                      self._warn_camera, self.get_logger().warning)
        self.available = available_outputs(predictor.tasks)
        h, w = predictor.input_size
        s = predictor.backend.settings()
        missing = [n for n, ok in self.available.items() if not ok]
        self.get_logger().info(
            f"model {p['model_path']}: {len(predictor.classes)} classes, input {w}x{h}, "
            f"backend {s['backend']} (providers {s['providers']}, threads {s['threads']}), "
            f"device {predictor.device} ({p['precision']})"
            + (f"; model has no {', '.join(missing)}" if missing else ""))

    def _qos(self) -> QoSProfile:
        p = self.params
        return QoSProfile(
            reliability=(ReliabilityPolicy.RELIABLE if p["qos.reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            history=HistoryPolicy.KEEP_LAST, depth=p["qos.depth"],
            durability=DurabilityPolicy.VOLATILE)

    def _open_topics(self) -> None:
        p = self.params
        qos = self._qos()
        types = {"points": PointCloud2, "camera_info": CameraInfo}
        self.pubs = {name: self.create_publisher(types.get(name, Image), f"~/{name}", qos)
                     for name in OUTPUTS if self.available[name]}
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
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
        self.get_logger().info(f"active: listening on {self.image_sub.topic_name} "
                               f"({p['image_transport']}, {p['qos.reliability']})")

    def _close_topics(self) -> None:
        """Destroy what activate created (idempotent)."""
        if self.diag_timer is not None:
            self.destroy_timer(self.diag_timer)
        for sub in (self.image_sub, self.info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        for pub in (*self.pubs.values(), self.diag_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self.diag_timer = self.image_sub = self.info_sub = self.diag_pub = None
        with self.lock:
            self.pubs = {}

    # ---- parameters -------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        """Declare every parameter once; values are checked when the node is configured."""
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))

    def _read_parameters(self) -> dict[str, Any]:
        """Every parameter's checked value; a bad value stops configure with one line."""
        values: dict[str, Any] = {}
        for spec in PARAMS:
            try:
                values[spec.name] = validate(spec, self.get_parameter(spec.name).value)
            except ParamError as exc:
                raise StartupError(str(exc)) from exc
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Changes: run-time ones (publish switches, max_rate_hz, points.*) in any state; the
        others only while unconfigured (the next configure uses them). All or nothing."""
        accepted = {}
        configured = self.predictor is not None
        for param in params:
            if not param.name:
                return SetParametersResult(successful=False,
                                           reason="a parameter name must not be empty")
            spec = SPECS.get(param.name)
            if spec is None:
                continue
            if not spec.dynamic and configured:
                return SetParametersResult(
                    successful=False, reason=f"{param.name} is read-only once configured "
                    "(cleanup the lifecycle node to change it)")
            try:
                accepted[param.name] = validate(spec, param.value)
            except ParamError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        with self.lock:
            if configured:
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
        if self.pipeline is None or not self.pubs:  # a frame taken while deactivating
            return
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
            with self.lock:
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
        pubs = self.pubs
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
            result = self.pipeline.process(msg, want, self.camera_info, settings, pubs)
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
        if self.predictor is None or self.diag_pub is None:
            return
        context = {"device": str(self.predictor.device), "precision": self.params["precision"],
                   "model": str(self.params["model_path"]),
                   **{k: v for k, v in self.predictor.backend.settings().items()
                      if k != "precision"}}
        with self.lock:
            level, message, values = take_window(self.stats, time.monotonic(), context)
        self.diag_pub.publish(diagnostic_array(self.get_fully_qualified_name(),
                                               str(self.predictor.device), level, message,
                                               values, self.get_clock().now().to_msg()))


USAGE_TOPICS = (
    ("in", "image", "sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16); with "
     "image_transport: compressed, image/compressed (jpeg/png)"),
    ("in", "camera_info", "sensor_msgs/CameraInfo, for ~/points and ~/camera_info"),
    ("out", "~/semantic", "Image mono8 class ids (16UC1 above 255 classes)"),
    ("out", "~/semantic_color", "Image rgb8, the model's palette"),
    ("out", "~/depth", "Image 32FC1, metres"),
    ("out", "~/confidence", "Image 32FC1, top softmax probability 0..1"),
    ("out", "~/points", "PointCloud2 x, y, z, rgb, label"),
    ("out", "~/camera_info", "CameraInfo of the outputs"),
    ("out", "/diagnostics", "DiagnosticArray, ~1 Hz: rates, latency, counters, stages"),
)


def usage() -> str:
    """`perception_node --help`: parameters (from params.PARAMS), topics, lifecycle, examples."""
    width = max(len(s.name) for s in PARAMS)
    lines = [
        "usage: perception_node [--help] --ros-args -p model_path:=MODEL [-p NAME:=VALUE ...]",
        "                       [--params-file config/perception.yaml] [-r image:=TOPIC ...]",
        "",
        "Semantic segmentation, metric depth, confidence and a point cloud from one RGB camera,",
        f"as the lifecycle node '{NODE_NAME}' (configure loads the model, activate serves",
        "frames; autostart:=true does both at start and exits 1 if either fails).",
        "",
        "parameters (default; allowed; * = changeable at run time):",
    ]
    for spec in PARAMS:
        default = _usage_value(spec.default)
        lines.append(f"  {spec.name:<{width}}  {default:<12} {spec.values_text(' | ')}"
                     + (" *" if spec.dynamic else ""))
    lines += ["", "topics (remap with -r NAME:=TOPIC; ~ is <namespace>/" + NODE_NAME + "):"]
    tw = max(len(t) for _, t, _ in USAGE_TOPICS)
    lines += [f"  {d:<3} {t:<{tw}}  {what}" for d, t, what in USAGE_TOPICS]
    lines += [
        "",
        "examples:",
        "  perception_node --ros-args -p model_path:=student.onnx -p backend:=onnxruntime \\",
        "      -r image:=/camera/color/image_raw -r camera_info:=/camera/color/camera_info",
        "  ros2 launch mtl_perception perception.launch.py model:=student.safetensors",
        "  perception_node --ros-args -p model_path:=student.onnx -p autostart:=false  # then:",
        f"  ros2 lifecycle set /{NODE_NAME} configure && ros2 lifecycle set /{NODE_NAME} activate",
    ]
    return "\n".join(lines) + "\n"


def _usage_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


def wants_help(argv: list[str]) -> bool:
    """-h/--help among the program's own arguments (before --ros-args, which ROS owns)."""
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    return any(a in ("-h", "--help") for a in own)


class _Interrupts:
    """Ctrl-C while the node runs stops it (KeyboardInterrupt); any later one does nothing.

    Installed before rclpy.init, so rclpy's own SIGINT handler (which wakes the executor)
    chains to this one. Without it, a second Ctrl-C, or the first one when rclpy's deferred
    handler passes it on late (under load), raised KeyboardInterrupt during teardown or in
    torch's atexit hooks: "Exception ignored in atexit callback ... KeyboardInterrupt".
    Once rclpy is shut down, SIGINT is ignored outright (ignore()).
    """

    def __init__(self) -> None:
        self.armed = True
        signal.signal(signal.SIGINT, self)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt

    def disarm(self) -> None:
        self.armed = False

    def ignore(self) -> None:
        """For the rest of the process: rclpy has restored its predecessor by now, and the
        interpreter's finalisation would put back the default handler, so that a Ctrl-C in
        the last milliseconds killed the process with SIGINT instead of exit status 0."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(args: list[str] | None = None) -> int:
    """The `perception_node` console script: spin until Ctrl-C or the shutdown transition.

    Exit status 0 after Ctrl-C or a lifecycle shutdown; 1 when start-up fails (bad parameter,
    missing or damaged model) with autostart on, after one line on stderr, so a launch file
    that watches the process can fail the launch.
    """
    argv = sys.argv if args is None else args
    if wants_help(argv):
        sys.stdout.write(usage())
        return 0
    interrupts = _Interrupts()
    try:
        return _run(args, interrupts)
    except KeyboardInterrupt:  # one that lands between the spin's end and disarm()
        return 0
    finally:
        interrupts.disarm()
        interrupts.ignore()


def _run(args: list[str] | None, interrupts: _Interrupts) -> int:
    try:
        rclpy.init(args=args)
    except KeyboardInterrupt:
        return 0
    node = None
    code = 0
    retain_freed_memory()  # this process exists to serve frames: no page faults per frame
    try:
        node = PerceptionNode()
        if node.autostart:
            node.log_failures = False
            for step in (node.trigger_configure, node.trigger_activate):
                if step() != TransitionCallbackReturn.SUCCESS:
                    raise StartupError(node.startup_error or f"{step.__name__} failed")
            node.log_failures = True
        else:
            node.get_logger().info("autostart is off: unconfigured, waiting for a lifecycle "
                                   f"manager (ros2 lifecycle set {node.get_fully_qualified_name()}"
                                   " configure)")
        rclpy.spin_until_future_complete(node, node.finished)
    except StartupError as exc:
        print(f"{NODE_NAME}: error: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        interrupts.disarm()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code

if __name__ == "__main__":
    sys.exit(main())
