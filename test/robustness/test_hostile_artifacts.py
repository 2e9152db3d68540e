"""Hostile and damaged model files: each fails at start in one line naming the file and the field.

The corpus is generated here from one good artifact: every family the issue tried (metadata
that is not an object, nested past the JSON parser's recursion limit, missing or mistyped fields,
sizes that would allocate without bound, bad palettes, tensors of the wrong dtype, shape or
value, damaged files). All of it is loaded in one fresh interpreter that reports, per file, the
error line and the time, and the process's peak memory, so the test also shows that no file got
as far as allocating its claims.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_artifact
from safetensors.torch import load_file, save_file

from mtl_perception.core.artifact import METADATA_KEY, read_metadata
from mtl_training.apps.train_cli import main

MAX_SECONDS = 1.0
MAX_GROWTH_MB = 100  # peak memory beyond what loading the good model took, over every file


def _variants(good: Path) -> dict[str, tuple[dict | str | None, dict | None, str]]:
    """name -> (metadata (dict, raw JSON text, or None = keep), tensors (None = keep), field)."""
    meta = read_metadata(good).to_json()
    tensors = load_file(str(good))

    def m(section: str, key: str | None, value) -> dict:
        out = json.loads(json.dumps(meta))
        if key is None:
            out[section] = value
        else:
            out[section][key] = value
        return out

    def drop(key: str) -> dict:
        out = json.loads(json.dumps(meta))
        del out[key]
        return out

    def t(fn) -> dict:
        out = {k: v.clone() for k, v in tensors.items()}
        fn(out)
        return out

    first = "decoders.seg.head.weight"
    v: dict[str, tuple] = {
        "nested_json": ("[" * 100_000 + "]" * 100_000, None, "JSON"),
        "metadata_list": ("[1, 2, 3]", None, "JSON object"),
        "metadata_string": ('"hello"', None, "JSON object"),
        "not_json": ("{oops", None, "not valid JSON"),
        "version_99": (m("format_version", None, 99), None, "format_version"),
        "version_string": (m("format_version", None, "2"), None, "format_version"),
        "version_missing": (drop("format_version"), None, "format_version"),
        **{f"missing_{k}": (drop(k), None, k)
           for k in ("architecture", "classes", "palette", "input", "depth")},
        "arch_list": (m("architecture", None, [1]), None, "architecture"),
        "decoder_channels_1e5": (m("architecture", "decoder_channels", 100000), None,
                                 "decoder_channels"),
        "decoder_channels_0": (m("architecture", "decoder_channels", 0), None,
                               "decoder_channels"),
        "decoder_channels_str": (m("architecture", "decoder_channels", "64"), None,
                                 "decoder_channels"),
        "decoder_channels_float": (m("architecture", "decoder_channels", 1.5), None,
                                   "decoder_channels"),
        "decoder_convs_1e4": (m("architecture", "decoder_convs", 10000), None, "decoder_convs"),
        "num_classes_0": (m("architecture", "num_classes", 0), None, "num_classes"),
        "encoder_unknown": (m("architecture", "encoder", "resnet9000"), None, "encoder"),
        "arch_teacher": (m("architecture", "arch", "teacher"), None, "arch"),
        "arch_unknown": (m("architecture", "arch", "vit"), None, "arch"),
        "tasks_unknown": (m("architecture", "tasks", ["seg", "normals"]), None, "tasks"),
        "tasks_string": (m("architecture", "tasks", "seg"), None, "tasks"),
        "max_depth_negative": (m("architecture", "max_depth", -10), None, "max_depth"),
        "max_depth_nan": (m("architecture", "max_depth", math.nan), None, "max_depth"),
        "arch_unknown_field": (m("architecture", "secret", 1), None, "secret"),
        "input_0": (m("input", "height", 0), None, "input.height"),
        "input_negative": (m("input", "height", -96), None, "input.height"),
        "input_1e5": (m("input", "width", 100000), None, "input.width"),
        "input_list": (m("input", "height", [32]), None, "input.height"),
        "input_abc": (m("input", "height", "abc"), None, "input.height"),
        "input_20000": (m("input", None, {**meta["input"], "height": 4000, "width": 4000}),
                        None, "pixels"),
        "input_not_object": (m("input", None, 5), None, "input"),
        "std_0": (m("input", "std", [0.2, 0.0, 0.2]), None, "input.std"),
        "std_short": (m("input", "std", [0.2, 0.2]), None, "input.std"),
        "mean_nan": (m("input", "mean", [0.5, math.nan, 0.5]), None, "input.mean"),
        "channel_order": (m("input", "channel_order", "xyz"), None, "channel_order"),
        "palette_300": (m("palette", None, [[300, 0, 0], *meta["palette"][1:]]), None,
                        "palette[0]"),
        "palette_ragged": (m("palette", None, [[1, 2], *meta["palette"][1:]]), None, "palette"),
        "palette_strings": (m("palette", None, [["a", "b", "c"]] * 4), None, "palette"),
        "palette_short": (m("palette", None, meta["palette"][:1]), None, "palette"),
        "classes_not_list": (m("classes", None, "abc"), None, "classes"),
        "classes_numbers": (m("classes", None, [1, 2, 3, 4]), None, "classes"),
        "classes_count": (m("classes", None, ["a"]), None, "classes"),
        "class_name_100k": (m("classes", None, ["x" * 100_000, *meta["classes"][1:]]), None,
                            "classes[0]"),
        "metadata_2mb": (m("training", None, {"notes": "x" * (2 << 20)}), None,
                         "metadata"),
        "depth_negative": (m("depth", "max", -10), None, "depth"),
        "depth_unit": (m("depth", "unit", "mm"), None, "unit"),
        "depth_min_over_max": (m("depth", "min", 50.0), None, "depth range"),
        "training_list": (m("training", None, [1]), None, "training"),
        "weights_int64": (None, t(lambda d: d.__setitem__(first, d[first].long())), first),
        "weights_uint8": (None, t(lambda d: d.__setitem__(first, d[first].to(torch.uint8))),
                          first),
        "weights_bool": (None, t(lambda d: d.__setitem__(first, d[first] > 0)), first),
        "weights_nan": (None, t(lambda d: d.__setitem__(first, torch.full_like(d[first],
                                                                                math.nan))),
                        first),
        "weights_inf": (None, t(lambda d: d[first].view(-1).__setitem__(0, math.inf)), first),
        "weights_missing": (None, t(lambda d: d.pop(first)), first),
        "weights_extra": (None, t(lambda d: d.__setitem__("extra.weight", torch.zeros(3))),
                          "extra.weight"),
        "weights_shape": (None, t(lambda d: d.__setitem__(first, torch.zeros(2, 2))), first),
    }
    return v


def _write(path: Path, good: Path, meta, tensors) -> None:
    tensors = tensors if tensors is not None else load_file(str(good))
    if meta is None:
        meta = read_metadata(good).to_json()
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={METADATA_KEY: text})


_LOADER = r"""
import json, resource, sys, time
from mtl_perception.core.artifact import ArtifactError, load_artifact
out = {}
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for path in sys.argv[1:]:
    if path == sys.argv[2]:  # the good file (first) has loaded: one-time costs are paid
        start = rss()
    t0 = time.perf_counter()
    try:
        load_artifact(path)
        out[path] = {"ok": True, "s": time.perf_counter() - t0}
    except ArtifactError as exc:
        out[path] = {"ok": False, "msg": str(exc), "s": time.perf_counter() - t0}
