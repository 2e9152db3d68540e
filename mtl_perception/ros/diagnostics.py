"""What the node counts and how it reports it on /diagnostics.

The node bumps counters from its callbacks; once a second it turns the window since the last report
into one DiagnosticStatus named `"<node fqn>: perception"` (NodeDiagnostics in client.py matches on
that name; keys are documented in the README's topic table). Callers hold their own lock: these
are plain objects, so tests can build a status without a ROS graph.

The level judges the most recent frames, not the last second: "recent" is the last
RECENT_FRAMES (20) frames that reached decoding or inference (served, rejected or failed; frames
skipped by max_rate_hz or served to nobody do not count). ERROR when all of them were dropped (at
least MIN_RECENT_FOR_ERROR, 3, of them), WARN when more than half were, or when any frame was
rejected in this report's second; otherwise OK. A node that rejects every frame therefore stays
at ERROR after the stream stops, until a frame is served again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

# The largest image payload (bytes of msg.data) the shipped DDS profile (config/
# fastdds_loopback.xml, 32 MB SHM segments) carries reliably; larger frames can vanish in
# transport unseen, so the client refuses to send them and the node reports those it gets.
DDS_FRAME_LIMIT_BYTES = 16_000_000
RECENT_FRAMES = 20  # frames the diagnostics level judges (see the module docstring)
MIN_RECENT_FOR_ERROR = 3  # fewer recent frames than this, all dropped, is a WARN


def status_name(node_fqn: str) -> str:
    """The DiagnosticStatus name of one perception node (its fully qualified name + suffix)."""
    return f"{node_fqn}: perception"


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
    camera_info_rejected: int = 0  # unusable CameraInfo messages ignored
    oversized: int = 0  # frames above DDS_FRAME_LIMIT_BYTES (their siblings may be lost)
    last_reject: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, this window
    stages: dict[str, list[float]] = field(default_factory=dict)  # seconds, this window
    window_start: float = field(default_factory=time.monotonic)
    window_received: int = 0
    window_dropped: int = 0
    window_processed: int = 0
    window_rejected: int = 0
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))  # served?

    def count_received(self, skipped: int = 0) -> None:
        """One frame taken, after `skipped` frames its publisher sent that were never taken."""
        self.received += 1
        self.window_received += 1
        self.dropped += skipped
        self.window_dropped += skipped

    def count_processed(self, latency: float, stages: dict[str, float]) -> None:
        """A frame served: its latency and per-stage times (seconds)."""
        self.processed += 1
        self.window_processed += 1
        self.recent.append(True)
        self.latencies.append(latency)
        for k, v in stages.items():
            self.stages.setdefault(k, []).append(v)

    def count_rejected(self, reason: str) -> None:
        self.rejected += 1
        self.window_rejected += 1
        self.recent.append(False)
        self.last_reject = reason

    def count_error(self, reason: str) -> None:
        self.errors += 1
        self.recent.append(False)
        self.last_reject = reason


class SkipCounter:
    """Frames a publisher sent that the node never took, from publication sequence numbers.

    With a keep-last queue, frames that arrive during inference replace each other; the gaps in
    each publisher's sequence numbers count them (rmw implementations without them count none).
    """

    def __init__(self) -> None:
        self._last_seq: dict[bytes, int] = {}  # publisher gid -> last sequence number taken

    def skipped(self, info: dict[str, Any] | None) -> int:
        """How many frames of this message's publisher were skipped since the last one taken."""
        seq = info.get("publication_sequence_number") if info else None
        if not seq:  # rmw without sequence numbers: nothing to count
            return 0
        gid = info.get("publisher_gid") or {}
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        return seq - last - 1 if last is not None and seq > last + 1 else 0


def take_window(stats: Stats, now: float,
                context: dict[str, str]) -> tuple[bytes, str, dict[str, str]]:
    """(level, message, key -> value) for the window since the last report; starts a new one.

    `context` adds the node's fixed facts (device, precision, model). Call with the lock held.
    """
    s = stats
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
        "frames_over_dds_limit": str(s.oversized),
        "camera_info_rejected": str(s.camera_info_rejected),
        "last_reject_reason": s.last_reject,
        **context,
    }
    for k, v in s.stages.items():
        values[f"{k}_ms"] = f"{1000.0 * float(np.mean(v)):.2f}"
    n, bad = len(s.recent), s.recent.count(False)
    if bad == n >= MIN_RECENT_FOR_ERROR:
        level, message = DiagnosticStatus.ERROR, (f"all of the last {n} frames dropped "
                                                  f"({s.last_reject})")
    elif 2 * bad > n:
        level, message = DiagnosticStatus.WARN, (f"{bad} of the last {n} frames dropped "
                                                 f"({s.last_reject})")
    elif s.window_rejected:
        level, message = DiagnosticStatus.WARN, f"{s.window_rejected} bad frame(s) dropped"
    else:
        level, message = DiagnosticStatus.OK, "ok"
    s.latencies, s.stages = [], {}
    s.window_start, s.window_received, s.window_processed = now, 0, 0
    s.window_dropped = 0
    s.window_rejected = 0
    return level, message, values


def diagnostic_array(node_fqn: str, hardware_id: str, level: bytes, message: str,
                     values: dict[str, str], stamp: Any) -> DiagnosticArray:
    """One /diagnostics message holding this node's status."""
    status = DiagnosticStatus(level=level, name=status_name(node_fqn), message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr
