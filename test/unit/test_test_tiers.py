"""The robot test tier: what `colcon test` runs on a robot by default, and what it must not need.

test/conftest.py's ROBOT_TIER names the modules (node, launch files, model files); under colcon
(COLCON=1) or with MTL_TEST_TIER=robot only they run, MTL_TEST_TIER=all adds the training suite.
A renamed module must not silently leave the robot tier, and a robot-tier module must not import
what only the `train` extra installs (a robot's rosdep install does not have it).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROBOT_TIER, TIER_ENV

TESTS = Path(__file__).resolve().parents[1]
TRAIN_EXTRA = {"tensorboard", "h5py", "scipy"}  # setup.py extras_require["train"]


def test_every_robot_tier_module_exists():
    assert sorted(m for m in ROBOT_TIER if not (TESTS / m).is_file()) == []


@pytest.mark.parametrize("module", sorted(ROBOT_TIER))
def test_robot_tier_module_needs_no_training_extra(module):
    tree = ast.parse((TESTS / module).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported & TRAIN_EXTRA == set()


def _collected(env: dict[str, str], *paths: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                          "no:cacheprovider", *paths], cwd=TESTS.parent, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_colcon_selects_the_robot_tier_and_the_variable_selects_all():
    """As `colcon test` runs pytest (COLCON=1, no paths: testpaths), and with MTL_TEST_TIER=all."""
    base = {k: v for k, v in os.environ.items() if k not in (TIER_ENV, "COLCON")}
    two = ("test/unit/test_params.py", "test/unit/test_stats.py")
    robot = _collected({**base, "COLCON": "1"}, *two)
    assert "test_params.py::" in robot and "test_stats.py::" not in robot
    assert "deselected" in robot
    every = _collected({**base, "COLCON": "1", TIER_ENV: "all"}, *two)
    assert "test_params.py::" in every and "test_stats.py::" in every
    plain = _collected(base, *two)  # make test, CI, a developer's pytest: what they name
    assert "test_stats.py::" in plain
