"""The model artifact: one .safetensors file holding weights and JSON metadata, never pickle.

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
    if METADATA_KEY not in raw:
        raise ArtifactError(f"{path}: no '{METADATA_KEY}' metadata; export it with "
                            "`mtl-train export RUN_DIR --out FILE.safetensors`")
    try:
        meta = json.loads(raw[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{path}: metadata is not valid JSON ({exc})") from exc
    try:
        return ArtifactMeta.from_json(meta)
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
