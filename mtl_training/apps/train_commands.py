"""`mtl-train synth | train | evaluate | export`: make data, train, score and ship a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from mtl_perception.core.artifact import load_artifact, read_metadata
from mtl_perception.core.device import resolve_device
from mtl_training.apps.command import Command, UserError, config_from_args
from mtl_training.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from mtl_training.config import ExperimentConfig, apply_override
from mtl_training.data.sources import SPLITS
from mtl_training.data.sources.synthetic import write_synthetic_folder
from mtl_training.distributed import from_env
from mtl_training.evaluate import evaluate_split, evaluation_config, read_metrics
from mtl_training.export import export_onnx, export_run
from mtl_training.pseudo.store import PseudoLabelStore
from mtl_training.report import metrics_report
from mtl_training.tblog import tensorboard_command
from mtl_training.trainer import summarize, train


# -- synth ------------------------------------------------------------------------------------
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--frames", type=int, default=None, help="training frames (data.train_frames)")
    p.add_argument("--val-frames", type=int, default=None, help="validation frames")
    p.add_argument("--seed", type=int, default=None, help="world seed (data.seed)")


def _synth(args: argparse.Namespace) -> None:
    cfg = config_from_args(args).data
    if args.frames is not None:
        cfg.train_frames = args.frames
    if args.val_frames is not None:
        cfg.val_frames = args.val_frames
    if args.seed is not None:
        cfg.seed = args.seed
    if cfg.train_frames < 1 or cfg.val_frames < 0:
        raise UserError("--frames must be >= 1 and --val-frames >= 0")
    stats = write_synthetic_folder(args.out, cfg)
    print(f"wrote {stats['frames']} frames to {args.out} ({stats['fps']:.1f} frames/s)")


# -- train ------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=["teacher", "student"], default=None,
                   help="which network to train (config stages.<stage> is merged in)")
    p.add_argument("--out", type=Path, default=None, help="run directory (train.out_dir)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in <out> from its last.pt (a new run if none)")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run in <out> (its checkpoints and metrics are deleted)")


def _train(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    stage = args.stage or cfg.train.stage
    cfg = cfg.for_stage(stage)
    for assignment in args.set or []:  # command-line overrides win over stages.<stage>
        apply_override(cfg, assignment)
    if args.out is not None:
        cfg.train.out_dir = str(args.out)
    cfg.validate()  # the overrides above came after load_config's check
    main = from_env().is_main  # under torchrun only rank 0 speaks
    if main and cfg.train.tensorboard:
        print(f"{stage} run: {cfg.train.out_dir}  watch it with: "
              f"{tensorboard_command(Path(cfg.train.out_dir).parent)}", flush=True)
    run_dir = train(cfg, resume=args.resume, pseudo=_pseudo_store(cfg), overwrite=args.overwrite)
    best = run_dir / "best.pt"
    if main and best.is_file():
        ckpt = load_checkpoint(best)
        print(f"{stage} run: {run_dir}  best (epoch {ckpt['epoch']}): {summarize(ckpt['metrics'])}")


def _pseudo_store(cfg: ExperimentConfig) -> PseudoLabelStore | None:
    return PseudoLabelStore(cfg.data.pseudo_labels) if cfg.data.pseudo_labels else None


# -- evaluate ---------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="run directory (best.pt) or exported .safetensors")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="split to score: val (what chose best.pt, default), test (the held-out "
                        "split to report), train; without --config, the run's own config")
    p.add_argument("--baseline", type=Path, default=None, metavar="METRICS.json",
                   help="another model's --json output on the same split: adds Delta_m")


def _evaluate(args: argparse.Namespace) -> None:
    cfg = evaluation_config(args.model, args.config, args.set)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise UserError(f"train.device: {exc}") from exc
    model = _load_any_model(args.model, device)
    baseline = read_metrics(args.baseline) if args.baseline else None
    metrics, info, frames = evaluate_split(model, cfg, args.split, device)
    print(summarize(metrics))
    unit = "1/m" if cfg.data.depth_target == "inverse" else "m"
    print(metrics_report(metrics, f"{info.name}, split {args.split} ({frames} frames)", unit,
                         baseline))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1, default=float))


def _load_any_model(path: Path, device: torch.device) -> nn.Module:
    """The network of an exported artifact, or of a run directory's / checkpoint file's weights."""
    if path.suffix == ".safetensors":
        return load_artifact(path, device).model
    ckpt_path = resolve_checkpoint(path)  # a run's best.pt, reconciled with its last.pt
    if not ckpt_path.is_file():
        raise UserError(f"no checkpoint at {ckpt_path}")
    return model_from_checkpoint(ckpt_path, device)[0]


# -- export -----------------------------------------------------------------------------------
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="training run directory")
    p.add_argument("--out", required=True, type=Path, help="artifact path (.safetensors)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--onnx", type=Path, default=None, metavar="FILE.onnx",
                   help="also write an ONNX model (opset 18, same metadata), checked against "
                        "PyTorch on sample inputs; fails beyond the stated tolerance")
    p.add_argument("--onnx-dynamic", action="store_true",
                   help="with --onnx: symbolic height/width (any input size) instead of the "
                        "artifact's fixed size")


def _export(args: argparse.Namespace) -> None:
    if args.out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, got {args.out}")
    if args.onnx is not None and args.onnx.suffix != ".onnx":
        raise UserError(f"--onnx must end in .onnx, got {args.onnx}")
    if args.onnx_dynamic and args.onnx is None:
        raise UserError("--onnx-dynamic needs --onnx FILE.onnx")
    path = export_run(args.run_dir, args.out, args.checkpoint)
    meta = read_metadata(path)
    h, w = meta.input_size
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {meta.architecture.encoder}, "
          f"{len(meta.classes)} classes, input {h}x{w}")
    if args.onnx is not None:
        check = export_onnx(path, args.onnx, dynamic=args.onnx_dynamic)
        size = "dynamic size" if check.dynamic else f"input {h}x{w}"
        print(f"wrote {check.path} ({check.path.stat().st_size / 1e6:.1f} MB, opset "
              f"{check.opset}, {size}): {check.summary()}")


SYNTH = Command("synth", "render the procedural RGB-D world into a folder dataset", _synth_args,
                _synth)
TRAIN = Command("train", "train the teacher or the student", _train_args, _train)
EVALUATE = Command("evaluate", "score a run or an artifact on the config's validation split",
                   _evaluate_args, _evaluate)
EXPORT = Command("export", "write the deployable student artifact (.safetensors, optionally .onnx)",
                 _export_args, _export)
