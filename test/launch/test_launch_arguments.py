"""Launch arguments reach the node: `autostart:=false` from `ros2 launch` leaves it unconfigured.

The installed perception.launch.py runs in a real LaunchService (what `ros2 launch` runs) with a
real node process; another participant asks the node for its lifecycle state over DDS
(`<node>/get_state`, what `ros2 lifecycle get` calls). With autostart on, the node configures and
activates before it serves its services, so the first answer already tells whether autostart ran.
An argument left out keeps the params_file's value instead of a launch default overriding it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

launch = pytest.importorskip("launch", reason="launch not installed (needs a ROS 2 install)")
pytest.importorskip("launch_ros", reason="launch_ros not installed (needs a ROS 2 install)")
rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (needs a ROS 2 install)")
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NS = "/launch_args"
# Not marked `pytest.mark.launch`: launch_pytest skips such a test that names no launch fixture.


def query_state(fqn: str, deadline: float) -> str:
    """The node's lifecycle state label, asked over DDS from a participant of our own."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("launch_args_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = node.create_client(GetState, f"{fqn}/get_state")
        while not client.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                return "no get_state service"
        future = client.call_async(GetState.Request())
        executor.spin_until_future_complete(future, timeout_sec=max(deadline - time.monotonic(),
                                                                    1.0))
        return future.result().current_state.label if future.done() else "no answer"
    finally:
        rclpy.shutdown(context=context)


def state_after_launch(timeout: float, **arguments: str) -> tuple[str, int]:
    """(lifecycle state the launched node reports, LaunchService.run's return code)."""
    path = Path(get_package_share_directory("mtl_perception")) / "launch" / "perception.launch.py"
    service = launch.LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(path)),
        launch_arguments={"namespace": NS, "device": "cpu", **arguments}.items()))
    result: dict[str, str] = {}

    def probe() -> None:
        try:
            result["state"] = query_state(f"{NS}/mtl_perception", time.monotonic() + timeout)
        finally:
            service.shutdown()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    rc = service.run()
    thread.join(timeout=30)
    return result.get("state", "probe did not finish"), rc


def test_autostart_false_from_launch_leaves_the_node_unconfigured(tiny_artifact):
    state, rc = state_after_launch(120, model=str(tiny_artifact), autostart="false")
    assert state == "unconfigured"
    assert rc == 0


def test_without_the_argument_the_node_autostarts_to_active(tiny_artifact):
    state, rc = state_after_launch(120, model=str(tiny_artifact))
    assert state == "active"
    assert rc == 0


def test_an_argument_left_out_keeps_the_params_file_value(tiny_artifact, tmp_path):
    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    params["/**/mtl_perception"]["ros__parameters"]["autostart"] = False
    params_file = tmp_path / "perception.yaml"
    params_file.write_text(yaml.safe_dump(params))
    state, _ = state_after_launch(120, model=str(tiny_artifact), params_file=str(params_file))
    assert state == "unconfigured"
