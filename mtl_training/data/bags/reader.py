"""Open rosbags (ROS 1 .bag, ROS 2 .db3/.mcap file or bag folder) and summarise what is in them.

Everything here works on raw bytes first and deserialises only what it must: header stamps are read
straight from the serialised message (same offsets in ROS 1 and CDR), so indexing and planning a
sync cost one read of the bag, not one deserialisation per image.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from rosbags.highlevel import AnyReader

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TRANSFORM = "geometry_msgs/msg/Transform"
COLOUR_ENCODINGS = {"rgb8", "bgr8", "rgba8", "bgra8", "8UC3"}
DEPTH_ENCODINGS = {"16UC1", "mono16", "32FC1"}


class BagError(ValueError):
    """A bag cannot be opened or used; the message is one line naming the bag."""


def bag_kind(path: Path) -> str:
    if path.is_dir():
        storage = next((f.suffix[1:] for f in sorted(path.iterdir())
                        if f.suffix in (".mcap", ".db3")), "?")
        return f"ROS 2 folder ({'sqlite3' if storage == 'db3' else storage})"
    return {".bag": "ROS 1", ".mcap": "ROS 2 mcap", ".db3": "ROS 2 sqlite3"}.get(path.suffix, "?")


MCAP_MAGIC = b"\x89MCAP0\r\n"
_MCAP_DATA_END, _MCAP_FOOTER = 0x0F, 0x02


def recover_mcap(src: Path, dst: Path) -> str:
    """Copy the complete records of an mcap file that was cut short (a recorder killed mid-write
    leaves no summary, footer or end magic) and close the copy properly, so it can be read.

    Returns a one-line description of what was dropped. Raises BagError when `src` is not mcap.
    """
    size = src.stat().st_size
    with src.open("rb") as f:
        if f.read(8) != MCAP_MAGIC:
            raise BagError(f"cannot open bag {src}: not an mcap file")
        pos = 8
        while pos + 9 <= size:  # record: opcode u8, length u64, body
            f.seek(pos)
            head = f.read(9)
            (length,) = struct.unpack("<Q", head[1:])
            if head[0] in (_MCAP_DATA_END, _MCAP_FOOTER) or pos + 9 + length > size:
                break
            pos += 9 + length
        f.seek(0)
        with dst.open("wb") as out:
            remaining = pos
            while remaining:
                chunk = f.read(min(remaining, 1 << 24))
                out.write(chunk)
                remaining -= len(chunk)
            out.write(bytes([_MCAP_DATA_END]) + struct.pack("<Q", 4) + bytes(4))
            out.write(bytes([_MCAP_FOOTER]) + struct.pack("<Q", 20) + bytes(20))
            out.write(MCAP_MAGIC)
    return f"file cut short: kept the first {pos} of {size} bytes (complete records only)"


def _mcap_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".mcap" else None
    files = sorted(path.glob("*.mcap")) if path.is_dir() else []
    return files[0] if len(files) == 1 else None


@contextmanager
def open_bag(path: str | Path, recover: bool = True) -> Iterator[AnyReader]:
    """An open AnyReader, or BagError('cannot open bag <path>: <reason>').

    A truncated mcap (no footer) is recovered into a temporary copy; the reader then carries
    `mtl_recovered` (what was dropped), which callers report as a truncated bag.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"cannot open bag {path}: no such file or folder")
    if path.is_file() and path.suffix not in (".bag", ".mcap", ".db3"):
        raise BagError(f"cannot open bag {path}: expected a .bag, .mcap or .db3 file or a ROS 2 "
                       "bag folder")
    with ExitStack() as stack:
        try:
            reader = AnyReader([path])
            reader.open()
            recovered = None
        except Exception as exc:  # any failure on an untrusted file becomes one line
            mcap = _mcap_file(path) if recover else None
            if mcap is None or "end magic" not in str(exc):
                raise BagError(f"cannot open bag {path}: {_one_line(exc)}") from exc
            tmp = Path(stack.enter_context(TemporaryDirectory(prefix="mtl_bag_recover_")))
            recovered = recover_mcap(mcap, tmp / mcap.name)
            try:
                reader = AnyReader([tmp / mcap.name])
                reader.open()
            except Exception as exc2:  # the recovered prefix is unreadable too
                raise BagError(f"cannot open bag {path}: {_one_line(exc)}; recovery failed: "
                               f"{_one_line(exc2)}") from exc2
            log.debug("%s: %s", path, recovered)  # callers report it with their summary
        reader.mtl_recovered = recovered
        try:
            yield reader
        finally:
            _close(reader, path)


