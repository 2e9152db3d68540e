"""A bag -> synced, registered, metric frames: what extraction (training) and mtl-replay read.

Each colour frame is paired with the depth frame nearest in header stamp, depth is registered
into the colour camera (both CameraInfos + the extrinsic: see calibration.py) and converted to
metres. Reading is two passes over the image topics: the first reads header stamps straight from
the raw bytes to plan the pairs (so out-of-order stamps, strides and gaps cost nothing), the
second deserialises only the messages a planned pair needs.

Stamps are checked before pairing, and everything set aside is counted in BagReport: a message
whose bytes are not a header is undecodable (`bad`); a stamp of 0 cannot be placed in time and is
dropped, unless a topic's stamps are ALL 0 (a driver without a clock), in which case every topic
is paired by the bag's receive time instead (`stamp_source` "receive", said in the summary); a
stamp repeated on one topic keeps its first message in bag order (`duplicate_stamps`).

`pending_frames` yields each frame before its depth is registered (a PendingFrame, whose
`frame()` registers it with the bag's one DepthRegistration), so extraction can register and
encode frames on worker threads while the reader goes on; `read_synced_frames` is the same
stream with every frame registered in place.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.codecs import depth_image_to_metres
from mtl_perception.core.contracts import RecordedFrame
from mtl_perception.core.geometry.registration import DepthRegistration
from mtl_training.config import BagConfig
from mtl_training.data.bags.calibration import extrinsic, read_calibration, registration_mode
from mtl_training.data.bags.decode import REP118_SCALE, decode_colour, decode_label
from mtl_training.data.bags.reader import BagError, open_bag, safe_messages, stamp_reader
from mtl_training.data.bags.sync import (
    check_stamps,
    clockless,
    nearest,
    plan_frames,
    ready,
)
from mtl_training.data.bags.topics import resolve_topics

log = logging.getLogger(__name__)


@dataclass
class BagReport:
    """What reading one bag found: counts the user needs to trust (or distrust) the result."""

    bag: str
    topics: dict[str, str | None] = field(default_factory=dict)
    colour_messages: int = 0  # every message read on the colour topic (undecodable included)
    depth_messages: int = 0
    planned: int = 0
    unpaired: int = 0  # colour frames with no depth within the tolerance
    thinned: int = 0  # dropped by min_gap / stride
    existing: int = 0  # already in the dataset (incremental re-extraction)
    written: int = 0
    bad: dict[str, int] = field(default_factory=dict)  # undecodable messages per topic
    zero_stamps: dict[str, int] = field(default_factory=dict)  # role -> messages stamped 0
    duplicate_stamps: dict[str, int] = field(default_factory=dict)  # role -> repeats (dropped)
    stamp_source: str = "header"  # "header", or "receive" when a topic's stamps are all 0
    clockless: list[str] = field(default_factory=list)  # roles whose header stamps are all 0
    truncated: str | None = None
    registration: str = "nothing new decoded"
    extrinsic_source: str = "-"
    extrinsic: list[list[float]] | None = None  # T_colour_depth [4, 4] used for registration
    depth_scale: float = REP118_SCALE
    up_to_date: bool = False
    no_valid_depth: int = 0  # frames written whose depth has no valid pixel (all NaN/inf/0)

    def stream_error(self, reason: str) -> None:
        """Reading stopped early (a damaged file): what was read so far is kept."""
        self.truncated = f"{self.truncated}; {reason}" if self.truncated else reason

    def bad_message(self, topic: str) -> None:
        """One message on `topic` could not be decoded (it is skipped, the read goes on)."""
        self.bad[topic] = self.bad.get(topic, 0) + 1

    def problems(self) -> list[str]:
        """One line per kind of bad input found (stamps, undecodable messages, truncation), for
        the extract summary and the replay report: nothing the bag lost goes unsaid."""
        lines = []
        for role, n in self.zero_stamps.items():
            note = "" if self.stamp_source == "receive" else " (dropped: cannot be paired by time)"
            lines.append(f"{n} {role} messages with stamp 0{note}")
        if self.stamp_source == "receive":
            lines.append(f"every {' and '.join(self.clockless)} header stamp is 0: all topics "
                         "paired by bag receive time instead")
        for role, n in self.duplicate_stamps.items():
            lines.append(f"{n} duplicate {role} stamps (kept the first)")
        for topic, n in sorted(self.bad.items()):
            lines.append(f"skipped {n} undecodable message(s) on {topic}")
        if self.truncated:
            lines.append(f"bag truncated: reading stopped early ({self.truncated})")
        if self.no_valid_depth:  # a broken sensor or registration: frames that teach no depth
            topic = self.topics.get("depth")
            if self.no_valid_depth == self.written:
                lines.append(f"no valid depth pixel on {topic} in any of the {self.written} "
                             "frames written (every pixel NaN, inf or 0): this bag gives no "
                             "depth labels")
            else:
                lines.append(f"{self.no_valid_depth} of {self.written} frames written have no "
                             f"valid depth pixel on {topic} (every pixel NaN, inf or 0)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready data (replay's report.json, the dataset index)."""
        return {"topics": self.topics, "registration": self.registration,
                "colour_messages": self.colour_messages, "depth_messages": self.depth_messages,
                "planned": self.planned, "unpaired": self.unpaired, "thinned": self.thinned,
                "bad_messages": self.bad, "zero_stamps": self.zero_stamps,
                "duplicate_stamps": self.duplicate_stamps, "stamp_source": self.stamp_source,
                "clockless": self.clockless, "truncated": self.truncated,
                "no_valid_depth": self.no_valid_depth, "problems": self.problems()}

    def summary(self) -> str:
        """The lines `mtl-train bag extract` prints for this bag."""
        if self.up_to_date:
            return f"{self.bag}: up to date ({self.existing} frames already extracted)"
        text = (f"{self.bag}: {self.colour_messages} colour / {self.depth_messages} depth "
                f"messages -> {self.planned} pair(s) ({self.unpaired} colour frames without depth "
                f"in tolerance, {self.thinned} thinned by min_gap/stride); "
                f"{self.written} written, {self.existing} already extracted; "
                f"depth: {self.registration}")
        for line in self.problems():
            text += f"\n  {line}"
        return text


