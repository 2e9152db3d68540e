"""The model artifact: one .safetensors file holding weights and JSON metadata, never pickle.

The same metadata also travels in an ONNX export (`mtl-train export --onnx`), as the ONNX file's
`metadata_props` entry "mtl_perception": `read_onnx` validates it with the same schema and checks
the graph (standard operators only, no external data, input/output shapes that agree with the
metadata, finite weights) before onnxruntime sees a byte of it.

Metadata key "mtl_perception" holds JSON with its own versioned schema (ArtifactMeta):

    format_version  2 (this build also reads 1)
    architecture    ModelSpec fields: arch, encoder, num_classes, decoder_channels,
                    decoder_convs, tasks, max_depth, aux_input
    classes         class names, index = class id
    palette         one [r, g, b] (0..255) per class
    input           PreprocessSpec: height, width, mean, std, channel_order
    depth           unit "m", min, max
    training        free-form provenance: dataset, stage, tau, commit, metrics, ...

Readers validate the metadata, rebuild the network from `architecture` through the model
registry and load the tensors: nothing in the file can execute. Version 1 files (written before
the schema had its own type) stored the training config's model section, which differs from
version 2 only by the training-only `encoder_weights` field; they are read unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mtl_perception.core.fileio import atomic_path
from mtl_perception.core.labels import palette_for
from mtl_perception.core.models.registry import DEPLOYABLE_ARCHS, ModelSpec, build_model
from mtl_perception.core.preprocess import PreprocessSpec

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "mtl_perception"
_V1_TRAINING_ONLY = ("encoder_weights",)  # v1 architecture fields that never built anything


class ArtifactError(ValueError):
    """A model file is missing, not an artifact, damaged or incompatible; names file and cause."""


@dataclass(frozen=True)
class ArtifactMeta:
    """What an artifact says about its network, apart from the weights."""

    architecture: ModelSpec
    classes: list[str]
    palette: list[list[int]]
    preprocess: PreprocessSpec
    max_depth: float
    min_depth: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.preprocess.size

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture.to_dict(),
            "classes": list(self.classes),
            "palette": [[int(v) for v in c] for c in self.palette],
            "input": self.preprocess.to_dict(),
            "depth": {"unit": "m", "min": float(self.min_depth), "max": float(self.max_depth)},
            "training": self.training,
        }

    @classmethod
    def from_json(cls, meta: Any) -> ArtifactMeta:
        """Validated metadata; ValueError naming the first bad field."""
        if not isinstance(meta, dict):
            raise ValueError(f"metadata must be a JSON object, got {type(meta).__name__}")
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"format_version {version!r}, this build reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))}; re-export with this "
                             "version")
        for key in ("architecture", "classes", "palette", "input", "depth"):
            if key not in meta:
                raise ValueError(f"metadata lacks '{key}'")
        arch = meta["architecture"]
        if version == 1 and isinstance(arch, dict):
            arch = {k: v for k, v in arch.items() if k not in _V1_TRAINING_ONLY}
        spec = ModelSpec.from_dict(arch)
        if spec.arch not in DEPLOYABLE_ARCHS:
            raise ValueError(f"architecture.arch '{spec.arch}' is not deployable (RGB-only "
                             f"networks: {', '.join(DEPLOYABLE_ARCHS)})")
        classes = meta["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError("classes must be a list of names")
        if len(classes) != spec.num_classes:
            raise ValueError(f"classes lists {len(classes)} names for "
                             f"architecture.num_classes {spec.num_classes}")
        for i, name in enumerate(classes):
            if len(name) > MAX_CLASS_NAME_CHARS:
                raise ValueError(f"classes[{i}] is {len(name)} characters long (limit "
                                 f"{MAX_CLASS_NAME_CHARS})")
        palette = meta["palette"]
        if not isinstance(palette, list) or not all(
                isinstance(c, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in c) for c in palette):
            raise ValueError("palette must be a list of [r, g, b] integer triples")
        if len(palette) < len(classes):
            raise ValueError("palette has fewer colours than classes")
        palette = palette_for(classes, palette)
        preprocess = _preprocess(meta["input"])
        if spec.num_classes * preprocess.height * preprocess.width * 4 > MAX_LOGIT_BYTES:
            raise ValueError(f"architecture.num_classes {spec.num_classes} at input "
                             f"{preprocess.width}x{preprocess.height} needs more than "
                             f"{MAX_LOGIT_BYTES >> 30} GB of logits per frame")
        depth = meta["depth"]
        if not isinstance(depth, dict) or depth.get("unit", "m") != "m":
            raise ValueError("depth must be an object with unit 'm'")
        max_depth = _number(depth, "max", "depth")
        min_depth = _number(depth, "min", "depth", default=0.0)
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"depth range must satisfy 0 <= min < max, got {min_depth}, "
                             f"{max_depth}")
        training = meta.get("training") or {}
        if not isinstance(training, dict):
            raise ValueError("training must be an object")
        return cls(spec, list(classes), palette, preprocess, max_depth, min_depth, training)


def _number(d: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = d.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


# The forward pass allocates with the input size: activations of the full-resolution decoder
# block and the logits grow with pixels x channels (x classes). 4 MP is more than any network
# input this package trains at (the papers use 288x384 and 128x256) and keeps the largest
# allowed network's working set within a robot's memory.
MAX_INPUT_SIDE = 4096
MAX_INPUT_PIXELS = 2048 * 2048
MAX_LOGIT_BYTES = 2 << 30  # num_classes x input pixels x float32
MAX_WEIGHT_BYTES = 1 << 30  # all tensors of the file, as float32
# Metadata is a few kB (classes, palette, provenance): these bounds keep a hostile file from
# parking megabytes in every diagnostics message, log line and ONNX export that repeats it.
MAX_CLASS_NAME_CHARS = 256
MAX_METADATA_BYTES = 1 << 20  # the JSON text of the METADATA_KEY entry


def _preprocess(inp: Any) -> PreprocessSpec:
    if not isinstance(inp, dict):
        raise ValueError("input must be an object")
    for key in ("height", "width"):
        v = inp.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 8 <= v <= MAX_INPUT_SIDE:
            raise ValueError(f"input.{key} must be an integer in [8, {MAX_INPUT_SIDE}], "
                             f"got {v!r}")
    for key in ("mean", "std"):
        v = inp.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) != 3 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x == x for x in v):
            raise ValueError(f"input.{key} must be 3 numbers, got {v!r}")
    if inp["height"] * inp["width"] > MAX_INPUT_PIXELS:
        raise ValueError(f"input {inp['width']}x{inp['height']} exceeds {MAX_INPUT_PIXELS} "
                         "pixels")
    if inp.get("std") is not None and not all(x > 0 for x in inp["std"]):
        raise ValueError(f"input.std must be > 0, got {inp['std']}")
    order = inp.get("channel_order", "rgb")
    if order not in ("rgb", "bgr"):
        raise ValueError(f"input.channel_order must be rgb or bgr, got {order!r}")
    return PreprocessSpec.from_dict(inp)


@dataclass
class Artifact:
    """A loaded artifact: the rebuilt network (eval mode) and its metadata."""

    path: Path
    model: nn.Module
    meta: ArtifactMeta

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.meta.palette]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.meta.input_size


def write_artifact(model: nn.Module, meta: ArtifactMeta, out: str | Path) -> Path:
    """Save weights (contiguous, CPU) and metadata atomically (temp name, then rename)."""
    out = Path(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta.to_json())})
    return out


def read_metadata(path: str | Path) -> ArtifactMeta:
    """Parse and validate the metadata without building the model."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable .safetensors file ({exc})") from exc
    return _parse_meta(path, raw, "`mtl-train export RUN_DIR --out FILE.safetensors`")


