"""Test-wide set-up: DDS stays on loopback, each run gets its own domain id and log folder.

This runs before any test module imports rclpy, so every participant the suite creates (in this
process or in node subprocesses, which inherit the environment) uses the repo's Fast DDS profile.
"""

from __future__ import annotations

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

os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# A fresh domain per pytest run keeps concurrent runs apart; `make` already picks one, and a
# developer running several suites at once can pin distinct ids by exporting ROS_DOMAIN_ID.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ.setdefault("PYTHONUNBUFFERED", "1")


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
