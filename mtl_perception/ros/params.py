"""The node's parameters, declared once: names, defaults, allowed values and their documentation.

`PARAMS` is the one list. The node declares it and checks every value with `validate`, at start-up
and for run-time changes alike, so a bad value reads the same wherever it comes from (and nothing
parses rclpy's error text). `config/perception.yaml` and the parameter table in the README are
generated from it (`python -m mtl_perception.ros.params --yaml|--markdown`); test_params.py fails
when either drifts. No rclpy here: the generators run on a workstation without ROS.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

# The node's outputs (topics ~/<name>), each with a `publish.<name>` switch.
OUTPUTS = ("semantic", "semantic_color", "depth", "confidence", "points", "camera_info")


class ParamError(ValueError):
    """A parameter value the node cannot use; the message names the parameter and what it allows."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, what values are allowed, and the words that document it.

    `description` is what `ros2 param describe` prints; `unit` and `note` make the one-line
    unit/range comment of the YAML file and the README table's "allowed" column.
    """

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()  # allowed strings, as documented
    pattern: str = ""  # regex that accepts the strings `choices` stands for (e.g. cuda:N)
    low: float | None = None  # numeric range, inclusive
    high: float | None = None
    dynamic: bool = False  # changeable at run time
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.low is not None and (isinstance(self.default, bool)
                                     or not isinstance(self.default, (int, float))):
            raise TypeError(f"{self.name}: a range needs a numeric default")
        if self.choices and not isinstance(self.default, str):
            raise TypeError(f"{self.name}: choices need a string default")

    @property
    def kind(self) -> type:
        """bool, int, float or str: the type the node works with."""
        return type(self.default)

    def allowed(self) -> str:
        """What the error line says is allowed, e.g. 'an integer in [1, 64]'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None:
            kind = "an integer" if self.kind is int else "a number"
            return f"{kind} in [{self.low}, {self.high}]"
        return {bool: "true or false", str: "a string"}.get(self.kind, f"a {self.kind.__name__}")

    def help_text(self) -> str:
        """The parameter descriptor's description."""
        return f"{self.description} Allowed: {self.allowed()}."

    def values_text(self, sep: str) -> str:
        """Allowed values in a few words: 'raw | compressed', 'Hz, 0.0..1000.0', 'true | false'."""
        if self.choices:
            values = sep.join(self.choices)
        elif self.low is not None:
            values = f"{self.low}..{self.high}"
        elif self.kind is bool:
            values = sep.join(("true", "false"))
        else:
            values = ""
        head = ", ".join(x for x in (self.unit, values) if x)
        return "; ".join(x for x in (head, self.note) if x)


