"""The transport floor of the node-latency benchmark: a node that does no work.

`python -m bench.echo_node NS [OUTPUT,...]` subscribes `NS/camera/image_raw` and answers every
image at once with `NS/mtl_perception/<output>` for each output (default semantic,depth), each
the image's size in the node's encoding (semantic mono8, semantic_color rgb8, depth and
confidence 32FC1), with the image's header: the same messages, QoS and executor (`rclpy.spin`) as
perception_node, and no decoding, inference or postprocessing. Its end-to-end time is what DDS
and rclpy cost a Python node that serves 640x480 frames; the rest of the node's end-to-end time
is the node's own work.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from mtl_perception.core.codecs import writable_image
from mtl_perception.ros.client import sensor_qos

ENCODINGS = {"semantic": "mono8", "semantic_color": "rgb8", "depth": "32FC1",
             "confidence": "32FC1"}
DEFAULT_OUTPUTS = ("semantic", "depth")


class EchoNode(Node):
    """Answers each image with preallocated output images under its header."""

    def __init__(self, ns: str, outputs: tuple[str, ...] = DEFAULT_OUTPUTS) -> None:
        super().__init__("mtl_perception_echo")
        qos = sensor_qos(1)  # config/perception.yaml: best effort, keep last 1
        self.outs = {name: (Image(), ENCODINGS[name]) for name in outputs}
        self.pubs = {name: self.create_publisher(Image, f"{ns}/mtl_perception/{name}", qos)
                     for name in self.outs}
        self.sub = self.create_subscription(Image, f"{ns}/camera/image_raw",
                                            self.image_callback, qos)

    def image_callback(self, msg: Image) -> None:
        for name, (out, encoding) in self.outs.items():
            if out.height != msg.height or out.width != msg.width:
                writable_image(out, msg.height, msg.width, encoding)
            out.header = msg.header
            self.pubs[name].publish(out)


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    rclpy.init(args=argv)
    outputs = tuple(argv[2].split(",")) if len(argv) > 2 else DEFAULT_OUTPUTS
    node = EchoNode(argv[1] if len(argv) > 1 else "", outputs)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
