"""The node's parameter table agrees with config/perception.yaml and docs/node.md, and validates.

PARAMS (mtl_perception/ros/params.py) is the one place parameters are declared; the YAML file
and the docs/node.md table are generated from it. These tests fail when either is edited by hand
(or PARAMS changes without regenerating them): `python -m mtl_perception.ros.params --yaml >
config/perception.yaml`, and `--markdown` for the table in docs/node.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from mtl_perception.ros.params import (
    MARKDOWN_HEADER,
    PARAMS,
    SPECS,
    ParamError,
    main,
    markdown_table,
    validate,
    yaml_text,
)

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "perception.yaml"
NODE_DOC = REPO / "docs" / "node.md"  # the node's reference page carries the table


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _params_of(text: str) -> dict[str, object]:
    data = yaml.safe_load(text)
    (key, body), = data.items()
    assert key == "/**/mtl_perception"
    return _flat(body["ros__parameters"])


def test_params_file_has_every_key_at_its_default():
    values = _params_of(PARAMS_FILE.read_text())
    assert list(values) == [p.name for p in PARAMS]
    for spec in PARAMS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), spec.name  # 0.0 not 0 for doubles


def test_params_file_is_the_generated_one():
    assert PARAMS_FILE.read_text() == yaml_text(), (
        "config/perception.yaml differs from PARAMS: python -m mtl_perception.ros.params --yaml "
        "> config/perception.yaml")


def test_generated_yaml_round_trips():
    assert _params_of(yaml_text()) == {p.name: p.default for p in PARAMS}


def _node_doc_table() -> list[str]:
    lines = NODE_DOC.read_text().splitlines()
    start = lines.index(MARKDOWN_HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_node_doc_table_is_the_generated_one():
    assert _node_doc_table() == markdown_table().splitlines(), (
        "docs/node.md parameter table differs from PARAMS: python -m mtl_perception.ros.params "
        "--markdown")


def test_node_doc_table_names_every_parameter_default_and_run_time_flag():
    rows = [[c.strip() for c in row.strip("|").split("|")] for row in _node_doc_table()[2:]]
    assert [r[0].strip("`") for r in rows] == [p.name for p in PARAMS]
    for (_, default, _, run_time), spec in zip(rows, PARAMS, strict=True):
        assert yaml.safe_load(default) == spec.default, spec.name
        assert run_time == ("yes" if spec.dynamic else "no"), spec.name


def test_cli_prints_both(capsys):
    assert main(["--yaml"]) == 0
    assert capsys.readouterr().out == yaml_text()
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()
    assert main([]) == 2


@pytest.mark.parametrize("name,value,expected", [
    ("max_rate_hz", 5, 5.0),  # YAML `5` for a double
    ("max_rate_hz", 2.5, 2.5),
    ("points.stride", 64, 64),
    ("device", "cuda:1", "cuda:1"),
    ("device", "auto", "auto"),
    ("publish.points", False, False),
    ("model_path", "/m.safetensors", "/m.safetensors"),
])
def test_validate_accepts(name, value, expected):
    got = validate(SPECS[name], value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name,value,line", [
    ("qos.reliability", "sometimes",
     "parameter 'qos.reliability' must be one of best_effort, reliable (got 'sometimes')"),
    ("points.stride", 0, "parameter 'points.stride' must be an integer in [1, 64] (got 0)"),
    ("points.stride", 2.0, "parameter 'points.stride' must be an integer in [1, 64] (got 2)"),
    ("points.stride", True, "parameter 'points.stride' must be an integer in [1, 64] "
                            "(got true)"),
    ("max_rate_hz", -1.0, "parameter 'max_rate_hz' must be a number in [0.0, 1000.0] (got -1)"),
    ("max_rate_hz", math.nan, "parameter 'max_rate_hz' must be a number in [0.0, 1000.0] "
                              "(got nan)"),
    ("max_rate_hz", "fast", "parameter 'max_rate_hz' must be a number in [0.0, 1000.0] "
                            "(got 'fast')"),
    ("device", "tpu", "parameter 'device' must be one of auto, cpu, cuda, cuda:N (got 'tpu')"),
    ("device", "cuda:", "parameter 'device' must be one of auto, cpu, cuda, cuda:N "
                        "(got 'cuda:')"),
    ("publish.depth", 1, "parameter 'publish.depth' must be true or false (got 1)"),
    ("model_path", 3, "parameter 'model_path' must be a string (got 3)"),
])
def test_validate_refuses_with_one_line(name, value, line):
    with pytest.raises(ParamError) as exc:
        validate(SPECS[name], value)
    assert str(exc.value) == line
