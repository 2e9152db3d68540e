"""Which topics of a bag to read: the configured ones, else what the bag's index suggests.

Suggestions need each image topic's first message (its encoding tells colour from depth), so
only the image topics are read here, and only until every one has described itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rosbags.highlevel import AnyReader

from mtl_training.config import BagConfig
from mtl_training.data.bags.reader import (
    CAMERA_INFO,
    COMPRESSED,
    IMAGE,
    BagError,
    TopicStats,
    describe_message,
    match_info,
    safe_messages,
    suggest_topics,
)


def resolve_topics(reader: AnyReader, cfg: BagConfig, path: Path,
                   bad_message: Callable[[str], None] | None = None) -> dict[str, str | None]:
    """Topics by role (rgb, depth, rgb_info, depth_info, label): configured, else suggested.

    A missing colour topic, or a configured topic the bag lacks, is a BagError. An image topic
    none of whose messages decodes cannot be suggested; its messages are passed to `bad_message`
    (and named in the error when colour is missing), so a depth topic of garbage is reported as
    undecodable instead of the bag silently having "no depth topic".

    Only a missing image topic costs a read of first messages; CameraInfo topics are matched to
    their image topic by namespace, which needs the connection list alone.
    """
    suggested: dict[str, str | None] = {"rgb": None, "depth": None, "rgb_info": None,
                                        "depth_info": None}
    undecodable: dict[str, int] = {}
    if None in (cfg.rgb_topic, cfg.depth_topic, cfg.rgb_info_topic, cfg.depth_info_topic):
        stats = first_message_stats(reader, undecodable)
        suggested = suggest_topics(stats)
    topics = {"rgb": cfg.rgb_topic or suggested["rgb"],
              "depth": cfg.depth_topic or suggested["depth"],
              "rgb_info": cfg.rgb_info_topic, "depth_info": cfg.depth_info_topic,
              "label": cfg.label_topic}
    infos = [c.topic for c in reader.connections if c.msgtype == CAMERA_INFO]
    if cfg.rgb_info_topic is None:
        topics["rgb_info"] = match_info(topics["rgb"], infos)
    if cfg.depth_info_topic is None:
        topics["depth_info"] = match_info(topics["depth"], infos)
    present = {c.topic: c.msgtype for c in reader.connections}
    if topics["rgb"] is None:
        garbage = "".join(f"; {n} undecodable message(s) on {t}" for t, n in undecodable.items())
        raise BagError(f"{path}: no colour image topic found (set bag.rgb_topic; "
                       f"`mtl-train bag index` lists the topics){garbage}")
    chosen = {topics["rgb"], topics["depth"], topics["label"]}  # read (and counted) later
    for topic, n in undecodable.items():
        if bad_message is not None and topic not in chosen:
            for _ in range(n):
                bad_message(topic)
    for key in ("rgb", "depth", "label"):
        name = topics[key]
        if name is not None and name not in present:
            raise BagError(f"{path}: topic {name} (bag.{key}_topic) is not in the bag")
    if present[topics["rgb"]] not in (IMAGE, COMPRESSED):
        raise BagError(f"{path}: {topics['rgb']} is {present[topics['rgb']]}, not an image")
    return topics


def first_message_stats(reader: AnyReader, undecodable: dict[str, int] | None = None
                        ) -> dict[str, TopicStats]:
    """TopicStats of every topic, with the first message described for image topics only.

    An image topic is read until one message describes itself; `undecodable` (when given)
    receives the message count of every image topic where none did (all of them were read).
    """
    stats = {name: TopicStats(name, info.msgtype or "?", info.msgcount)
             for name, info in reader.topics.items()}
    conns = [c for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)]
    pending = {c.topic for c in conns}
    failed: dict[str, int] = {}
    for conn, _, raw in safe_messages(reader, conns, lambda e: None):
        if conn.topic not in pending:
            continue
        try:
            stats[conn.topic].details = describe_message(reader, conn.msgtype, raw)
            pending.discard(conn.topic)
        except Exception:  # untrusted bag content: try the topic's next message
            failed[conn.topic] = failed.get(conn.topic, 0) + 1
            continue
        if not pending:
            break
    if undecodable is not None:
        undecodable.update({t: n for t, n in failed.items() if t in pending})
    return stats
