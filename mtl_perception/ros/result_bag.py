"""A replay's inputs and outputs as a ROS 2 mcap bag (open it in Foxglove, or replay it for RViz).

Messages are the rclpy objects that were published or received, serialised by rclpy itself; the
bag is written with rosbags so no ROS storage plugins are needed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore


class ResultBag:
    """An mcap bag folder open for writing; one connection per topic given at open time.

    Args:
        path: the bag folder to create (must not exist).
        topics: topic -> message type, e.g. {"/image": "sensor_msgs/msg/Image"}.
    """

    def __init__(self, path: Path, topics: dict[str, str]) -> None:
        store = get_typestore(Stores.ROS2_HUMBLE)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conns = {topic: self.writer.add_connection(topic, msgtype, typestore=store)
                      for topic, msgtype in topics.items()}

    def write(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """Append one rclpy message on `topic`, at `t_ns` (default: now)."""
        self.writer.write(self.conns[topic], t_ns or time.time_ns(), serialize_message(msg))

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> ResultBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