def _parse_meta(path: Path, props: dict[str, str], how_to_export: str) -> ArtifactMeta:
    """The METADATA_KEY entry of a model file's string metadata -> validated ArtifactMeta
    (the same checks and one-line errors for .safetensors and .onnx files)."""
    if METADATA_KEY not in props:
        raise ArtifactError(f"{path}: no '{METADATA_KEY}' metadata; export it with "
                            f"{how_to_export}")
    size = len(props[METADATA_KEY].encode())
    if size > MAX_METADATA_BYTES:
        raise ArtifactError(f"{path}: '{METADATA_KEY}' metadata is {size / 2**20:.1f} MiB "
                            f"(limit {MAX_METADATA_BYTES >> 20} MiB)")
    try:
        raw = json.loads(props[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{path}: metadata is not valid JSON ({exc})") from exc
    try:
        return ArtifactMeta.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: {exc}") from exc


# safetensors dtype names -> what a network tensor may hold: floating weights (any width; they
# are cast to the model's dtype on load) or the integer step counters of batch norm.
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I64"}


def _expected_tensors(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (shape, is floating) of the network `spec` builds, without allocating it."""
    with torch.device("meta"):
        model = build_model(spec)
    return {k: (tuple(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()}


def _check_tensors(path: Path, spec: ModelSpec) -> None:
    """Names, shapes and dtypes of the file's tensors against the architecture, from the header.

    Runs before any weight is read or any real parameter allocated: a file whose tensors do not
    fit fails here in milliseconds, naming the tensor.
    """
    expected = _expected_tensors(spec)
    total = sum(4 * max(1, _numel(shape)) for shape, _ in expected.values())
    if total > MAX_WEIGHT_BYTES:
        raise ArtifactError(f"{path}: architecture needs {total / 1e9:.1f} GB of weights "
                            f"(limit {MAX_WEIGHT_BYTES / 1e9:.1f} GB)")
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                     for k in f.keys()}  # noqa: SIM118 - safe_open has keys(), no iteration
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: weights are damaged ({exc})") from exc
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not match the architecture "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, (shape, floating) in expected.items():
        got_shape, got_dtype = found[name]
        if got_shape != shape:
            raise ArtifactError(f"{path}: weights do not match the architecture (tensor "
                                f"'{name}' has shape {list(got_shape)}, expected {list(shape)})")
        allowed = _FLOAT_DTYPES if floating else _INT_DTYPES
        if got_dtype not in allowed:
            raise ArtifactError(f"{path}: tensor '{name}' is {got_dtype}, expected "
                                f"{' or '.join(sorted(allowed))}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Validated metadata + rebuilt network with its weights, in eval mode.

    Order matters for hostile files: metadata schema, then tensor names/shapes/dtypes from the
    file header against the architecture (nothing allocated yet), then the weights, which must be
    finite. Every failure is one ArtifactError naming the file and the field or tensor.
    """
    path = Path(path)
    meta = read_metadata(path)
    _check_tensors(path, meta.architecture)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: weights are damaged ({exc})") from exc
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{path}: tensor '{name}' holds NaN or inf")
    model = build_model(meta.architecture)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes were checked; anything else is still the file's fault
        raise ArtifactError(f"{path}: weights do not match the architecture ({exc})") from exc
    return Artifact(path, model.to(device).eval(), meta)


# ---- ONNX -------------------------------------------------------------------------------------

ONNX_SUFFIX = ".onnx"
# Protobuf cannot hold more than 2 GB; our largest allowed network is MAX_WEIGHT_BYTES of weights.
MAX_ONNX_BYTES = MAX_WEIGHT_BYTES + (64 << 20)
MAX_ONNX_NODES = 100_000
# The operator sets an exported student uses; anything else (custom domains need a shared
# library the runtime would load, control flow hides subgraphs) is refused, not run.
ONNX_DOMAINS = ("", "ai.onnx")
_ONNX_SUBGRAPH_OPS = {"If", "Loop", "Scan", "SequenceMap"}
# TensorProto data types -> bytes per element (FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16,
# DOUBLE, BFLOAT16); others count as 8.
_ONNX_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}


@dataclass(frozen=True)
class OnnxArtifact:
    """A checked ONNX model: its metadata and the exact bytes that were checked.

    The runtime builds its session from `model_bytes` (never re-reading the path), so the file it
    runs is the file that was validated.
    """

    path: Path
    meta: ArtifactMeta
    model_bytes: bytes
    input_name: str
    output_names: tuple[str, ...]  # task names, in graph order
    dynamic: bool  # height/width are symbolic: any input size runs
    export_info: dict[str, Any] = field(default_factory=dict)  # opset, check results


def _dims(value_info: Any) -> list[int | str]:
    """Shape of a graph input/output: ints where fixed, the symbol (or "?") where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _tensor_bytes(tensor: Any, where: str) -> int:
    """Size of one ONNX tensor's data as its dims claim it, refusing external data.

    External data is a file path the runtime would open and read as weights: a self-contained
    export never needs one.
    """
    if tensor.data_location == 1 or len(tensor.external_data):  # TensorProto.EXTERNAL
        raise ValueError(f"{where} '{tensor.name}' refers to external data; only "
                         "self-contained .onnx files are loaded")
    if any(d < 0 for d in tensor.dims):
        raise ValueError(f"{where} '{tensor.name}' has negative dimensions {list(tensor.dims)}")
    return _ONNX_ITEM_BYTES.get(tensor.data_type, 8) * _numel(tuple(tensor.dims))


def _check_onnx_graph(model: Any, meta: ArtifactMeta) -> tuple[str, tuple[str, ...], bool]:
    """(input name, output names, dynamic) of a graph that fits `meta`; ValueError otherwise."""
    from onnx import numpy_helper  # lazy: onnx is the optional `onnx` extra

    for opset in model.opset_import:
        if opset.domain not in ONNX_DOMAINS:
            raise ValueError(f"operator set '{opset.domain}' is not the standard one "
                             f"({', '.join(repr(d) for d in ONNX_DOMAINS)})")
    if len(model.functions):
        raise ValueError(f"{len(model.functions)} model-local functions; an exported student "
                         "has none")
    graph = model.graph
    if len(graph.node) > MAX_ONNX_NODES:
        raise ValueError(f"{len(graph.node)} nodes (limit {MAX_ONNX_NODES})")
    for node in graph.node:
        if node.domain not in ONNX_DOMAINS:
            raise ValueError(f"node '{node.name}' uses operator {node.domain}::{node.op_type}; "
                             "only standard ONNX operators are loaded")
        if node.op_type in _ONNX_SUBGRAPH_OPS:
            raise ValueError(f"node '{node.name}' is control flow ({node.op_type}); an exported "
                             "student has none")
        for attr in node.attribute:
            if attr.HasField("t"):
                _tensor_bytes(attr.t, f"node '{node.name}' constant")
            if attr.HasField("g") or len(attr.graphs):
                raise ValueError(f"node '{node.name}' holds a subgraph")
    total = 0
    for init in graph.initializer:
        total += _tensor_bytes(init, "initializer")
    if len(graph.sparse_initializer):
        raise ValueError("sparse initializers are not loaded")
    if total > MAX_WEIGHT_BYTES:
        raise ValueError(f"initializers claim {total / 1e9:.1f} GB (limit "
                         f"{MAX_WEIGHT_BYTES / 1e9:.1f} GB)")
    for init in graph.initializer:
        if init.data_type in (1, 10, 11, 16):  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
            try:
                values = numpy_helper.to_array(init)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"initializer '{init.name}' is damaged ({exc})") from exc
            if not bool(np.isfinite(values).all()):
                raise ValueError(f"initializer '{init.name}' holds NaN or inf")

    names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in names]
    if len(inputs) != 1:
        raise ValueError(f"graph has {len(inputs)} inputs, expected 1 image [1, 3, H, W]")
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != 1:
        raise ValueError(f"input '{inp.name}' is not float32")
    h, w = meta.input_size
    dims = _dims(inp)
    if len(dims) != 4 or dims[:2] != [1, 3]:
        raise ValueError(f"input '{inp.name}' has shape {dims}, expected [1, 3, {h}, {w}]")
    dynamic = not all(isinstance(d, int) for d in dims[2:])
    if not dynamic and dims[2:] != [h, w]:
        raise ValueError(f"input '{inp.name}' is {dims[3]}x{dims[2]}, metadata input is {w}x{h}")
    tasks = tuple(meta.architecture.tasks)
    outputs = tuple(o.name for o in graph.output)
    if sorted(outputs) != sorted(tasks):
        raise ValueError(f"graph outputs {list(outputs)} are not the architecture's tasks "
                         f"{list(tasks)}")
    channels = {"seg": meta.architecture.num_classes, "depth": 1}
    for out in graph.output:
        got = _dims(out)
        want = [1, channels[out.name], *dims[2:]]
        if len(got) == 4 and not dynamic and isinstance(got[2], int) and 0 < got[2] < h \
                and h % got[2] == 0 and w % (h // got[2]) == 0:
            # at an integer stride of the input: the Predictor upsamples (runtime.predictor)
            want[2:] = [got[2], w // (h // got[2])]
        if len(got) != 4 or any(isinstance(g, int) and g != x
                                for g, x in zip(got, want, strict=True)):
            raise ValueError(f"output '{out.name}' has shape {got}, expected {want}")
    return inp.name, outputs, dynamic


def read_onnx(path: str | Path) -> OnnxArtifact:
    """Validated metadata and graph of an exported .onnx model; ArtifactError naming the file.

    Parsing is protobuf only (no code runs): size limit first, then the metadata schema (the
    one safetensors artifacts use), then the graph against it. onnxruntime only sees files that
    passed.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    try:
        import onnx  # lazy: onnx is the optional `onnx` extra, only ONNX models need it
        from google.protobuf.message import DecodeError  # lazy: comes with onnx
    except ImportError as exc:
        raise ArtifactError(f"{path}: reading .onnx models needs the onnx package (pip install "
                            "'mtl_perception[onnx]')") from exc
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ArtifactError(f"{path}: {size / 1e9:.1f} GB is more than an exported student "
                            f"can be (limit {MAX_ONNX_BYTES / 1e9:.1f} GB)")
    data = path.read_bytes()
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable ONNX file ({exc})") from exc
    props = {p.key: p.value for p in model.metadata_props}
    meta = _parse_meta(path, props, "`mtl-train export RUN_DIR --out FILE.safetensors "
                       "--onnx FILE.onnx`")
    try:
        input_name, outputs, dynamic = _check_onnx_graph(model, meta)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    try:
        info = json.loads(props.get(ONNX_EXPORT_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError):
        info = {}
    return OnnxArtifact(path, meta, data, input_name, outputs, dynamic,
                        info if isinstance(info, dict) else {})


ONNX_EXPORT_KEY = "mtl_perception.export"  # opset, dynamic, the export check's differences


def read_any_metadata(path: str | Path) -> ArtifactMeta:
    """The metadata of a .safetensors artifact or an .onnx export (by suffix)."""
    if Path(path).suffix == ONNX_SUFFIX:
        return read_onnx(path).meta
    return read_metadata(path)
