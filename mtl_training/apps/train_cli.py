"""`mtl-train <command>`: synth, train, pseudo-label, evaluate, export, bag.

Every command takes `--config FILE` and repeated `--set key=value`, shows progress on long work,
and turns bad input into one line on stderr and exit status 2 (no traceback for user errors).
Commands live in a table so each feature adds its own without touching the others.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtl_training.config import ConfigError, ExperimentConfig, load_config


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: list[Command] = []


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def wrap(fn: Callable[[argparse.Namespace], int | None]):
        COMMANDS.append(Command(name, help, add_arguments, fn))
        return fn

    return wrap


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.set)


# -- synth ------------------------------------------------------------------------------------
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--frames", type=int, default=None, help="training frames (data.train_frames)")
    p.add_argument("--val-frames", type=int, default=None, help="validation frames")
    p.add_argument("--seed", type=int, default=None, help="world seed (data.seed)")


@command("synth", "render the procedural RGB-D world into a folder dataset", _synth_args)
def _synth(args: argparse.Namespace) -> None:
    from mtl_training.data.sources.synthetic import write_synthetic_folder

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
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if present")


@command("train", "train the teacher or the student", _train_args)
def _train(args: argparse.Namespace) -> None:
    from mtl_training.trainer import summarize, train

    cfg = config_from_args(args)
    stage = args.stage or cfg.train.stage
    cfg = cfg.for_stage(stage)
    for assignment in args.set or []:  # command-line overrides win over stages.<stage>
        from mtl_training.config import apply_override

        apply_override(cfg, assignment)
    if args.out is not None:
        cfg.train.out_dir = str(args.out)
    run_dir = train(cfg, resume=args.resume, pseudo=_pseudo_store(cfg))
    from mtl_training.checkpoint import load_checkpoint

    best = run_dir / "best.pt"
    if best.is_file():
        ckpt = load_checkpoint(best)
        print(f"{stage} run: {run_dir}  best (epoch {ckpt['epoch']}): {summarize(ckpt['metrics'])}")


def _pseudo_store(cfg: ExperimentConfig):
    if not cfg.data.pseudo_labels:
        return None
    try:
        from mtl_training.pseudo.run import PseudoLabelStore
    except ImportError as exc:
        raise UserError("data.pseudo_labels is set but pseudo-labelling is not available") from exc
    return PseudoLabelStore(cfg.data.pseudo_labels)


# -- evaluate ---------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="run directory (best.pt) or exported .safetensors")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here")


@command("evaluate", "score a run or an artifact on the config's validation split",
         _evaluate_args)
def _evaluate(args: argparse.Namespace) -> None:
    import json

    from torch.utils.data import DataLoader

    from mtl_training.data import build_datasets
    from mtl_training.data.datasets import collate
    from mtl_perception.core.device import resolve_device
    from mtl_training.evaluate import evaluate
    from mtl_training.trainer import summarize

    cfg = config_from_args(args)
    device = resolve_device(cfg.train.device)
    model = _load_any_model(args.model, device)
    _, val = build_datasets(cfg.data)
    loader = DataLoader(val, batch_size=cfg.train.batch_size, collate_fn=collate)
    metrics, _ = evaluate(model, loader, len(val.info.classes), val.info.classes, device,
                          val.info.max_depth)
    print(summarize(metrics))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1, default=float))


def _load_any_model(path: Path, device):
    from mtl_perception.core.artifact import load_artifact
    from mtl_training.checkpoint import model_from_checkpoint

    if path.suffix == ".safetensors":
        return load_artifact(path, device).model
    ckpt_path = path / "best.pt" if path.is_dir() else path
    if not ckpt_path.is_file():
        raise UserError(f"no checkpoint at {ckpt_path}")
    return model_from_checkpoint(ckpt_path, device)[0]


# -- export -----------------------------------------------------------------------------------
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="training run directory")
    p.add_argument("--out", required=True, type=Path, help="artifact path (.safetensors)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")


@command("export", "write the deployable student artifact (.safetensors)", _export_args)
def _export(args: argparse.Namespace) -> None:
    from mtl_perception.core.artifact import read_metadata
    from mtl_training.export import export_run

    if args.out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, got {args.out}")
    path = export_run(args.run_dir, args.out, args.checkpoint)
    meta = read_metadata(path)
    h, w = meta.input_size
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {meta.architecture.encoder}, "
          f"{len(meta.classes)} classes, input {h}x{w}")


def _load_plugins() -> None:
    """Feature modules that add commands (pseudo-label, bag, ...) register on import."""
    import importlib

    for module in ("mtl_training.pseudo.run", "mtl_training.data.bags.extract",
                   "mtl_training.apps.experiments"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="mtl-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--config", type=Path, default=None, help="experiment YAML")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set train.epochs=2 (repeatable)")
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from mtl_training.data.sources.folder import DatasetFormatError
    from mtl_perception.core.artifact import ArtifactError
    from mtl_training.checkpoint import CheckpointError

    try:
        return int(args._run(args) or 0)
    except (UserError, ConfigError, ArtifactError, CheckpointError, DatasetFormatError,
            FileNotFoundError) as exc:
        print(f"mtl-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mtl-train {args.command}: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
