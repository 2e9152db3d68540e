"""The ROS-free, training-free core shared by the node and the trainer (numpy, OpenCV, torch)."""
