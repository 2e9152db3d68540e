"""Replay recorded frames through a live perception node and score what comes back.

Frames go out with their recorded timing (or one in flight at a time, `rate=None`), each with its
camera_info; outputs are collected by header stamp, timed from publish to the last output on this
process's clock, and scored with mtl_perception.core.metrics (the code training evaluates with):
depth against the frame's registered depth, segmentation against its labels when it has them.
Where frames come from is the caller's business (`mtl-replay` reads them from a bag), so this
module needs no training code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.core.artifact import ArtifactMeta
from mtl_perception.core.codecs import fill_image
from mtl_perception.core.contracts import RecordedFrame
from mtl_perception.core.metrics import DepthMetrics, SegMetrics
from mtl_perception.ros.client import PerceptionClient, Received, decode_outputs
from mtl_perception.ros.process import start_node, stop_node
from mtl_perception.ros.result_bag import ResultBag

REPLAY_OUTPUTS = ("semantic", "depth")
WARMUP_STAMP_NS = 1  # a stamp no recording uses: the warm-up frame is never scored


@dataclass
class ReplayOptions:
    """How frames are replayed and where the results go."""

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
    log_path: Path | None = None  # the started node's stdout/stderr


@dataclass
class ReplayResult:
    """Counts, latency and scores of one replay."""

    sent: int
    received: int
    scored_depth: int
    scored_seg: int
    latency_ms: dict[str, float]  # p50, p95, p99, mean, max: publish -> last output
    throughput_fps: float  # answered frames / (last output - first publish)
    depth_metrics: dict[str, float]  # {} when no frame had depth ground truth
    seg_metrics: dict[str, Any]  # {} when no frame had labels
    node_exit_code: int | None  # None when the node was not started here

    @property
    def frames(self) -> dict[str, int]:
        """The report's `frames` entry."""
        return {"sent": self.sent, "received": self.received,
                "dropped": self.sent - self.received, "scored_depth": self.scored_depth,
                "scored_seg": self.scored_seg}


