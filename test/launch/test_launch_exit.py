"""The installed launch files end as a ROS user expects: exit status and end of the replay.

Each case runs the launch file from the install space (share/mtl_perception/launch, what `ros2
launch mtl_perception ...` runs) in a real LaunchService, the object `ros2 launch` returns the
exit status of, with real node and replay processes. A timer shuts a launch down that has not
ended by itself, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

launch = pytest.importorskip("launch", reason="launch not installed (needs a ROS 2 install)")
pytest.importorskip("launch_ros", reason="launch_ros not installed (needs a ROS 2 install)")
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from mtl_training.data.bags.synth import SynthBagSpec, write_synthetic_bag  # noqa: E402


def run_launch(name: str, timeout: float, **arguments: str) -> tuple[int, bool]:
    """(return code of LaunchService.run, whether the timeout had to stop the launch)."""
    path = Path(get_package_share_directory("mtl_perception")) / "launch" / name
    service = launch.LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(path)), launch_arguments=arguments.items()))
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        service.shutdown()

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        rc = service.run()
    finally:
        timer.cancel()
    return rc, timed_out.is_set()


def test_node_that_fails_at_start_makes_the_launch_exit_non_zero(tmp_path):
    rc, timed_out = run_launch("perception.launch.py", 120,
                                  model=str(tmp_path / "missing.safetensors"), device="cpu")
    assert not timed_out, "the launch did not end when its node failed"
    assert rc != 0


def test_replay_launch_runs_mtl_replay_from_the_install_and_ends(tmp_path, tiny_artifact):
    bag = tmp_path / "run"
    write_synthetic_bag(bag, SynthBagSpec(frames=4))
    report = tmp_path / "report"
    rc, timed_out = run_launch("replay_eval.launch.py", 240, bag=str(bag),
                                  model=str(tiny_artifact), report=str(report), rate="max",
                                  device="cpu")
    assert not timed_out, "the replay launch did not end when the replay ended"
    assert rc == 0
    r = json.loads((report / "report.json").read_text())
    assert r["frames"]["sent"] == 4 and r["frames"]["received"] >= 1


def test_replay_launch_with_a_bad_bag_exits_non_zero(tmp_path, tiny_artifact):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    rc, timed_out = run_launch("replay_eval.launch.py", 120, bag=str(junk),
                                  model=str(tiny_artifact), report=str(tmp_path / "r"),
                                  device="cpu")
    assert not timed_out and rc != 0
