"""launch/perception.launch.py under launch_pytest: the real launch file, fed frames over DDS.

Runs the installed launch file (share/mtl_perception/launch). Needs a sourced ROS 2 install space
with launch, launch_ros and launch_pytest and mtl_perception built into it with colcon (so that
`perception_node` is in lib/mtl_perception); skipped with the reason otherwise (conftest.py here),
never left waiting for a launch that cannot start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest not installed (needs a ROS 2 install)")
launch = pytest.importorskip("launch", reason="launch not installed")
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from mtl_perception.ros.client import PerceptionClient, decode_outputs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.launch


@launch_pytest.fixture
def perception_launch(tiny_artifact):
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(get_package_share_directory(
                "mtl_perception")) / "launch" / "perception.launch.py")),
            launch_arguments={
                "model": str(tiny_artifact),
                "params_file": str(REPO / "config" / "perception.yaml"),
                "namespace": "launch_test",
                "image": "/launch_test/camera/image_raw",
                "camera_info": "/launch_test/camera/camera_info",
                "device": "cpu",
            }.items(),
        ),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=perception_launch)
def test_launch_file_serves_frames():
    with PerceptionClient(node_name="/launch_test/mtl_perception",
                          image_topic="/launch_test/camera/image_raw",
                          outputs=("semantic", "semantic_color", "depth", "confidence"),
                          camera_info_topic="/launch_test/camera/camera_info") as client:
        client.wait_until_connected(timeout=60)
        rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        rec = None
        for i in range(5):
            stamp = 1_000_000_000 + i
            client.publish_rgb(rgb, stamp, "camera_optical")
            rec = client.wait_for(stamp, timeout=5)
            if rec is not None:
                break
        assert rec is not None
        out = decode_outputs(rec)
        assert out["semantic"].shape == (48, 64) and out["semantic_color"].shape == (48, 64, 3)
        assert (out["depth"] > 0).all() and rec.outputs["depth"].header.frame_id == "camera_optical"
