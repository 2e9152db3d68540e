"""Hostile and damaged .onnx files: each fails in one line naming the file, before onnxruntime runs.

The corpus is made here from one good export (the tiny student): damaged bytes, other file kinds
under an .onnx name, metadata that is missing, not JSON, nested past the parser or off-schema,
graphs that reach outside the file (external data: a path the runtime would read), use operators
outside the standard set (a custom domain needs a shared library) or control flow, weights that
are NaN or claim terabytes, inputs and outputs that disagree with the metadata, and a graph that
passes every check but that onnxruntime refuses. The same treatment as hostile safetensors files
(test_hostile_artifacts.py): ArtifactError, one line, the file's path in it, well under a second.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is the optional onnx extra")
import onnx
from onnx import TensorProto, helper, numpy_helper

from mtl_perception.core.artifact import METADATA_KEY, ArtifactError, read_metadata
from mtl_perception.ros.process import start_node
from mtl_perception.runtime.predictor import Predictor
from mtl_training.export import export_onnx

MAX_SECONDS = 1.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tiny_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.getbasetemp() / "onnx_shared" / "tiny.onnx"
    if not out.is_file():
        export_onnx(tiny_artifact, out)
    return out


def _with(model: onnx.ModelProto, **meta_fields) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if meta_fields:
        props = {p.key: p.value for p in out.metadata_props}
        meta = json.loads(props[METADATA_KEY])
        for path, value in meta_fields.items():
            section, _, key = path.partition("__")
            if key:
                meta[section][key] = value
            else:
                meta[section] = value
        _set_meta(out, json.dumps(meta))
    return out


def _set_meta(model: onnx.ModelProto, text: str | None) -> None:
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for k, v in keep + ([(METADATA_KEY, text)] if text is not None else []):
        p = model.metadata_props.add()
        p.key, p.value = k, v


def _first_conv_weight(model: onnx.ModelProto) -> TensorProto:
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    return next(i for i in model.graph.initializer if i.name == conv.input[1])


def _corpus(good: Path, tiny_artifact: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, a word the error line must contain)."""
    data = good.read_bytes()
    base = onnx.load_from_string(data)
    cases: dict[str, tuple[bytes, str]] = {}

    def add(name: str, model: onnx.ModelProto, word: str) -> None:
        cases[name] = (model.SerializeToString(), word)

    cases["empty"] = (b"", "")
    cases["truncated"] = (data[: len(data) // 2], "")
    cases["garbage"] = (np.random.default_rng(0).bytes(4096), "")
    cases["safetensors_renamed"] = (tiny_artifact.read_bytes(), "")
    cases["pickle_renamed"] = (pickle.dumps({"weights": [1, 2, 3]}), "")

    m = _with(base)
    _set_meta(m, None)
    add("no_metadata", m, "metadata")
    m = _with(base)
    _set_meta(m, "{oops")
    add("metadata_not_json", m, "JSON")
    m = _with(base)
    _set_meta(m, "[" * 100_000 + "]" * 100_000)
    add("metadata_nested", m, "JSON")
    m = _with(base)
    _set_meta(m, '"hello"')
    add("metadata_string", m, "JSON object")
    add("num_classes_mismatch", _with(base, architecture__num_classes=5), "classes")
    add("version_99", _with(base, format_version=99), "format_version")
    add("input_giant", _with(base, input__height=100_000), "input.height")
    add("arch_teacher", _with(base, architecture__arch="teacher"), "deployable")
    add("meta_input_size_differs", _with(base, input__height=64), "metadata input")

    m = _with(base)
    w = _first_conv_weight(m)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for k, v in (("location", "/etc/passwd"), ("offset", "0"), ("length", "4096")):
        e = w.external_data.add()
        e.key, e.value = k, v
    add("external_data_etc_passwd", m, "external data")

    m = _with(base)
    m.opset_import.add(domain="com.evil", version=1)
    add("custom_opset", m, "operator set")
    m = _with(base)
    m.graph.node[0].domain = "ai.onnx.ml"
    add("node_outside_standard_ops", m, "operator")

    m = _with(base)
    w = _first_conv_weight(m)
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] = np.nan
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    add("nan_weight", m, "NaN")

    m = _with(base)
    w = _first_conv_weight(m)
    del w.dims[:]
    w.dims.extend([1_000_000, 1_000_000, 3, 3])
    add("weight_claims_terabytes", m, "GB")
    m = _with(base)
    w = _first_conv_weight(m)
    del w.dims[:]
    w.dims.extend([-1, 3, 7, 7])
    add("negative_dims", m, "negative")

    m = _with(base)
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    add("input_float64", m, "float32")
    m = _with(base)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 4
    add("input_four_channels", m, "shape")
    m = _with(base)
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    add("two_inputs", m, "inputs")
    m = _with(base)
    m.graph.output[0].name = "normals"
    add("output_not_a_task", m, "tasks")
    m = _with(base)
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 9
    add("output_channels_wrong", m, "output 'seg'")

    m = _with(base)
    branch = helper.make_graph([], "branch", [], [])
    m.graph.node.append(helper.make_node("If", ["image"], ["never"], name="evil_if",
                                         then_branch=branch, else_branch=branch))
    add("control_flow", m, "control flow")
    m = _with(base)
    m.functions.append(helper.make_function("local", "f", ["x"], ["y"],
                                            [helper.make_node("Relu", ["x"], ["y"])],
                                            [helper.make_opsetid("", 18)]))
    add("local_function", m, "functions")

    # Passes every check above, but the Conv weight no longer fits its input: onnxruntime refuses.
    m = _with(base)
    w = _first_conv_weight(m)
    arr = numpy_helper.to_array(w)
    w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr[:, :2]), w.name))
    add("onnxruntime_refuses", m, "onnxruntime")
    return cases