# Every parameter, declared once. Ranges carry the default's type (1 for ints, 0.0 for floats).
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Exported model: a .safetensors artifact or its .onnx export "
              "(`mtl-train export --onnx`).",
              note="path to the exported .safetensors or .onnx model; required (launch arg "
                   "`model`)"),
    ParamSpec("backend", "auto", "What runs the network; auto = onnxruntime for .onnx models, "
              "torch for .safetensors.", ("auto", "torch", "onnxruntime"),
              note="auto = onnxruntime for .onnx, torch for .safetensors; onnxruntime is the "
                   "`onnx` extra"),
    ParamSpec("device", "auto", "Inference device; auto picks cuda when available.",
              ("auto", "cpu", "cuda", "cuda:N"), pattern=r"auto|cpu|cuda(:\d+)?",
              note="auto = cuda when available, else cpu"),
    ParamSpec("precision", "fp32", "Numeric precision; fp16/bf16 need a CUDA device.",
              ("fp32", "fp16", "bf16"), note="fp16/bf16 need a CUDA device"),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0 keeps the backend's default.",
              low=0, high=256, unit="CPU inference threads", note="0 = the backend's default"),
    ParamSpec("warmup_runs", 2, "Forward passes at configure, before the first frame (kernel "
              "selection); a model whose warm-up output is NaN/inf is refused, so 0 also skips "
              "that check.", low=0, high=100, unit="forward passes before the first frame",
              note="non-finite warm-up output refuses the model; 0 skips that check"),
    ParamSpec("max_model_memory_mb", 2048, "Refuse a model whose loading and warm-up grow the "
              "process's resident memory by more than this many MiB (weights, activations, "
              "whatever the graph allocates); 0 = no limit. GPU memory is not counted.",
              low=0, high=1048576, unit="MiB of peak RSS growth while loading + warming up",
              note="0 = no limit; GPU memory is not counted"),
    ParamSpec("autostart", True, "Configure and activate the lifecycle node at start; false "
              "waits in 'unconfigured' for a lifecycle manager.",
              note="true = configure + activate at start (exit 1 if that fails), false = wait "
                   "for `ros2 lifecycle set`"),
    ParamSpec("image_transport", "raw",
              "raw subscribes `image` (Image); compressed subscribes `image/compressed`.",
              ("raw", "compressed"),
              note="raw = sensor_msgs/Image on `image`, compressed = `image/compressed` "
                   "(jpeg/png)"),
    ParamSpec("output_resolution", "input",
              "Outputs at the input image size, or at the (cheaper) network input size.",
              ("input", "network"),
              note="input = outputs at the camera size, network = model input size (cheaper)"),
    ParamSpec("max_rate_hz", 0.0, "Process at most this many frames per second; 0 = every "
              "frame the node can keep up with.", low=0.0, high=1000.0, dynamic=True,
              unit="Hz", note="0.0 = as fast as inference allows"),
    ParamSpec("qos.reliability", "best_effort",
              "Reliability of image input and outputs (sensor-data profile is best_effort).",
              ("best_effort", "reliable"),
              note="image input and outputs; best_effort is the sensor-data profile"),
    ParamSpec("qos.depth", 1, "Queue depth (keep-last) of image input and outputs; 1 = always "
              "the newest frame, more = queued frames are all processed, in order.",
              low=1, high=100, unit="keep-last queue depth",
              note="1 = newest frame only, more = every queued frame is processed"),
    *(ParamSpec(f"publish.{name}", True, f"Publish ~/{name}.", dynamic=True,
                note=f"`~/{name}` {what}")
      for name, what in zip(OUTPUTS, (
          "mono8 class ids, 16UC1 above 255 classes",
          "rgb8, the artifact's palette",
          "32FC1 metres",
          "32FC1 top softmax probability, 0..1",
          "PointCloud2 x,y,z,rgb,label; needs camera_info",
          "intrinsics of the outputs; needs camera_info"), strict=True)),
    ParamSpec("points.stride", 4, "Use every n-th pixel in x and y for ~/points.",
              low=1, high=64, dynamic=True, unit="pixels",
              note="every n-th pixel in x and y becomes a point"),
    ParamSpec("points.max_depth", 10.0, "Leave out points farther than this (metres); 0 = no "
              "limit.", low=0.0, high=1000.0, dynamic=True, unit="metres",
              note="farther points are left out, 0.0 = no limit"),
)
SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def _shown(value: Any) -> str:
    """A value as the user typed it: strings quoted, YAML booleans, numbers short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def validate(spec: ParamSpec, value: Any) -> Any:
    """`value` as the node uses it, or ParamError naming the parameter and what it allows.

    One check for start-up and run-time changes (the node declares with dynamic typing, so rclpy
    lets any type through to here). An integer for a float parameter (YAML `5` for `5.0`) is taken
    as that float rather than refusing to start.
    """
    ok = False
    if spec.kind is bool:
        ok = isinstance(value, bool)
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif spec.kind is str:
        ok = isinstance(value, str)
    if ok and spec.choices:
        ok = re.fullmatch(spec.pattern or "|".join(map(re.escape, spec.choices)), value) is not None
    if ok and spec.low is not None:
        ok = spec.low <= value <= spec.high  # NaN fails here too
    if not ok:
        raise ParamError(f"parameter '{spec.name}' must be {spec.allowed()} (got {_shown(value)})")
    return value


# ---- generated documents --------------------------------------------------------------------

YAML_HEADER = """\
# perception_node parameters (node name mtl_perception). Every key is optional: defaults live in
# mtl_perception/ros/params.py (PARAMS), which generates this file (python -m
# mtl_perception.ros.params --yaml); `ros2 param describe /mtl_perception <name>` explains each.
# Keyed by "/**/mtl_perception" so the file applies in any namespace.
# perception.launch.py has one argument per start-up parameter (model for model_path, qos_depth
# for qos.depth, ...): one given there overrides the value here, one left out keeps it.
"""
YAML_GROUP_COMMENTS = {"publish": "output switches, one per topic"}
_COMMENT_COLUMN = 34
_PLAIN = re.compile(r"[A-Za-z][\w.:/-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_line(indent: int, key: str, value: str, comment: str) -> str:
    text = f"{' ' * indent}{key}:{' ' + value if value else ''}"
    return f"{text:<{_COMMENT_COLUMN - 1}} # {comment}" if comment else text


def yaml_text(specs: tuple[ParamSpec, ...] = PARAMS) -> str:
    """config/perception.yaml: every parameter at its default, with a unit/range comment each."""
    lines = [YAML_HEADER.rstrip("\n"), "/**/mtl_perception:", "  ros__parameters:"]
    group = None
    for spec in specs:
        prefix, _, key = spec.name.rpartition(".")
        if "." in prefix:
            raise ValueError(f"{spec.name}: one level of nesting at most")
        if prefix and prefix != group:
            lines.append(_yaml_line(4, prefix, "", YAML_GROUP_COMMENTS.get(prefix, "")))
        group = prefix or None
        comment = spec.values_text(" | ") + (" (run-time changeable)" if spec.dynamic else "")
        lines.append(_yaml_line(6 if prefix else 4, key, _yaml_scalar(spec.default), comment))
    return "\n".join(lines) + "\n"


MARKDOWN_HEADER = "| parameter | default | allowed | run time |"


def markdown_table(specs: tuple[ParamSpec, ...] = PARAMS) -> str:
    """The README's parameter table: one row per parameter."""
    rows = [MARKDOWN_HEADER, "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {_yaml_scalar(s.default)} | {s.values_text(', ')} | "
             f"{'yes' if s.dynamic else 'no'} |" for s in specs]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the generated YAML or README table (to regenerate them after editing PARAMS)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--yaml"]:
        sys.stdout.write(yaml_text())
    elif args == ["--markdown"]:
        sys.stdout.write(markdown_table())
    else:
        print("usage: python -m mtl_perception.ros.params --yaml|--markdown", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