ROLES = {"rgb": "colour", "depth": "depth", "label": "label"}  # topic key -> report wording


@dataclass
class PendingFrame:
    """A decoded frame whose depth is still in the depth camera: `frame()` registers it (pure
    numpy, safe on any thread; the registration's tables are shared by the bag's frames)."""

    stamp_ns: int
    rgb: np.ndarray
    raw_depth: np.ndarray | None  # float32 metres in the depth camera
    seg: np.ndarray | None
    K: np.ndarray | None
    frame_id: str
    depth_stamp_ns: int | None
    registration: DepthRegistration | None  # None: depth already pixel-aligned with colour

    def frame(self) -> RecordedFrame:
        depth = self.raw_depth
        if depth is not None and self.registration is not None:
            depth = self.registration(depth)
        return RecordedFrame(self.stamp_ns, self.rgb, depth, self.seg, self.K, self.frame_id,
                             self.depth_stamp_ns)


def read_synced_frames(path: str | Path, cfg: BagConfig, report: BagReport,
                       skip_stamps: Set[int] = frozenset(),
                       keep_unpaired: bool = False) -> Iterator[RecordedFrame]:
    """Yield the bag's paired, registered frames in the bag's recorded order.

    Frames whose colour stamp is in `skip_stamps` are planned but not decoded (already cached).
    `keep_unpaired` also yields colour frames without depth in tolerance (depth None): replay
    publishes every colour frame, training keeps only pairs.
    Everything that goes wrong per message is counted in `report`; a bag that cannot be opened or
    used raises BagError.
    """
    for pending in pending_frames(path, cfg, report, skip_stamps, keep_unpaired):
        yield pending.frame()


