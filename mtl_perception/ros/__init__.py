"""The thin ROS 2 edge: the only code in mtl_perception that imports rclpy and ROS messages."""