out["growth_mb"] = rss() - start
print(json.dumps(out))
"""


def test_every_hostile_artifact_fails_in_one_line_fast_and_small(tmp_path):
    good = make_tiny_artifact(tmp_path / "good.safetensors")
    files: dict[str, tuple[Path, str]] = {}
    for name, (meta, tensors, field) in _variants(good).items():
        path = tmp_path / f"{name}.safetensors"
        _write(path, good, meta, tensors)
        files[name] = (path, field)
    raw = good.read_bytes()
    for name, data in {"truncated": raw[: len(raw) // 2], "zero_bytes": b"",
                       "garbage": np.random.default_rng(0).bytes(4096),
                       "header_only": raw[:8]}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        files[name] = (path, "")
    pickled = tmp_path / "pickle.safetensors"
    torch.save({"x": torch.zeros(1)}, pickled)
    files["pickle"] = (pickled, "")

    # the good file first: it pays the one-time costs (first model build) a node pays anyway
    result = subprocess.run([sys.executable, "-c", _LOADER, str(good),
                             *[str(p) for p, _ in files.values()]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report[str(good)]["ok"], "the unmodified artifact must load"
    problems = []
    for name, (path, field) in files.items():
        r = report[str(path)]
        if r["ok"]:
            problems.append(f"{name}: loaded")
            continue
        msg = r["msg"]
        if "\n" in msg or str(path) not in msg or field not in msg:
            problems.append(f"{name}: {msg!r} (want one line with the file and {field!r})")
        if r["s"] > MAX_SECONDS:
            problems.append(f"{name}: took {r['s']:.2f} s")
    assert not problems, "\n".join(problems)
    assert report["growth_mb"] < MAX_GROWTH_MB, report["growth_mb"]
    print(f"{len(files)} hostile artifacts rejected; worst "
          f"{max(report[str(p)]['s'] for p, _ in files.values()):.3f} s; peak memory growth "
          f"{report['growth_mb']:.0f} MB")


@pytest.mark.parametrize("arg", ["nested_json", "weights_nan"])
def test_the_cli_prints_one_line_for_a_hostile_artifact(tmp_path, capsys, arg):
    good = make_tiny_artifact(tmp_path / "good.safetensors")
    meta, tensors, _ = _variants(good)[arg]
    bad = tmp_path / "bad.safetensors"
    _write(bad, good, meta, tensors)
    config = tmp_path / "c.yaml"
    config.write_text("data: {train_frames: 2, val_frames: 2, height: 32, width: 48,\n"
                      "       render_height: 32, render_width: 48}\nmodel: {num_classes: 4}\n")
    assert main(["evaluate", str(bad), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtl-train evaluate: error: ") and str(bad) in err[0]
