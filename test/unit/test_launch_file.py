"""The launch file and its YAML without a ROS install: valid Python, documented, consistent.

The launch file itself runs under launch_pytest (test/launch), which needs a ROS install; these
checks keep it honest everywhere else.
"""

from __future__ import annotations

import ast
import py_compile
import re
from pathlib import Path

import yaml

from mtl_perception.ros.params import PARAMS

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"
PARAMS_FILE = REPO / "config" / "perception.yaml"
EXPECTED_ARGS = {"model", "params_file", "namespace", "image", "camera_info", "image_transport",
                 "device", "use_sim_time"}


def _arguments() -> dict[str, str]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return {elt.elts[0].value: elt.elts[2].value for elt in node.value.elts}
    raise AssertionError("ARGUMENTS not found")


def test_launch_file_compiles_and_documents_its_arguments(tmp_path):
    py_compile.compile(str(LAUNCH_FILE), cfile=str(tmp_path / "x.pyc"), doraise=True)
    args = _arguments()
    assert set(args) == EXPECTED_ARGS
    assert all(len(desc) > 10 for desc in args.values())
    doc = ast.get_docstring(ast.parse(LAUNCH_FILE.read_text()))
    assert "ros2 launch mtl_perception perception.launch.py model:=" in doc


def test_params_file_matches_node_parameters_with_a_comment_per_key():
    data = yaml.safe_load(PARAMS_FILE.read_text())
    (key, body), = data.items()
    assert key == "/**/mtl_perception"
    flat: dict[str, object] = {}

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat[f"{prefix}{k}"] = v

    walk("", body["ros__parameters"])
    specs = {p.name: p for p in PARAMS}
    assert set(flat) == set(specs)
    for name, value in flat.items():
        assert type(value) is type(specs[name].default), name  # 0.0 not 0 for doubles
    for line in PARAMS_FILE.read_text().splitlines():
        if re.match(r"\s+\w+:\s*\S", line) and "ros__parameters" not in line:
            assert "#" in line, f"no unit/range comment: {line}"


def test_colcon_puts_the_executable_where_ros2_run_and_launch_look():
    """ament_python: `ros2 run mtl_perception perception_node` finds lib/<package>/<exe>."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/mtl_perception"
    assert cfg["install"]["install_scripts"] == "$base/lib/mtl_perception"
    setup_py = (REPO / "setup.py").read_text()
    assert "perception_node = mtl_perception.ros.node:main" in setup_py
    assert 'glob("launch/*.launch.py")' in setup_py and 'glob("config/*.yaml")' in setup_py