def test_every_hostile_onnx_fails_in_one_line_naming_the_file(good, tiny_artifact, tmp_path):
    cases = _corpus(good, tiny_artifact)
    assert len(cases) >= 25
    slow, wrong = [], []
    for name, (data, word) in cases.items():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            Predictor(path, device="cpu", backend="onnxruntime", num_threads=1)
        except ArtifactError as exc:
            line = str(exc)
            if str(path) not in line or "\n" in line or word not in line:
                wrong.append(f"{name}: {line!r} (wanted {word!r})")
        else:
            wrong.append(f"{name}: loaded")
        elapsed = time.perf_counter() - t0
        if elapsed > MAX_SECONDS:
            slow.append(f"{name}: {elapsed:.2f} s")
    assert not wrong, "\n".join(wrong)
    assert not slow, "\n".join(slow)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:  # sparse: 3 GB claimed, nothing on disk
        f.truncate(3 << 30)
    t0 = time.perf_counter()
    with pytest.raises(ArtifactError, match="limit") as exc:
        Predictor(path, device="cpu", backend="onnxruntime")
    assert str(path) in str(exc.value) and time.perf_counter() - t0 < MAX_SECONDS


def test_the_good_file_still_loads(good, tiny_artifact):
    p = Predictor(good, device="cpu", backend="onnxruntime", num_threads=1)
    assert p.meta == read_metadata(tiny_artifact)


@pytest.mark.ros
def test_node_with_a_hostile_onnx_exits_1_with_one_line(good, tiny_artifact, tmp_path):
    pytest.importorskip("rclpy", reason="rclpy not installed")
    data, _ = _corpus(good, tiny_artifact)["external_data_etc_passwd"]
    path = tmp_path / "evil.onnx"
    path.write_bytes(data)
    log = tmp_path / "log.txt"
    proc = start_node(path, params={"device": "cpu"},
                      params_file=REPO / "config" / "perception.yaml", log_path=log)
    assert proc.wait(90) == 1
    text = log.read_text()
    errors = [line for line in text.splitlines() if "mtl_perception: error:" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "external data" in errors[0], text
    assert "Traceback" not in text, text


def _depth_plus(model: onnx.ModelProto, nodes: list, initializers: list, term: str
                ) -> onnx.ModelProto:
    """`model` with its depth output replaced by depth + `term` (computed by `nodes`)."""
    out = _with(model)
    producer = next(n for n in out.graph.node if "depth" in n.output)
    producer.output[list(producer.output).index("depth")] = "depth_before"
    out.graph.initializer.extend(initializers)
    out.graph.node.extend([*nodes, helper.make_node("Add", ["depth_before", term], ["depth"])])
    return out


def _node_refuses(path: Path, tmp_path: Path, params: dict | None = None) -> str:
    """Start the node on `path`: it must exit 1 with one error line naming the file."""
    pytest.importorskip("rclpy", reason="rclpy not installed")
    log = tmp_path / f"{path.stem}.log"
    proc = start_node(path, params={"device": "cpu", **(params or {})},
                      params_file=REPO / "config" / "perception.yaml", log_path=log)
    assert proc.wait(120) == 1
    text = log.read_text()
    errors = [line for line in text.splitlines() if "mtl_perception: error:" in line]
    assert len(errors) == 1 and str(path) in errors[0], text
    assert "Traceback" not in text, text
    return errors[0]


@pytest.mark.ros
def test_node_refuses_a_graph_whose_output_is_nan_at_run_time(good, tmp_path):
    """Finite weights, standard operators, right shapes: only running it shows depth is NaN
    (a Constant holding NaN added to it). It once started and rejected every frame."""
    m = _depth_plus(onnx.load(str(good)), [helper.make_node(
        "Constant", [], ["nan_c"], value=numpy_helper.from_array(np.array(np.nan, np.float32)))],
        [], "nan_c")
    path = tmp_path / "nan_constant.onnx"
    onnx.save(m, str(path))
    line = _node_refuses(path, tmp_path, {"backend": "onnxruntime"})
    assert "warm-up" in line and "NaN" in line, line


@pytest.mark.ros
def test_node_refuses_a_graph_that_allocates_past_the_bound(good, tmp_path):
    """ConstantOfShape 10000 x 10000 (400 MB, its shape tied to the input so it runs at every
    frame, not folded at load) against max_model_memory_mb 256: refused, naming the bound."""
    n = 10_000
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["img_max"], keepdims=0),
        helper.make_node("Mul", ["img_max", "zero_f"], ["img_zero"]),
        helper.make_node("Cast", ["img_zero"], ["img_zero_i"], to=TensorProto.INT64),
        helper.make_node("Add", ["big_shape0", "img_zero_i"], ["big_shape"]),
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"],
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0),
        helper.make_node("Mul", ["big_sum", "zero_f"], ["big_zero"]),
    ]
    inits = [numpy_helper.from_array(np.array([n, n], np.int64), "big_shape0"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")]
    base = onnx.load(str(good))
    assert base.graph.input[0].name == "image"
    path = tmp_path / "allocates_400mb.onnx"
    onnx.save(_depth_plus(base, nodes, inits, "big_zero"), str(path))
    line = _node_refuses(path, tmp_path, {"backend": "onnxruntime", "max_model_memory_mb": 256})
    assert "max_model_memory_mb 256" in line and "MiB" in line, line
