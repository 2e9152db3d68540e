"""The launch file and its YAML without a ROS install: valid Python, documented, consistent.

The launch file itself runs under launch_pytest (test/launch), which needs a ROS install; these
checks keep it honest everywhere else.
"""

from __future__ import annotations

import ast
import py_compile
import re
from pathlib import Path

import pytest
import yaml

from mtl_perception.ros.launch_args import LaunchArgument, node_arguments, node_overrides
from mtl_perception.ros.params import PARAMS, SPECS, validate

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"
REPLAY_LAUNCH_FILE = REPO / "launch" / "replay_eval.launch.py"
PARAMS_FILE = REPO / "config" / "perception.yaml"
# the launch files' own arguments, besides one per start-up parameter of the node
EXPECTED_ARGS = {"params_file", "namespace", "image", "camera_info", "use_sim_time"}
EXPECTED_REPLAY_ARGS = {"bag", "report", "rate", "result_bag", "config", "params_file"}
# what the replay sets itself: the node must serve at once, what it publishes, reliably
REPLAY_FIXED = {"autostart", "image_transport", "qos.reliability"}
START_UP = {p.name for p in PARAMS if not p.dynamic}


def _assignment(path: Path, name: str) -> ast.expr:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return node.value
    raise AssertionError(f"{name} not found in {path.name}")


def _arguments(path: Path = LAUNCH_FILE) -> dict[str, str]:
    # a description may be two adjacent string literals: ast joins them into one constant
    return {elt.elts[0].value: elt.elts[2].value for elt in _assignment(path, "ARGUMENTS").elts}


def _node_arguments(path: Path) -> tuple[LaunchArgument, ...]:
    """NODE_ARGUMENTS as the launch file builds it: its `node_arguments(fixed=...)` call, run here.

    The launch file must also declare each of them and hand them to the node (the text checks).
    """
    call = _assignment(path, "NODE_ARGUMENTS")
    assert isinstance(call, ast.Call) and getattr(call.func, "id", "") == "node_arguments", (
        f"{path.name}: NODE_ARGUMENTS is not node_arguments(...) of mtl_perception.ros.launch_args")
    fixed: object = ()
    for kw in call.keywords:
        assert kw.arg == "fixed"
        fixed = (ast.literal_eval(_assignment(path, kw.value.id))
                 if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value))
    text = path.read_text()
    assert "DeclareLaunchArgument(a.name, description=a.description)" in text
    assert 'DeclareLaunchArgument(a.name, default_value="", description=a.description)' in text
    assert "for a in NODE_ARGUMENTS]" in text
    assert "node_overrides(given, NODE_ARGUMENTS)" in text
    return node_arguments(fixed=fixed)


def _on_exit_handlers(path: Path) -> list[str]:
    """Names passed as on_exit= to any call in the file (Node, ExecuteProcess)."""
    return [kw.value.id for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) for kw in node.keywords
            if kw.arg == "on_exit" and isinstance(kw.value, ast.Name)]


@pytest.mark.parametrize(("path", "expected", "usage"), [
    (LAUNCH_FILE, EXPECTED_ARGS, "ros2 launch mtl_perception perception.launch.py model:="),
    (REPLAY_LAUNCH_FILE, EXPECTED_REPLAY_ARGS,
     "ros2 launch mtl_perception replay_eval.launch.py bag:="),
])
def test_launch_files_compile_and_document_their_arguments(tmp_path, path, expected, usage):
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    args = _arguments(path)
    assert set(args) == expected
    assert all(len(desc) > 10 for desc in args.values())
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert usage in doc


@pytest.mark.parametrize(("path", "fixed"), [(LAUNCH_FILE, set()),
                                           (REPLAY_LAUNCH_FILE, REPLAY_FIXED)])
def test_every_start_up_parameter_of_the_node_is_a_launch_argument(path, fixed):
    """A parameter the node reads only at start must be settable from `ros2 launch`.

    `autostart:=false` was silently ignored (no such argument); run-time parameters stay in
    params_file and `ros2 param set`.
    """
    args = _node_arguments(path)
    assert {a.param for a in args} == START_UP - fixed, path.name
    names = {a.name for a in args}
    assert len(names) == len(args) and not names & set(_arguments(path)), path.name
    if not fixed:
        assert {"model", "autostart", "backend", "device", "qos_depth"} <= names
    else:  # the replay's own values must be ones the node takes
        for name, value in ast.literal_eval(_assignment(path, "FIXED")).items():
            assert validate(SPECS[name], value) == value


def test_launch_argument_descriptions_say_what_the_node_takes():
    args = {a.name: a for a in node_arguments()}
    assert args["model"].required and ".safetensors" in args["model"].description
    assert ".onnx" in args["model"].description
    for a in args.values():
        spec = SPECS[a.param]
        assert all(choice in a.description for choice in spec.choices), a.name
        assert a.required or "Unset: params_file's value" in a.description


def test_only_given_launch_arguments_reach_the_node_typed_as_its_parameters():
    """Left out (empty) = not passed, so params_file's value holds; typed as -p reads them."""
    args = node_arguments()
    given = {"model": "m.onnx", "autostart": "false", "qos_depth": "3", "device": "1",
             "num_threads": "four", "backend": ""}
    assert node_overrides(given, args) == {"model_path": "m.onnx", "autostart": False,
                                           "qos.depth": 3, "device": "1",
                                           "num_threads": "four"}
    assert node_overrides({"model": "m.safetensors"}, args) == {"model_path": "m.safetensors"}


def test_every_process_in_the_launch_files_is_required():
    """The node (and the replay) end the launch when they exit, non-zero when they failed."""
    assert _on_exit_handlers(LAUNCH_FILE) == ["required_process_exited"]
    assert _on_exit_handlers(REPLAY_LAUNCH_FILE) == ["required_process_exited"] * 2
    replay = REPLAY_LAUNCH_FILE.read_text()
    # colcon installs console scripts in lib/mtl_perception, not on PATH
    assert 'ExecutableInPackage(executable="mtl-replay", package="mtl_perception")' in replay


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