def _close(reader: AnyReader, path: Path) -> None:
    try:
        reader.close()
    except Exception as exc:  # closing a broken file must not mask the result
        log.debug("closing %s: %s", path, exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp of a serialised ROS 1 message whose first field is std_msgs/Header.

    ROS 1: uint32 seq, uint32 sec, uint32 nsec (little endian), then the frame_id string (uint32
    length + bytes). CDR (below) puts its 4-byte encapsulation header where ROS 1 has seq, so both
    keep the stamp at bytes 4..12. The header is checked, not just sliced: random bytes would
    otherwise give a garbage stamp that pairs with nothing and hides an undecodable message among
    the "colour frames without depth". Raises ValueError for a message that is not a header.
    """
    if len(raw) < 16:
        raise ValueError(f"message of {len(raw)} bytes is too short for a header")
    sec, nsec, length = struct.unpack_from("<iII", raw, 4)
    if nsec >= 1_000_000_000 or 16 + length > len(raw):
        raise ValueError("not a std_msgs/Header (nanoseconds or frame_id length out of range)")
    return sec * 1_000_000_000 + nsec


# CDR encapsulation kinds (byte 1; byte 0 is 0): CDR, PL_CDR, CDR2, D_CDR2, PL_CDR2 in both orders
_CDR_KINDS = range(0x00, 0x0C)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """As header_stamp_ns for CDR, honouring the encapsulation's byte order; the encapsulation
    and the frame_id string (length including its NUL terminator) are checked too."""
    if len(raw) < 16:
        raise ValueError(f"message of {len(raw)} bytes is too short for a header")
    if raw[0] != 0 or raw[1] not in _CDR_KINDS:
        raise ValueError("not a CDR message (bad encapsulation header)")
    order = "<" if raw[1] & 1 else ">"
    sec, nsec, length = struct.unpack_from(order + "iII", raw, 4)
    if nsec >= 1_000_000_000 or length < 1 or 16 + length > len(raw) or raw[15 + length] != 0:
        raise ValueError("not a std_msgs/Header (nanoseconds or frame_id out of range)")
    return sec * 1_000_000_000 + nsec


def stamp_reader(reader: AnyReader) -> Callable[[bytes | memoryview], int]:
    """The header-stamp reader for the bag's serialisation (CDR for ROS 2, ROS 1 otherwise)."""
    return cdr_header_stamp_ns if reader.is2 else header_stamp_ns


@dataclass
class TopicStats:
    name: str
    msgtype: str
    count: int = 0
    first_ns: int | None = None  # bag (receive) time
    last_ns: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # encoding, size, frame_id of message 1

    @property
    def rate_hz(self) -> float | None:
        if self.count < 2 or self.first_ns is None or self.last_ns == self.first_ns:
            return None
        return (self.count - 1) / ((self.last_ns - self.first_ns) * 1e-9)


@dataclass
class BagIndex:
    path: Path
    kind: str
    start_ns: int
    end_ns: int
    messages: int
    topics: dict[str, TopicStats]
    suggested: dict[str, str | None]
    bad: dict[str, int] = field(default_factory=dict)
    truncated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "messages": self.messages, "suggested": self.suggested,
                "bad_messages": self.bad, "truncated": self.truncated,
                "topics": {n: {"type": t.msgtype, "count": t.count, "rate_hz": t.rate_hz,
                               **t.details} for n, t in self.topics.items()}}


def safe_messages(reader: AnyReader, connections, on_error) -> Iterator[tuple[Any, int, bytes]]:
    """reader.messages, but a truncated or corrupt file ends the stream and reports why.

    `connections` None reads every topic; an empty list reads nothing (AnyReader would read all).
    """
    if connections is not None and not connections:
        return
    it = reader.messages(connections=connections or ())
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # damaged file: stop, caller reports
            on_error(_one_line(exc))
            return
        yield item


def describe_message(reader: AnyReader, msgtype: str, raw: bytes) -> dict[str, Any]:
    """Encoding, size and frame of an image-like message, for the index and topic suggestions."""
    msg = reader.deserialize(raw, msgtype)
    out: dict[str, Any] = {"frame_id": msg.header.frame_id}
    if msgtype == IMAGE:
        out.update(encoding=msg.encoding, width=int(msg.width), height=int(msg.height))
    elif msgtype == COMPRESSED:
        out.update(format=msg.format)
    elif msgtype == CAMERA_INFO:
        out.update(width=int(msg.width), height=int(msg.height),
                   fx=float(msg.k[0]) if hasattr(msg, "k") else float(msg.K[0]))
    return out


