"""Drive a live perception node: start it, publish frames into it, collect its outputs by stamp.

The demo, the ROS tests, the latency benchmark and bag replay evaluation all need the same thing:
a real `perception_node` process on a real DDS graph, fed frames, with each output matched to its
input by header stamp and timed on one clock. This module is that one place.
"""

from __future__ import annotations

import json
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
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mtl_perception.core.codecs import depth_image_to_metres, fill_image, image_to_array

OUTPUT_TYPES = {"semantic": Image, "semantic_color": Image, "depth": Image, "confidence": Image,
                "camera_info": CameraInfo, "points": PointCloud2}


def node_command(model_path: str | Path, params: dict[str, object] | None = None,
                 params_file: str | Path | None = None, remaps: dict[str, str] | None = None,
                 ) -> list[str]:
    """The command line the launch file would run: executable + --ros-args."""
    # The installed console script: on PATH, or beside this interpreter in a virtualenv.
    exe = shutil.which("perception_node") or shutil.which(
        "perception_node", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "mtl_perception.ros.node"]
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
                 camera_info_topic: str | None = None, queue_depth: int = 10,
                 reliable_outputs: bool = False) -> None:
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


class NodeDiagnostics:
    """Every /diagnostics status of one perception node, as key -> value dicts, oldest first.

    Subscribes through a PerceptionClient, whose executor thread spins it: tests wait on counters,
    the benchmark reads the per-stage timings of a whole run.
    """

    def __init__(self, client: PerceptionClient, node_fqn: str) -> None:
        self.name = f"{node_fqn}: perception"  # as PerceptionNode.publish_diagnostics names it
        self.lock = threading.Lock()
        self.entries: list[dict[str, str]] = []
        self.sub = client.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 50)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.name:
                with self.lock:
                    self.entries.append({kv.key: kv.value for kv in status.values})

    def snapshot(self) -> list[dict[str, str]]:
        with self.lock:
            return list(self.entries)

    def wait(self, predicate, timeout: float = 10.0) -> dict[str, str]:
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
    import cv2

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


# -- bag replay evaluation (`mtl-replay`) ------------------------------------------------------
REPLAY_OUTPUTS = ("semantic", "depth")


@dataclass
class ReplayOptions:
    """How a bag is replayed and where the results go."""

    rate: float | None = 1.0  # playback speed relative to the recorded stamps; None = max
    device: str = "cpu"  # the node's `device` parameter
    start_node: bool = True  # False: a node is already running (launch/replay_eval.launch.py)
    node_name: str = "/mtl_perception"
    image_topic: str = "/image"
    camera_info_topic: str = "/camera_info"
    result_bag: Path | None = None  # write inputs + outputs to this (mcap) bag folder
    timeout: float = 10.0  # seconds to wait for a frame's outputs (max rate) or the stragglers
    connect_timeout: float = 60.0
    node_params: dict[str, object] = field(default_factory=dict)  # extra node parameters


def camera_info_msg(K: np.ndarray | None, height: int, width: int, header) -> CameraInfo:
    """CameraInfo of the published colour image (no distortion: the bag frames are used as is)."""
    info = CameraInfo(header=header, height=int(height), width=int(width))
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    if K is not None:
        info.k = [float(v) for v in np.asarray(K).reshape(-1)]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [info.k[0], 0.0, info.k[2], 0.0, 0.0, info.k[4], info.k[5], 0.0,
                  0.0, 0.0, 1.0, 0.0]
    return info


class _ResultBag:
    """Inputs and outputs as a ROS 2 mcap bag (open it in Foxglove, or replay it for RViz)."""

    def __init__(self, path: Path, topics: dict[str, str]) -> None:
        from rclpy.serialization import serialize_message
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.serialize = serialize_message
        store = get_typestore(Stores.ROS2_HUMBLE)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conns = {topic: self.writer.add_connection(topic, msgtype, typestore=store)
                      for topic, msgtype in topics.items()}

    def write(self, topic: str, msg, t_ns: int | None = None) -> None:
        self.writer.write(self.conns[topic], t_ns or time.time_ns(), self.serialize(msg))

    def close(self) -> None:
        self.writer.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("p50", "p95", "p99", "mean", "max")}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()),
            "max": float(arr.max())}


