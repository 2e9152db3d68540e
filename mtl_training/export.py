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


def training_preprocess(data: dict[str, Any]) -> PreprocessSpec:
    """The preprocessing a run's samples had (data.height x data.width, ImageNet statistics)."""
    return PreprocessSpec(int(data["height"]), int(data["width"]))


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
                    "epoch": ckpt["epoch"], "metrics": ckpt.get("metrics", {})}
        classes, palette = list(info["classes"]), [list(c) for c in info["palette"]]
        preprocess, max_depth = training_preprocess(cfg["data"]), float(info["max_depth"])
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

    def __init__(self, model: nn.Module, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.tasks = tasks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[t] for t in self.tasks)


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ArtifactError(f"ONNX export needs {', '.join(missing)}: pip install "
                            "'mtl_perception[onnx]'")


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
    wrapper = _TupleOutputs(art.model, tasks).eval()
    h, w = meta.input_size
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

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    diffs = dict.fromkeys(tasks, 0.0)
    worst_rel = 0.0
    samples = _sample_inputs(meta, dynamic)
    for x in samples:
        with torch.inference_mode():
            ref = art.model(x)
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
                           "max_abs_diff": diffs, "tolerance": tolerance,
                           "source": Path(artifact).name}))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        read_onnx(tmp)  # the robot's checks, before the file takes its name
    return check