def index_bag(path: str | Path) -> BagIndex:
    """Topics, types, counts, rates and time span of one bag, plus suggested topics."""
    path = Path(path)
    with open_bag(path) as reader:
        topics = {name: TopicStats(name, info.msgtype or "?")
                  for name, info in sorted(reader.topics.items())}
        bad: dict[str, int] = {}
        truncated: list[str] = []
        for conn, ts, raw in safe_messages(reader, None, truncated.append):
            st = topics.setdefault(conn.topic, TopicStats(conn.topic, conn.msgtype))
            st.count += 1
            st.first_ns = ts if st.first_ns is None else min(st.first_ns, ts)
            st.last_ns = ts if st.last_ns is None else max(st.last_ns, ts)
            if not st.details and conn.msgtype in (IMAGE, COMPRESSED, CAMERA_INFO):
                try:
                    st.details = describe_message(reader, conn.msgtype, raw)
                except Exception:  # counted and reported as a bad message
                    bad[conn.topic] = bad.get(conn.topic, 0) + 1
        starts = [t.first_ns for t in topics.values() if t.first_ns is not None]
        ends = [t.last_ns for t in topics.values() if t.last_ns is not None]
        if reader.mtl_recovered:
            truncated.insert(0, reader.mtl_recovered)
        return BagIndex(path, bag_kind(path), min(starts, default=0), max(ends, default=0),
                        sum(t.count for t in topics.values()), topics, suggest_topics(topics),
                        bad, "; ".join(truncated) if truncated else None)


def _words(topic: str) -> str:
    return topic.lower()


def _colour_score(t: TopicStats) -> tuple:
    name = _words(t.name)
    return ("depth" not in name, any(w in name for w in ("color", "colour", "rgb")),
            t.msgtype == IMAGE, t.count)


def _depth_score(t: TopicStats) -> tuple:
    name = _words(t.name)
    return (any(w in name for w in ("aligned", "registered")), "depth" in name, t.count)


def suggest_topics(topics: dict[str, TopicStats]) -> dict[str, str | None]:
    """Best guesses for the colour, depth and matching camera_info topics (from names and the
    first message's encoding)."""
    colour = [t for t in topics.values() if t.count and (
        (t.msgtype == IMAGE and t.details.get("encoding") in COLOUR_ENCODINGS)
        or (t.msgtype == COMPRESSED and "depth" not in _words(t.name)))]
    depth = [t for t in topics.values() if t.count and t.msgtype == IMAGE
             and t.details.get("encoding") in DEPTH_ENCODINGS]
    infos = [t.name for t in topics.values() if t.msgtype == CAMERA_INFO and t.count]
    rgb = max(colour, key=_colour_score).name if colour else None
    dep = max(depth, key=_depth_score).name if depth else None
    return {"rgb": rgb, "depth": dep, "rgb_info": match_info(rgb, infos),
            "depth_info": match_info(dep, infos)}


def match_info(image_topic: str | None, infos: list[str]) -> str | None:
    """The CameraInfo topic sharing the longest namespace prefix with the image topic."""
    if image_topic is None or not infos:
        return None
    parts = image_topic.strip("/").split("/")

    def shared(info: str) -> int:
        n = 0
        for a, b in zip(parts, info.strip("/").split("/"), strict=False):
            if a != b:
                break
            n += 1
        return n

    best = max(infos, key=shared)
    if shared(best) > 0:
        return best
    root = [i for i in infos if i.strip("/").count("/") == 0]  # e.g. /image with /camera_info
    return root[0] if len(root) == 1 and len(parts) == 1 else None


def format_index(idx: BagIndex) -> str:
    """The text `mtl-train bag index` prints for one bag."""
    span = (idx.end_ns - idx.start_ns) * 1e-9
    lines = [f"{idx.path}  [{idx.kind}]  {idx.messages} messages, {len(idx.topics)} topics, "
             f"{span:.3f} s  (bag time {idx.start_ns * 1e-9:.3f} .. {idx.end_ns * 1e-9:.3f} s)"]
    width = max((len(t) for t in idx.topics), default=5)
    lines.append(f"  {'topic':<{width}}  {'type':<30} {'count':>6} {'rate_hz':>8}  details")
    for t in idx.topics.values():
        rate = f"{t.rate_hz:8.2f}" if t.rate_hz is not None else f"{'-':>8}"
        det = t.details
        if "encoding" in det:
            info = f"{det['encoding']} {det['width']}x{det['height']} frame '{det['frame_id']}'"
        elif "format" in det:
            info = f"{det['format']} frame '{det['frame_id']}'"
        elif "fx" in det:
            info = f"{det['width']}x{det['height']} fx {det['fx']:.1f}"
        else:
            info = ""
        lines.append(f"  {t.name:<{width}}  {t.msgtype:<30} {t.count:>6} {rate}  {info}".rstrip())
    s = idx.suggested
    lines.append("  suggested: " + ", ".join(f"{k}={v or '-'}" for k, v in s.items()))
    for topic, n in sorted(idx.bad.items()):
        lines.append(f"  bad messages: {topic}: {n}")
    if idx.truncated:
        lines.append(f"  truncated: reading stopped early ({idx.truncated})")
    return "\n".join(lines)
