"""Which topics of a bag to read: the configured ones, else what the bag's index suggests.

Suggestions need each image topic's first message (its encoding tells colour from depth), so
only the image topics are read here, and only until every one has described itself.
"""

from __future__ import annotations

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


def resolve_topics(reader: AnyReader, cfg: BagConfig, path: Path) -> dict[str, str | None]:
    """Topics by role (rgb, depth, rgb_info, depth_info, label): configured, else suggested.

    A missing colour topic, or a configured topic the bag lacks, is a BagError.

    Only a missing image topic costs a read of first messages; CameraInfo topics are matched to
    their image topic by namespace, which needs the connection list alone.
    """
    suggested: dict[str, str | None] = {"rgb": None, "depth": None, "rgb_info": None,
                                        "depth_info": None}
    if None in (cfg.rgb_topic, cfg.depth_topic, cfg.rgb_info_topic, cfg.depth_info_topic):
        suggested = suggest_topics(first_message_stats(reader))
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
        raise BagError(f"{path}: no colour image topic found (set bag.rgb_topic; "
                       "`mtl-train bag index` lists the topics)")
    for key in ("rgb", "depth", "label"):
        name = topics[key]
        if name is not None and name not in present:
            raise BagError(f"{path}: topic {name} (bag.{key}_topic) is not in the bag")
    if present[topics["rgb"]] not in (IMAGE, COMPRESSED):
        raise BagError(f"{path}: {topics['rgb']} is {present[topics['rgb']]}, not an image")
    return topics


def first_message_stats(reader: AnyReader) -> dict[str, TopicStats]:
    """TopicStats of every topic, with the first message described for image topics only."""
    stats = {name: TopicStats(name, info.msgtype or "?", info.msgcount)
             for name, info in reader.topics.items()}
    conns = [c for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)]
    pending = {c.topic for c in conns}
    for conn, _, raw in safe_messages(reader, conns, lambda e: None):
        if conn.topic not in pending:
            continue
        try:
            stats[conn.topic].details = describe_message(reader, conn.msgtype, raw)
            pending.discard(conn.topic)
        except Exception:  # untrusted bag content: try the topic's next message
            continue
        if not pending:
            break
    return stats
