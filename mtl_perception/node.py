"""perception_node: RGB image in; class ids and metric depth out, with the input header kept.

ROS at the edge only: parameters, QoS, subscriptions and publishing live here; decoding, inference
and conversions are plain Python (conversions.py, inference.py) that tests call without a graph.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from mtl_perception.conversions import ImageConversionError, fill_image, image_to_rgb
from mtl_perception.inference import ArtifactError, Predictor

NODE_NAME = "mtl_perception"
LOG_THROTTLE_S = 5.0


class StartupError(RuntimeError):
    """Start-up cannot proceed (bad parameter, missing model): one line, non-zero exit."""


class PerceptionNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        model_path = self.declare_parameter("model_path", "").value
        device = self.declare_parameter("device", "auto").value
        if not model_path:
            raise StartupError("parameter 'model_path' is empty: set it to an exported "
                               ".safetensors artifact (mtl-train export)")
        try:
            self.predictor = Predictor(model_path, device=device)
        except (ArtifactError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        self.predictor.warmup()
        self.frames_in = 0
        self.frames_out = 0
        self.frames_rejected = 0

        qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT,
                         history=HistoryPolicy.KEEP_LAST, depth=1)
        self.semantic_pub = self.create_publisher(Image, "~/semantic", qos)
        self.depth_pub = self.create_publisher(Image, "~/depth", qos)
        self.image_sub = self.create_subscription(Image, "image", self.image_callback, qos)
        h, w = self.predictor.input_size
        self.get_logger().info(
            f"model {model_path}: {len(self.predictor.classes)} classes, input {w}x{h}, "
            f"device {self.predictor.device}; listening on {self.image_sub.topic_name}")

    def image_callback(self, msg: Image) -> None:
        self.frames_in += 1
        try:
            rgb = image_to_rgb(msg)
        except ImageConversionError as exc:
            self.frames_rejected += 1
            self.get_logger().warning(f"dropped frame: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        pred = self.predictor.predict(rgb)
        self.semantic_pub.publish(fill_image(Image(), pred.labels, "mono8", msg.header))
        self.depth_pub.publish(fill_image(Image(), pred.depth, "32FC1", msg.header))
        self.frames_out += 1


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except StartupError as exc:
        print(f"{NODE_NAME}: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
