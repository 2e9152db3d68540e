"""`mtl-train export`: a training run's checkpoint -> the deployable artifact.

Only the RGB-only network ships (a student or a single-task baseline); the task-transfer nets and
teachers stay in training. The artifact's metadata is built here from the run: the model's own
spec, the dataset's classes and palette, the preprocessing the run trained with, and provenance.

`export_onnx` turns an artifact into an ONNX model (opset ONNX_OPSET, torch.export-based exporter)
that carries the same metadata in its `metadata_props`, so the node needs that one file. Before the
file is written it is run through onnxruntime on sample inputs and compared with PyTorch on the
same inputs: beyond ONNX_TOLERANCE the export fails and nothing is written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtl_perception.core.artifact import (
    METADATA_KEY,
    ONNX_EXPORT_KEY,
    ArtifactError,
    ArtifactMeta,
    load_artifact,
    read_onnx,
    write_artifact,
)
from mtl_perception.core.fileio import atomic_path
from mtl_perception.core.models.backbones import encoder_preprocess
from mtl_perception.core.models.registry import DEPLOYABLE_ARCHS
from mtl_perception.core.preprocess import PreprocessSpec
from mtl_training.checkpoint import (
    CheckpointError,
    model_config_of,
    model_from_checkpoint,
    resolve_checkpoint,
)


def git_commit() -> str | None:
    """The commit this package was installed from, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def training_preprocess(data: dict[str, Any], encoder: str = "resnet18") -> PreprocessSpec:
    """The preprocessing a run's samples had: data.height x data.width, normalised with the
    statistics of its encoder's family (ImageNet's for ResNets, [-1, 1] for EfficientNet-Lite)."""
    return encoder_preprocess(str(encoder), int(data["height"]), int(data["width"]))


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """Run directory (best.pt, else last.pt) -> artifact at `out`."""
    ckpt_path = resolve_checkpoint(run_dir, checkpoint)
    if not ckpt_path.is_file():
        raise ArtifactError(f"{ckpt_path}: checkpoint not found (train first, or pass a run "
                            "directory that holds best.pt/last.pt)")
    model, ckpt = model_from_checkpoint(ckpt_path)
    cfg = ckpt["config"]
    arch = cfg["model"].get("arch")
    if arch not in DEPLOYABLE_ARCHS:
        raise ArtifactError(f"{ckpt_path}: a {arch} needs more than RGB input and is not "
                            "deployable; export a student run")
    if cfg.get("data", {}).get("depth_target", "depth") != "depth" and \
            "depth" in cfg["model"].get("tasks", ("depth",)):
        # the node publishes metric depth (32FC1 metres, REP 118); an inverse-depth head would
        # be published as metres and silently be wrong on the robot
        raise ArtifactError(f"{ckpt_path}: trained with data.depth_target="
                            f"{cfg['data']['depth_target']}; the node publishes metric depth "
                            "(REP 118), so only depth_target=depth runs are deployable")
    try:  # a file that loads but lacks what every Trainer checkpoint holds: one line, not a trace
        info = ckpt["info"]
        training = {"dataset": info["name"], "stage": cfg["train"]["stage"],
                    "tau": (cfg.get("pseudo", {}).get("tau")
                            if cfg["data"].get("pseudo_labels") else None),
                    "pseudo_labels": cfg["data"].get("pseudo_labels"), "commit": git_commit(),
                    # where the encoder's initial weights came from (None: from scratch)
                    "pretrained": ckpt.get("pretrained"),
                    # data.sources: every source's identity, weight and class map
                    **({"sources": ckpt["dataset"]["sources"]}
                       if isinstance(ckpt.get("dataset"), dict) and "sources" in ckpt["dataset"]
                       else {}),
                    "epoch": ckpt["epoch"], "metrics": ckpt.get("metrics", {})}
        classes, palette = list(info["classes"]), [list(c) for c in info["palette"]]
        preprocess = training_preprocess(cfg["data"], cfg["model"].get("encoder", "resnet18"))
        max_depth = float(info["max_depth"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{ckpt_path}: not an exportable training checkpoint (missing or "
                              f"malformed {exc})") from exc
    spec = model_config_of(ckpt, ckpt_path).spec()
    meta = ArtifactMeta(spec, classes, palette, preprocess, max_depth, training=training)
    return write_artifact(model, meta, out)


# ---- ONNX -------------------------------------------------------------------------------------

ONNX_OPSET = 18
# Largest allowed |onnxruntime - PyTorch| per output, relative to the output's own scale
# (max(1, max |PyTorch output|)): float32 reorderings (fused batch norm, other conv kernels)
# differ by ~1e-6 on our networks; a wrong graph differs by the size of the output.
ONNX_TOLERANCE = 1e-4
ONNX_INPUT = "image"
DYNAMIC_SIDE = (8, 4096)  # height/width range of a dynamic-size export (artifact.MAX_INPUT_SIDE)


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote and how closely onnxruntime reproduced PyTorch."""

    path: Path
    opset: int
    dynamic: bool
    max_abs_diff: dict[str, float]  # task -> worst |onnxruntime - torch| over the samples
    sizes: tuple[tuple[int, int], ...]  # (H, W) of the inputs compared
    tolerance: float

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        sizes = ", ".join(f"{w}x{h}" for h, w in self.sizes)
        return (f"onnxruntime vs PyTorch max abs difference: {diffs} (tolerance "
                f"{self.tolerance:g} x output scale; inputs {sizes})")


class _TupleOutputs(nn.Module):
    """The student with its {task: tensor} outputs as a tuple in task order (ONNX outputs)."""

    def __init__(self, model: nn.Module, tasks: tuple[str, ...], strided: bool = False) -> None:
        super().__init__()
        self.model = model
        self.tasks = tasks
        self.strided = strided

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x, full_size=False) if self.strided else self.model(x)
        return tuple(out[t] for t in self.tasks)


def strided_outputs(model: nn.Module, height: int, width: int, dynamic: bool) -> bool:
    """Whether the ONNX file answers at stride 4: a refine-decoder student at a fixed input size
    that every encoder stage divides (multiples of 32). Upsampling 40 logit channels to 640x480
    inside the graph cost more than the rest of the network's decoder; the runtime brings the
    stride-4 maps to camera size instead (exact argmax of the bilinear logits)."""
    return (not dynamic and getattr(model, "decoder", None) is not None
            and height % 32 == 0 and width % 32 == 0)


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ArtifactError(f"ONNX export needs {', '.join(missing)}: pip install "
                            "'mtl_perception[onnx]'")


def split_concat_convs(proto: Any) -> int:
    """Rewrite every Conv that reads a channel Concat into one Conv per concatenated input plus
    Adds (in place); returns how many Concats went.

    Why: each decoder block concatenates the upsampled features with the encoder skip and
    convolves the result. A convolution is linear in its input channels, so
    conv(concat(a, b); W) = conv(a; W[:, :ca]) + conv(b; W[:, ca:]) exactly (up to float32
    summation order, which the export check bounds). onnxruntime's CPU layout optimiser fuses
    the Add (and the ReLU after it) into the second convolution, so the concatenated tensor is
    never written: 6 copies of up to 112 x 120 x 160 floats per frame at 320x240 (3 % of the
    forward pass, bench/bench_backends.py). Only plain cases are touched: a Concat on axis 1
    read by Convs alone, a constant (initializer) weight, group 1, known channel counts.
    """
    import onnx  # lazy: optional extra (checked by _require_onnx)
    from onnx import helper, numpy_helper, shape_inference  # lazy: the same optional extra

    graph = proto.graph
    inferred = shape_inference.infer_shapes(proto).graph
    channels: dict[str, int] = {}
    for v in [*inferred.value_info, *inferred.input, *inferred.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[v.name] = dims[1].dim_value
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1

    def attrs(node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def splittable(node: onnx.NodeProto) -> bool:
        cat = producer.get(node.input[0]) if node.op_type == "Conv" else None
        return (cat is not None and cat.op_type == "Concat" and attrs(cat).get("axis") == 1
                and node.input[1] in inits and attrs(node).get("group", 1) == 1
                and all(i in channels for i in cat.input)
                and sum(channels[i] for i in cat.input)
                == numpy_helper.to_array(inits[node.input[1]]).shape[1])

    # A Concat goes only where every reader is a splittable Conv (the two heads' first decoder
    # blocks read one shared Concat of the same upsampled features and skip).
    candidates = [i for i, n in enumerate(graph.node) if splittable(n)]
    per_cat: dict[str, int] = {}
    for i in candidates:
        per_cat[graph.node[i].input[0]] = per_cat.get(graph.node[i].input[0], 0) + 1
    split = {i for i in candidates
             if per_cat[graph.node[i].input[0]] == readers[graph.node[i].input[0]]}

    nodes: list[onnx.NodeProto] = []
    gone: set[str] = set()  # output names of the Concats removed
    split_weights: set[str] = set()
    for index, node in enumerate(graph.node):
        if index not in split:
            nodes.append(node)
            continue
        cat = producer[node.input[0]]
        weight = numpy_helper.to_array(inits[node.input[1]])  # [Cout, Cin, kh, kw]
        parts, start = [], 0
        for k, src in enumerate(cat.input):
            stop = start + channels[src]
            w_name = f"{node.input[1]}__part{k}"
            graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(weight[:, start:stop]), w_name))
            start = stop
            bias = node.input[2:3] if k == 0 else []  # the bias is added once
            parts.append(f"{node.output[0]}__part{k}")
            nodes.append(helper.make_node("Conv", [src, w_name, *bias], [parts[-1]],
                                          name=f"{node.name}__part{k}", **attrs(node)))
        total = parts[0]
        for k, part in enumerate(parts[1:], start=1):
            out = node.output[0] if k == len(parts) - 1 else f"{node.output[0]}__sum{k}"
            nodes.append(helper.make_node("Add", [total, part], [out],
                                          name=f"{node.name}__sum{k}"))
            total = out
        gone.add(cat.output[0])
        split_weights.add(node.input[1])
    kept = [n for n in nodes if not (n.op_type == "Concat" and n.output[0] in gone)]
    used = {name for n in kept for name in n.input}
    for t in [t for t in graph.initializer if t.name in split_weights - used]:
        graph.initializer.remove(t)  # the whole weights, now held in parts
    del graph.node[:]
    graph.node.extend(kept)
    return len(gone)


def _sample_inputs(meta: ArtifactMeta, dynamic: bool) -> list[torch.Tensor]:
    """Normalised inputs to compare on: noise and a smooth image, at the artifact's size (and a
    second size when the export is dynamic)."""
    h, w = meta.input_size
    sizes = [(h, w)] + ([(h + 16, w + 24)] if dynamic else [])
    gen = torch.Generator().manual_seed(0)
    out = []
    for sh, sw in sizes:
        out.append(torch.randn(1, 3, sh, sw, generator=gen))
        ramp = torch.linspace(-2.0, 2.0, sw).expand(1, 3, sh, sw).contiguous()
        out.append(ramp)
    return out


def export_onnx(artifact: str | Path, out: str | Path, dynamic: bool = False,
                tolerance: float = ONNX_TOLERANCE) -> OnnxExport:
    """Artifact (.safetensors) -> checked ONNX model at `out` carrying the same metadata.

    `dynamic` makes height and width symbolic (the node can then feed any size; the artifact's
    size stays the one it preprocesses to). Raises ArtifactError when onnxruntime's outputs differ
    from PyTorch's beyond `tolerance`; then nothing is written.
    """
    _require_onnx()
    import onnxruntime as ort  # lazy: optional extra, checked by _require_onnx above

    art = load_artifact(artifact)
    meta = art.meta
    tasks = tuple(meta.architecture.tasks)
    h, w = meta.input_size
    strided = strided_outputs(art.model, h, w, dynamic)
    wrapper = _TupleOutputs(art.model, tasks, strided).eval()
    example = torch.zeros(1, 3, h, w)
    shapes = None
    if dynamic:
        lo, hi = DYNAMIC_SIDE
        shapes = {"x": {2: torch.export.Dim("height", min=lo, max=hi),
                        3: torch.export.Dim("width", min=lo, max=hi)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = logging.getLogger("torch")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(wrapper, (example,), None, dynamo=True,
                                        opset_version=ONNX_OPSET, input_names=[ONNX_INPUT],
                                        output_names=list(tasks), dynamic_shapes=shapes,
                                        optimize=True, verbose=False, report=False,
                                        external_data=False)
        except Exception as exc:  # the exporter raises many types; one line names the cause
            raise ArtifactError(f"{artifact}: ONNX export failed ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        finally:
            quiet.setLevel(level)
    proto = program.model_proto
    split = split_concat_convs(proto)

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    diffs = dict.fromkeys(tasks, 0.0)
    worst_rel = 0.0
    samples = _sample_inputs(meta, dynamic)
    for x in samples:
        with torch.inference_mode():
            ref = wrapper.model(x, full_size=False) if strided else art.model(x)
        got = session.run(list(tasks), {ONNX_INPUT: x.numpy()})
        for task, arr in zip(tasks, got, strict=True):
            r = ref[task].numpy()
            d = float(np.abs(arr - r).max())
            diffs[task] = max(diffs[task], d)
            worst_rel = max(worst_rel, d / max(1.0, float(np.abs(r).max())))
    check = OnnxExport(Path(out), ONNX_OPSET, dynamic, diffs,
                       tuple((int(x.shape[2]), int(x.shape[3])) for x in samples[::2]),
                       tolerance)
    if not worst_rel <= tolerance:
        raise ArtifactError(f"{out}: ONNX export check failed: {check.summary()}; "
                            "not written")

    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, json.dumps(meta.to_json())),
                       (ONNX_EXPORT_KEY, json.dumps({
                           "opset": ONNX_OPSET, "dynamic": dynamic, "torch": torch.__version__,
                           "split_concat_convs": split, "stride4_outputs": strided,
                           "max_abs_diff": diffs, "tolerance": tolerance,
                           "source": Path(artifact).name}))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        read_onnx(tmp)  # the robot's checks, before the file takes its name
    return check