def pending_frames(path: str | Path, cfg: BagConfig, report: BagReport,
                   skip_stamps: Set[int] = frozenset(),
                   keep_unpaired: bool = False) -> Iterator[PendingFrame]:
    """read_synced_frames without the registration: each frame's `frame()` does it.

    Frames whose colour stamp is in `skip_stamps` are planned but not decoded (already cached).
    `keep_unpaired` also yields colour frames without depth in tolerance (depth None): replay
    publishes every colour frame, training keeps only pairs.
    Everything that goes wrong per message is counted in `report`; a bag that cannot be opened or
    used raises BagError.
    """
    path = Path(path)
    with open_bag(path) as reader:
        report.truncated = reader.mtl_recovered
        try:
            topics = resolve_topics(reader, cfg, path, report.bad_message)
        except BagError as exc:  # a cut-short file explains a missing topic: say so
            if reader.mtl_recovered is None:
                raise
            raise BagError(f"{exc}; bag truncated ({reader.mtl_recovered})") from exc
        report.topics = dict(topics)
        cal = read_calibration(reader, topics, report.bad_message)
        stamp_of = stamp_reader(reader)
        by_topic = {name: [c for c in reader.connections if c.topic == name]
                    for name in (topics["rgb"], topics["depth"], topics["label"]) if name}
        conns = [c for cs in by_topic.values() for c in cs]
        # pass 1: header stamps from raw bytes (and receive times, for clockless drivers)
        header: dict[str, list[int]] = {t: [] for t in by_topic}
        receive: dict[str, list[int]] = {t: [] for t in by_topic}
        counts: dict[str, int] = dict.fromkeys(by_topic, 0)
        frame_ids: dict[str, str] = {}
        for conn, ts, raw in safe_messages(reader, conns, lambda e: None):  # pass 2 reports it
            counts[conn.topic] += 1
            try:
                header[conn.topic].append(stamp_of(raw))
            except (ValueError, IndexError):  # not a message with a header: undecodable
                report.bad_message(conn.topic)
                continue
            receive[conn.topic].append(ts)
            if conn.topic not in frame_ids:
                with contextlib.suppress(Exception):  # a bad message is counted in pass 2
                    frame_ids[conn.topic] = reader.deserialize(raw, conn.msgtype).header.frame_id
        # A topic whose every header stamp is 0 has no clock: pair every topic by the bag's
        # receive time instead (one clock for all). Otherwise stamp-0 messages are set aside.
        report.clockless = [role for key, role in ROLES.items()
                            if topics[key] in by_topic and clockless(header[topics[key]])]
        by_receive = bool(report.clockless)
        report.stamp_source = "receive" if by_receive else "header"
        keys = receive if by_receive else header
        checks = {t: check_stamps(keys[t], drop_zero=not by_receive) for t in by_topic}
        for key, role in ROLES.items():
            name = topics[key]
            if name in by_topic and header[name].count(0):
                report.zero_stamps[role] = header[name].count(0)
            if name in by_topic and checks[name].duplicates:
                report.duplicate_stamps[role] = checks[name].duplicates
        if not topics["depth"]:
            report.registration = "no depth topic (frames without depth)"
        report.colour_messages = counts.get(topics["rgb"], 0)
        report.depth_messages = counts.get(topics["depth"], 0) if topics["depth"] else 0
        pairs, report.unpaired, report.thinned = plan_frames(
            checks[topics["rgb"]].stamps,
            checks[topics["depth"]].stamps if topics["depth"] else None,
            cfg.sync_tolerance, cfg.min_gap, cfg.stride, keep_unpaired)
        report.planned = len(pairs)
        labels = sorted(checks[topics["label"]].stamps) if topics["label"] else []
        tol = round(cfg.sync_tolerance * 1e9)
        todo = {c: d for c, d in pairs if c not in skip_stamps}
        report.existing = len(pairs) - len(todo)
        label_for = {c: nearest(labels, c, tol) for c in todo} if labels else {}
        scale = cfg.depth_scale or cal.depth_units or REP118_SCALE
        report.depth_scale = scale
        colour_frame = frame_ids.get(topics["rgb"], "")
        depth_frame = frame_ids.get(topics["depth"], "") if topics["depth"] else ""
        T, report.extrinsic_source = extrinsic(cfg, cal, topics, colour_frame, depth_frame)
        report.extrinsic = None if T is None else T.tolist()
        if not todo:
            return
        depth_users: dict[int, int] = {}  # depth stamp -> colour frames still waiting for it
        for d in todo.values():
            if d is not None:
                depth_users[d] = depth_users.get(d, 0) + 1
        wanted_labels = {v for v in label_for.values() if v is not None}

        cam_c = cal.rgb_info.camera if cal.rgb_info else None
        cam_d = cal.depth_info.camera if cal.depth_info else None
        K_c = None if cam_c is None else cam_c.matrix()

        # pass 2: decode what the plan needs, yield each frame once its parts have arrived
        colour_buf: dict[int, np.ndarray] = {}
        depth_buf: dict[int, np.ndarray] = {}
        label_buf: dict[int, object] = {}
        register: bool | None = None
        registrations: dict[tuple[tuple[int, ...], tuple[int, ...]], DepthRegistration] = {}
        seen: dict[str, set[int]] = {t: set() for t in by_topic}  # first message per stamp only
        for conn, ts, raw in safe_messages(reader, conns, report.stream_error):
            try:
                stamp = stamp_of(raw)
            except (ValueError, IndexError):
                continue  # counted in pass 1
            topic = conn.topic
            if by_receive:
                stamp = ts
            elif stamp == 0:
                continue  # counted in pass 1
            if stamp in seen[topic]:
                continue  # a duplicate stamp: counted in pass 1, the first one is used
            seen[topic].add(stamp)
            is_colour = topic == topics["rgb"] and stamp in todo
            is_depth = topic == topics["depth"] and stamp in depth_users
            is_label = topic == topics["label"] and stamp in wanted_labels
            if not (is_colour or is_depth or is_label):
                continue
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                if is_colour:
                    colour_buf[stamp] = decode_colour(msg, conn.msgtype)
                elif is_depth:
                    depth_buf[stamp] = depth_image_to_metres(msg, scale)
                else:
                    label_buf[stamp] = msg
            except Exception as exc:  # untrusted bag content: count, skip, go on
                report.bad_message(topic)
                log.debug("%s: skipped message on %s: %s", path, topic, exc)
                continue
            for c in ready(todo, colour_buf, depth_buf, label_buf, label_for):
                rgb = colour_buf.pop(c)
                d = todo.pop(c)
                raw_depth, registration = None, None
                if d is not None:
                    raw_depth = depth_buf[d]
                    if register is None:
                        register, report.registration = _registration_mode(
                            raw_depth.shape, rgb.shape[:2], cam_d, cam_c, T, report, path)
                    if register:
                        key = (raw_depth.shape, rgb.shape[:2])
                        if key not in registrations:  # one table per (depth, colour) size
                            h, w = rgb.shape[:2]
                            dh, dw = raw_depth.shape
                            registrations[key] = DepthRegistration(
                                cam_d.resized(dw, dh), cam_c.resized(w, h), T, (dh, dw))
                        registration = registrations[key]
                    depth_users[d] -= 1
                    if depth_users[d] == 0:
                        depth_buf.pop(d)
                seg = None
                lab = label_for.get(c)
                if lab is not None:
                    try:
                        seg = decode_label(label_buf[lab], rgb.shape[:2])
                    except Exception:  # counted; the frame keeps rgb + depth
                        report.bad_message(topics["label"])
                yield PendingFrame(c, rgb, raw_depth, seg, K_c, colour_frame, d, registration)


def _registration_mode(depth_hw: tuple[int, int], colour_hw: tuple[int, int],
                       cam_d: PinholeCamera | None, cam_c: PinholeCamera | None,
                       T: np.ndarray | None, report: BagReport, path: Path) -> tuple[bool, str]:
    """calibration.registration_mode, with the undecodable counts in its error: a camera_info
    topic of garbage is then named as such, not just as "camera_info missing"."""
    try:
        return registration_mode(depth_hw, colour_hw, cam_d, cam_c, T, report.extrinsic_source,
                                 path)
    except BagError as exc:
        bad = "".join(f"; {n} undecodable message(s) on {t}" for t, n in sorted(report.bad.items()))
        raise BagError(f"{exc}{bad}") from exc
