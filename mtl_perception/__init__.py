"""mtl_perception: what a robot installs. Never imports mtl_training.

Layers, imports pointing down only (pyproject.toml [tool.importlinter], test_layering.py):
    ros/      the ROS 2 edge: node, parameters, diagnostics, client, replay (rclpy only here)
    runtime/  Predictor over an inference backend
    core/     contracts, camera model, codecs, geometry, preprocessing, metrics, models, artifact
"""