def replay_bag(bag: str | Path, model: str | Path, report_dir: str | Path,
               bag_cfg=None, options: ReplayOptions | None = None) -> dict:
    """Publish a bag's colour frames into a live perception node and score what comes back.

    Depth is scored against the bag's depth registered into the colour camera (the same pairing
    and registration as `mtl-train bag extract`), segmentation against the label topic when the
    bag has one, both with mtl_perception.core.metrics, the code training uses. Latency is publish ->
    last output on this process's clock. Returns the report dict (also written as report.json and
    report.md under report_dir).
    """
    import cv2

    from mtl_training.config import BagConfig
    from mtl_training.data.bags.extract import BagReport, read_synced_frames
    from mtl_perception.core.artifact import read_metadata
    from mtl_perception.core.metrics import DepthMetrics, SegMetrics

    opts = options or ReplayOptions()
    bag_cfg = bag_cfg or BagConfig()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(model)  # fails early, naming the file, before any node starts
    classes = list(meta["classes"])
    depth_metrics = DepthMetrics(max_depth=float(meta.get("depth", {}).get("max", 10.0)) or None)
    seg_metrics = SegMetrics(len(classes), classes)
    bag_report = BagReport(str(bag))
    frames = read_synced_frames(bag, bag_cfg, bag_report, keep_unpaired=True)
    first = next(frames, None)  # opens the bag: a bad bag fails before the node starts
    if first is None:
        raise ValueError(f"{bag}: no colour frames to replay ({bag_report.summary()})")

    proc = None
    log_path = report_dir / "node.log"
    if opts.start_node:
        # Reliable transport: dropped frames must measure the node, not lost DDS fragments of
        # large best-effort images. The node still drops frames it cannot keep up with.
        params = {"device": opts.device, "qos.reliability": "reliable", **opts.node_params}
        proc = start_node(model, params=params, log_path=log_path)
    client = PerceptionClient(opts.node_name, opts.image_topic, REPLAY_OUTPUTS,
                              camera_info_topic=opts.camera_info_topic, queue_depth=10,
                              reliable_outputs=True)
    result = None
    out_topics = {f"{opts.node_name}/{n}": "sensor_msgs/msg/Image" for n in REPLAY_OUTPUTS}
    try:
        try:
            client.wait_until_connected(opts.connect_timeout)
        except TimeoutError as exc:
            log_text = log_path.read_text() if proc is not None and log_path.is_file() else ""
            raise RuntimeError(f"{exc}\n{log_text}".strip()) from exc
        _warm_up(client, first, opts.timeout)
        if opts.result_bag is not None:
            result = _ResultBag(Path(opts.result_bag), {
                opts.image_topic: "sensor_msgs/msg/Image",
                opts.camera_info_topic: "sensor_msgs/msg/CameraInfo", **out_topics})
        pending: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        latencies: list[float] = []
        scored = {"depth": 0, "seg": 0}
        sent = received = 0
        t_first_send = t_last_recv = None

        def collect(final: bool = False) -> None:
            nonlocal received, t_last_recv
            deadline = time.monotonic() + (opts.timeout if final else 0.0)
            while pending:
                done = []
                with client.lock:
                    for stamp in pending:
                        rec = client.frames.get(stamp)
                        if rec is not None and all(n in rec.outputs for n in REPLAY_OUTPUTS):
                            done.append((stamp, client.frames.pop(stamp)))
                for stamp, rec in done:
                    gt_depth, gt_seg = pending.pop(stamp)
                    received += 1
                    t_out = max(rec.received_at.values())
                    t_last_recv = t_out if t_last_recv is None else max(t_last_recv, t_out)
                    latencies.append((t_out - rec.sent_at) * 1000.0)
                    arrays = decode_outputs(rec)
                    for name, gt, metrics in (("depth", gt_depth, depth_metrics),
                                              ("semantic", gt_seg, seg_metrics)):
                        if gt is None:
                            continue
                        pred = arrays[name]
                        if pred.shape != gt.shape:
                            pred = cv2.resize(pred, gt.shape[::-1],
                                              interpolation=cv2.INTER_NEAREST)
                        metrics.update(pred, gt)
                        scored["depth" if name == "depth" else "seg"] += 1
                    if result is not None:
                        for name in REPLAY_OUTPUTS:
                            result.write(f"{opts.node_name}/{name}", rec.outputs[name])
                if not final or time.monotonic() > deadline or not pending:
                    return
                time.sleep(0.01)

        stamp0 = first.stamp_ns
        t0 = time.perf_counter()
        for frame in _chain(first, frames):
            if opts.rate is not None:
                due = t0 + max(0.0, (frame.stamp_ns - stamp0) * 1e-9 / opts.rate)
                while (wait := due - time.perf_counter()) > 0:
                    collect()
                    time.sleep(min(wait, 0.005))
            header = client.make_header(frame.stamp_ns, frame.frame_id or "camera")
            img = fill_image(Image(), frame.rgb, "rgb8", header)
            info = camera_info_msg(frame.K, frame.rgb.shape[0], frame.rgb.shape[1], header)
            client.info_pub.publish(info)
            pending[frame.stamp_ns] = (frame.depth, frame.seg)
            client.publish_raw(img, frame.stamp_ns)
            sent += 1
            t_first_send = t_first_send or time.perf_counter()
            if result is not None:
                result.write(opts.image_topic, img)
                result.write(opts.camera_info_topic, info)
            if opts.rate is None:  # as fast as the node keeps up: one frame in flight
                deadline = time.monotonic() + opts.timeout
                while frame.stamp_ns in pending and time.monotonic() < deadline:
                    collect()
                    time.sleep(0.001)
            else:
                collect()
        collect(final=True)
    finally:
        if result is not None:
            result.close()
        client.close()
        node_rc = stop_node(proc) if proc is not None else None

    span = (t_last_recv - t_first_send) if t_last_recv and t_first_send else 0.0
    report = {
        "bag": str(bag), "model": str(model),
        "rate": "max" if opts.rate is None else opts.rate,
        "frames": {"sent": sent, "received": received, "dropped": sent - received,
                   "scored_depth": scored["depth"], "scored_seg": scored["seg"]},
        "latency_ms": _percentiles(latencies),
        "throughput_fps": received / span if span > 0 else float("nan"),
        "metrics": {"depth": depth_metrics.compute() if scored["depth"] else {},
                    "seg": seg_metrics.compute() if scored["seg"] else {}},
        "bag_report": {"topics": bag_report.topics, "registration": bag_report.registration,
                       "unpaired": bag_report.unpaired, "bad_messages": bag_report.bad,
                       "truncated": bag_report.truncated},
        "node_exit_code": node_rc,
        "result_bag": str(opts.result_bag) if opts.result_bag else None,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (report_dir / "report.md").write_text(format_replay_report(report))
    return report


WARMUP_STAMP_NS = 1  # a stamp no recording uses: the warm-up frame is never scored


def _warm_up(client: PerceptionClient, frame, timeout: float) -> None:
    """Send the first frame (and its camera_info) under a private stamp until the node answers.

    Subscription matching finishes on the node's side after ours, and first inference and first
    publication are slow; without this the first recorded frames would count as dropped or
    carry seconds of start-up in their latency."""
    header = client.make_header(WARMUP_STAMP_NS, frame.frame_id or "camera")
    img = fill_image(Image(), frame.rgb, "rgb8", header)
    info = camera_info_msg(frame.K, frame.rgb.shape[0], frame.rgb.shape[1], header)
    deadline = time.monotonic() + max(timeout, 1.0) * 3
    while time.monotonic() < deadline:
        client.info_pub.publish(info)  # first-use paths that need intrinsics (points) warm too
        client.publish_raw(img, WARMUP_STAMP_NS)
        if client.wait_for(WARMUP_STAMP_NS, REPLAY_OUTPUTS, timeout=1.0) is not None:
            with client.lock:
                client.frames.pop(WARMUP_STAMP_NS, None)
            return
    raise RuntimeError(f"perception node did not answer a warm-up frame within "
                       f"{max(timeout, 1.0) * 3:.0f} s")


def _chain(first, rest):
    yield first
    yield from rest


def format_replay_report(r: dict) -> str:
    """Markdown for a replay report dict."""
    from mtl_training.report import markdown_table

    f, lat = r["frames"], r["latency_ms"]
    lines = [f"# Replay evaluation: {Path(r['bag']).name}", "",
             f"- bag: `{r['bag']}`", f"- model: `{r['model']}`", f"- rate: {r['rate']}",
             f"- colour topic: `{r['bag_report']['topics'].get('rgb')}`, depth topic: "
             f"`{r['bag_report']['topics'].get('depth')}`",
             f"- depth ground truth: {r['bag_report']['registration']}", "",
             "## Frames and timing", "",
             markdown_table([{**f, "throughput_fps": r["throughput_fps"]}], floatfmt=".2f"), "",
             markdown_table([{f"latency_{k}_ms": v for k, v in lat.items()}], floatfmt=".1f"), ""]
    if r["metrics"]["depth"]:
        lines += ["## Depth (vs the bag's registered depth)", "",
                  markdown_table([r["metrics"]["depth"]]), ""]
    if r["metrics"]["seg"]:
        seg = {k: v for k, v in r["metrics"]["seg"].items() if k != "per_class_iou"}
        lines += ["## Segmentation (vs the bag's label topic)", "", markdown_table([seg]), ""]
    if r["bag_report"]["bad_messages"] or r["bag_report"]["truncated"]:
        lines += ["## Bad data", "", f"- skipped: {r['bag_report']['bad_messages']}",
                  f"- truncated: {r['bag_report']['truncated']}", ""]
    return "\n".join(lines)


def summary_lines(r: dict) -> list[str]:
    f, lat = r["frames"], r["latency_ms"]
    out = [f"replay {r['bag']}: {f['sent']} frames sent, {f['received']} answered, "
           f"{f['dropped']} dropped; latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
           f"p99 {lat['p99']:.1f} ms; {r['throughput_fps']:.1f} frames/s"]
    d = r["metrics"]["depth"]
    if d:
        out.append(f"depth ({f['scored_depth']} frames): abs_err {d['abs_err']:.3f} m, "
                   f"rel_err {d['rel_err']:.3f}, rmse {d['rmse']:.3f} m, delta1 {d['delta1']:.3f}")
    s = r["metrics"]["seg"]
    if s:
        out.append(f"seg ({f['scored_seg']} frames): mIoU {s['miou']:.3f}, "
                   f"pixel acc {s['pixel_acc']:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    """`mtl-replay BAG --model ART --report DIR [--rate R|max] [--result-bag PATH]`."""
    import argparse

    from mtl_training.config import ConfigError, load_config
    from mtl_training.data.bags.reader import BagError
    from mtl_perception.core.artifact import ArtifactError

    p = argparse.ArgumentParser(prog="mtl-replay", description="replay a bag through a live "
                                "perception node; write metrics + latency report")
    p.add_argument("bag", type=Path, help=".bag / .db3 / .mcap file or ROS 2 bag folder")
    p.add_argument("--model", required=True, type=Path, help="exported .safetensors artifact")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--rate", default="1.0", help="playback speed factor, or 'max'")
    p.add_argument("--result-bag", type=Path, default=None,
                   help="also write inputs + outputs as an mcap bag folder (must not exist)")
    p.add_argument("--device", default="cpu", help="node device parameter (auto|cpu|cuda[:N])")
    p.add_argument("--no-start-node", action="store_true",
                   help="use an already running node (e.g. from replay_eval.launch.py)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for outputs")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra node parameter, e.g. --param publish.points=false (repeatable)")
    p.add_argument("--config", type=Path, default=None, help="experiment YAML (bag.* section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set bag.sync_tolerance=0.05")
    args = p.parse_args(argv)
    try:
        rate = None if args.rate == "max" else float(args.rate)
        if rate is not None and rate <= 0:
            raise ValueError
    except ValueError:
        print(f"mtl-replay: error: --rate must be a positive number or 'max', got {args.rate}",
              file=sys.stderr)
        return 2
    if args.result_bag is not None and args.result_bag.exists():
        print(f"mtl-replay: error: --result-bag {args.result_bag} exists already", file=sys.stderr)
        return 2
    node_params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"mtl-replay: error: --param expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        node_params[name] = value
    try:
        cfg = load_config(args.config, args.set)
        report = replay_bag(args.bag, args.model, args.report, cfg.bag, ReplayOptions(
            rate=rate, device=args.device, start_node=not args.no_start_node,
            result_bag=args.result_bag, timeout=args.timeout, node_params=node_params))
    except (BagError, ArtifactError, ConfigError, ValueError, RuntimeError) as exc:
        print(f"mtl-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtl-replay: interrupted", file=sys.stderr)
        return 130
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.report / 'report.md'}, {args.report / 'report.json'}"
          + (f", result bag {args.result_bag}" if args.result_bag else ""))
    return 0
