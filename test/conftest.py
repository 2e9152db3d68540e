"""Test-wide set-up: DDS stays on loopback, each run gets its own domain id and log folder.

This runs before any test module imports rclpy, so every participant the suite creates (in this
process or in node subprocesses, which inherit the environment) uses the repo's Fast DDS profile.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
from pathlib import Path

import pytest
import torch

from mtl_perception.core.artifact import ArtifactMeta, write_artifact
from mtl_perception.core.models.registry import ModelSpec, build_model
from mtl_perception.core.preprocess import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_loopback.xml"


def fast_dds_2() -> bool:
    """Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, never FASTDDS_...

    Without it Jazzy ignores the profile (default 512 KB SHM segment, so 640x480 frames go as
    64 KB UDP fragments that a best-effort reader mostly loses); 3.x (Kilted) reads only
    FASTDDS_DEFAULT_PROFILES_FILE and warns about the old name in every process, so only 2.x
    gets it. ROS_DISTRO is set by a sourced install; the pip wheels say it by package name.
    """
    if os.environ.get("ROS_DISTRO") in ("humble", "iron", "jazzy"):
        return True
    try:
        importlib.metadata.version("ros-fastrtps")  # Fast DDS 2.x wheel; 3.x is ros-fastdds
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
if fast_dds_2():
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# A fresh domain per pytest run keeps concurrent runs apart; `make` already picks one, and a
# developer running several suites at once can pin distinct ids by exporting ROS_DOMAIN_ID.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ.setdefault("PYTHONUNBUFFERED", "1")


LAUNCH_TESTS = REPO / "test" / "launch"


def install_space_problem() -> str | None:
    """Why the installed package cannot be launched here (test/launch), or None when it can.

    test/launch runs the installed launch files; without a sourced install space launch_ros
    cannot find `perception_node`, ReadyToTest never fires and the test would wait forever.
    """
    if not os.environ.get("AMENT_PREFIX_PATH"):
        return ("no ROS install space sourced (AMENT_PREFIX_PATH is not set): `colcon build`, "
                "then `source install/setup.bash`")
    for prefix in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep):
        exe = Path(prefix) / "lib" / "mtl_perception" / "perception_node"
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
                / "mtl_perception").is_file():
            return None if exe.is_file() else f"{exe} does not exist (colcon build puts it there)"
    return ("mtl_perception is not in the sourced install space (AMENT_PREFIX_PATH="
            f"{os.environ['AMENT_PREFIX_PATH']}): `colcon build` it and source install/setup.bash")


def pytest_configure(config: pytest.Config) -> None:
    """Switch off the launch_testing plugin that a sourced ROS install brings (test/launch uses
    launch_pytest, a separate plugin): its collection hook imports every test module itself, so
    one module-level skip (an optional extra not installed) skipped all of test/unit."""
    plugin = config.pluginmanager.get_plugin("launch_testing")
    if plugin is not None:
        config.pluginmanager.unregister(plugin)


# The robot tier: the node, its launch files and the model files it loads (test modules, relative
# to test/). Every other module is the training suite (marker `training`: training, datasets,
# studies, docs and benchmark checks), which a robot does not need to run.
ROBOT_TIER = frozenset({
    "launch/test_launch_arguments.py", "launch/test_launch_exit.py",
    "launch/test_perception_launch.py",
    "robustness/test_hostile_artifacts.py", "robustness/test_hostile_frames.py",
    "robustness/test_hostile_onnx.py",
    "ros/test_lifecycle.py", "ros/test_node.py", "ros/test_pipeline.py", "ros/test_replay.py",
    "unit/test_backends.py", "unit/test_camera.py", "unit/test_conversions.py",
    "unit/test_export.py", "unit/test_inference.py", "unit/test_launch_file.py",
    "unit/test_params.py", "unit/test_pointcloud.py", "unit/test_predictor_outputs.py",
    "unit/test_preprocess.py", "unit/test_ros_library_parity.py",
})
TIER_ENV = "MTL_TEST_TIER"
TIERS = ("robot", "all")


def selected_tier() -> str:
    """Which tests run: `robot` (ROBOT_TIER) or `all`.

    MTL_TEST_TIER when set; otherwise `robot` under `colcon test` (colcon sets COLCON=1 in its
    own environment, which the pytest it starts inherits) and `all` for a plain pytest, so
    `make test`, CI and a developer's `pytest test/unit/test_x.py` run what they name.
    """
    tier = os.environ.get(TIER_ENV) or ("robot" if "COLCON" in os.environ else "all")
    if tier not in TIERS:
        raise pytest.UsageError(f"{TIER_ENV}={tier!r}: must be one of {', '.join(TIERS)}")
    return tier


def pytest_report_header(config: pytest.Config) -> str:
    tier = selected_tier()
    if tier == "robot":
        return (f"test tier: robot (node, launch, model files; the training suite runs with "
                f"{TIER_ENV}=all)")
    return "test tier: all"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the training suite and leave it out of the robot tier; skip test/launch with the
    reason, before any launch starts, when it cannot run."""
    tests = REPO / "test"
    robot, training = [], []
    for item in items:
        module = Path(item.path).resolve().relative_to(tests).as_posix()
        if module in ROBOT_TIER:
            robot.append(item)
        else:
            item.add_marker(pytest.mark.training)
            training.append(item)
    if training and selected_tier() == "robot":
        config.hook.pytest_deselected(items=training)
        items[:] = robot
    problem = install_space_problem()
    if problem is None:
        return
    for item in items:
        if LAUNCH_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(scope="session", autouse=True)
def ros_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ros_log")
    os.environ["ROS_LOG_DIR"] = str(path)
    return path


def make_tiny_artifact(path: Path, height: int = 32, width: int = 48, num_classes: int = 4,
                       seed: int = 0) -> Path:
    """A real (randomly initialised) student exported through the real artifact writer."""
    torch.manual_seed(seed)
    spec = ModelSpec(encoder="resnet18", num_classes=num_classes, decoder_channels=8,
                     decoder_convs=1, max_depth=10.0)
    model = build_model(spec).eval()
    palette = [[(60 * i) % 256, (120 * i + 40) % 256, (200 - 30 * i) % 256]
               for i in range(num_classes)]
    meta = ArtifactMeta(spec, [f"class{i}" for i in range(num_classes)], palette,
                        PreprocessSpec(height, width), 10.0, training={"dataset": "test"})
    return write_artifact(model, meta, path)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny.safetensors")


SAMPLE_DATA_ENV = "MTL_SAMPLE_DATA"


def sample_data_candidates(name: str) -> list[Path]:
    """Where a sample recording `name` may be: $MTL_SAMPLE_DATA/<name>, then ../shared/data."""
    places = [REPO.parent / "shared" / "data" / name]
    if os.environ.get(SAMPLE_DATA_ENV):
        places.insert(0, Path(os.environ[SAMPLE_DATA_ENV]) / name)
    return places


def find_sample_data(name: str) -> Path:
    """The first folder that holds sample data `name`, else a skip that says where it looked."""
    places = sample_data_candidates(name)
    for place in places:
        if place.is_dir():
            return place
    env = os.environ.get(SAMPLE_DATA_ENV)
    pytest.skip(f"sample data '{name}' not found in {', '.join(map(str, places))} "
                f"({SAMPLE_DATA_ENV} {'=' + env if env else 'is unset'}; set it to the folder "
                f"that holds {name}/)")


@pytest.fixture(scope="session")
def realsense_data() -> Path:
    """The RealSense sample recordings (ROS 1 .bag, ROS 2 sqlite3 and mcap)."""
    return find_sample_data("realsense")
