"""The node's launch arguments, derived from params.PARAMS: one per start-up parameter.

A parameter that cannot change once the node runs (not `dynamic`) is something a robot user must
be able to set from `ros2 launch ... NAME:=VALUE`; the run-time ones stay in params_file and
`ros2 param set`. Deriving the list from PARAMS keeps a new start-up parameter from being
silently unreachable from launch (as `autostart` was: `autostart:=false` was ignored).

An argument left out is not passed to the node, so the params_file value (or the node's default)
holds: a launch default would otherwise override what the user wrote in their params_file.
Values are typed here (YAML, as `-p NAME:=VALUE` reads them) and checked by the node itself, so a
bad value fails start-up with the node's one line naming the parameter.

Pure Python (no `launch` import): the launch files use it, and unit tests check it without ROS.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mtl_perception.ros.params import PARAMS, SPECS, ParamSpec

# launch argument names that differ from the parameter's (dots are awkward on a command line)
RENAMED = {"model_path": "model"}


@dataclass(frozen=True)
class LaunchArgument:
    """One `ros2 launch` argument that sets one node parameter."""

    name: str  # typed after the launch file: model:=..., qos_depth:=...
    param: str  # the node parameter it sets: model_path, qos.depth
    description: str  # what `ros2 launch ... --show-args` prints
    required: bool = False  # no default: the launch refuses to start without it


def argument_name(param: str) -> str:
    """`model_path` -> `model`, `qos.depth` -> `qos_depth`, others unchanged."""
    return RENAMED.get(param, param.replace(".", "_"))


def _description(spec: ParamSpec, required: bool) -> str:
    text = spec.description.rstrip(".") + "."
    if spec.choices:
        text += " One of " + ", ".join(spec.choices) + "."
    elif spec.low is not None:
        text += f" Range {spec.low}..{spec.high}."
    elif spec.kind is bool:
        text += " true or false."
    if required:
        return text + " Required."
    default = spec.default if not isinstance(spec.default, bool) else str(spec.default).lower()
    return text + f" Unset: params_file's value (node default {default})."


def node_arguments(fixed: Collection[str] = ()) -> tuple[LaunchArgument, ...]:
    """Every start-up parameter as a launch argument, except those the launch file `fixed`."""
    unknown = set(fixed) - set(SPECS)
    if unknown:
        raise ValueError(f"fixed parameters that the node does not have: {sorted(unknown)}")
    return tuple(LaunchArgument(argument_name(s.name), s.name,
                                _description(s, s.name == "model_path"), s.name == "model_path")
                 for s in PARAMS if not s.dynamic and s.name not in fixed)


def typed_value(spec: ParamSpec, text: str) -> Any:
    """A launch argument's text as the node parameter's value.

    Strings stay as typed (`device:=1` is the string "1"); other kinds are read as YAML, like
    `-p NAME:=VALUE`. Text that does not read as a bool or a number is passed on as a string,
    which the node refuses in its own one line (rather than launch_ros failing with a traceback).
    """
    if spec.kind is str:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def node_overrides(values: Mapping[str, str],
                   arguments: Collection[LaunchArgument]) -> dict[str, Any]:
    """{parameter: value} for each argument given a non-empty value; the others are left out."""
    return {a.param: typed_value(SPECS[a.param], values[a.name])
            for a in arguments if values.get(a.name, "") != ""}