def camera_info_msg(K: np.ndarray | None, height: int, width: int, header: Any) -> CameraInfo:
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


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of `values` (NaN for none)."""
    if not values:
        return {k: float("nan") for k in ("p50", "p95", "p99", "mean", "max")}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()),
            "max": float(arr.max())}


class _Scorer:
    """Matches outputs to the frames still waiting for them; scores, times and records them."""

    def __init__(self, client: PerceptionClient, meta: ArtifactMeta, opts: ReplayOptions,
                 result: ResultBag | None) -> None:
        self.client, self.opts, self.result = client, opts, result
        self.depth_metrics = DepthMetrics(max_depth=float(meta.max_depth) or None)
        self.seg_metrics = SegMetrics(len(meta.classes), list(meta.classes))
        self.pending: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self.latencies: list[float] = []
        self.scored = {"depth": 0, "seg": 0}
        self.received = 0
        self.t_last_recv: float | None = None

    def collect(self, final: bool = False) -> None:
        """Take every pending frame whose outputs are all in; `final` waits for stragglers."""
        client = self.client
        deadline = time.monotonic() + (self.opts.timeout if final else 0.0)
        while self.pending:
            done: list[tuple[int, Received]] = []
            with client.lock:
                for stamp in self.pending:
                    rec = client.frames.get(stamp)
                    if rec is not None and all(n in rec.outputs for n in REPLAY_OUTPUTS):
                        done.append((stamp, client.frames.pop(stamp)))
            for stamp, rec in done:
                self._score(rec, *self.pending.pop(stamp))
            if not final or time.monotonic() > deadline or not self.pending:
                return
            time.sleep(0.01)

    def _score(self, rec: Received, gt_depth: np.ndarray | None,
               gt_seg: np.ndarray | None) -> None:
        self.received += 1
        t_out = max(rec.received_at.values())
        self.t_last_recv = t_out if self.t_last_recv is None else max(self.t_last_recv, t_out)
        self.latencies.append((t_out - rec.sent_at) * 1000.0)
        arrays = decode_outputs(rec)
        for name, gt, metrics in (("depth", gt_depth, self.depth_metrics),
                                  ("semantic", gt_seg, self.seg_metrics)):
            if gt is None:
                continue
            pred = arrays[name]
            if pred.shape != gt.shape:
                pred = cv2.resize(pred, gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
            metrics.update(pred, gt)
            self.scored["depth" if name == "depth" else "seg"] += 1
        if self.result is not None:
            for name in REPLAY_OUTPUTS:
                self.result.write(f"{self.opts.node_name}/{name}", rec.outputs[name])


def replay(frames: Iterable[RecordedFrame], model: str | Path, meta: ArtifactMeta,
           options: ReplayOptions | None = None) -> ReplayResult:
    """Publish `frames` into a live perception node running `model` and score its answers.

    `meta` is the model's artifact metadata (classes, depth range), read by the caller so that a
    bad model fails before anything starts. Raises ValueError without frames, RuntimeError when
    the node does not come up or answer (with its log when it was started here).
    """
    opts = options or ReplayOptions()
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("no colour frames to replay")

    proc = None
    log_path = opts.log_path
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
    sent = 0
    t_first_send = None
    try:
        try:
            client.wait_until_connected(opts.connect_timeout)
        except TimeoutError as exc:
            log_text = (log_path.read_text() if proc is not None and log_path is not None
                        and log_path.is_file() else "")
            raise RuntimeError(f"{exc}\n{log_text}".strip()) from exc
        _warm_up(client, first, opts.timeout)
        if opts.result_bag is not None:
            result = ResultBag(Path(opts.result_bag), {
                opts.image_topic: "sensor_msgs/msg/Image",
                opts.camera_info_topic: "sensor_msgs/msg/CameraInfo", **out_topics})
        scorer = _Scorer(client, meta, opts, result)

        stamp0 = first.stamp_ns
        t0 = time.perf_counter()
        for frame in _chain(first, it):
            if opts.rate is not None:
                due = t0 + max(0.0, (frame.stamp_ns - stamp0) * 1e-9 / opts.rate)
                while (wait := due - time.perf_counter()) > 0:
                    scorer.collect()
                    time.sleep(min(wait, 0.005))
            header = client.make_header(frame.stamp_ns, frame.frame_id or "camera")
            img = fill_image(Image(), frame.rgb, "rgb8", header)
            info = camera_info_msg(frame.K, frame.rgb.shape[0], frame.rgb.shape[1], header)
            client.info_pub.publish(info)
            scorer.pending[frame.stamp_ns] = (frame.depth, frame.seg)
            client.publish_raw(img, frame.stamp_ns)
            sent += 1
            t_first_send = t_first_send or time.perf_counter()
            if result is not None:
                result.write(opts.image_topic, img)
                result.write(opts.camera_info_topic, info)
            if opts.rate is None:  # as fast as the node keeps up: one frame in flight
                deadline = time.monotonic() + opts.timeout
                while frame.stamp_ns in scorer.pending and time.monotonic() < deadline:
                    scorer.collect()
                    time.sleep(0.001)
            else:
                scorer.collect()
        scorer.collect(final=True)
    finally:
        if result is not None:
            result.close()
        client.close()
        node_rc = stop_node(proc) if proc is not None else None

    t_last = scorer.t_last_recv
    span = (t_last - t_first_send) if t_last and t_first_send else 0.0
    return ReplayResult(
        sent=sent, received=scorer.received, scored_depth=scorer.scored["depth"],
        scored_seg=scorer.scored["seg"], latency_ms=percentiles(scorer.latencies),
        throughput_fps=scorer.received / span if span > 0 else float("nan"),
        depth_metrics=scorer.depth_metrics.compute() if scorer.scored["depth"] else {},
        seg_metrics=scorer.seg_metrics.compute() if scorer.scored["seg"] else {},
        node_exit_code=node_rc)


def _warm_up(client: PerceptionClient, frame: RecordedFrame, timeout: float) -> None:
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


def _chain(first: RecordedFrame, rest: Iterator[RecordedFrame]) -> Iterator[RecordedFrame]:
    yield first
    yield from rest
