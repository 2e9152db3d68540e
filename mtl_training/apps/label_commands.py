"""`mtl-train select` and `mtl-train labels import`: choose the frames worth labelling, export
them for a labelling tool, and bring the finished masks back (docs/labeling.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mtl_perception.core.device import resolve_device
from mtl_training.apps.command import Command, UserError, add_config_options
from mtl_training.config import load_config
from mtl_training.labeling import LabelingError
from mtl_training.labeling.import_labels import import_labels
from mtl_training.labeling.select import STRATEGIES, SelectionRule, run_select
from mtl_training.pseudo.teacher import load_teacher


def _select_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", type=Path, help="folder dataset (bag extract / synth output)")
    p.add_argument("--teacher", required=True, type=Path,
                   help="RGB + depth -> seg teacher run directory or checkpoint file")
    p.add_argument("--budget", required=True, type=int, help="how many frames to choose")
    p.add_argument("--out", required=True, type=Path, help="selection folder to write")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--strategy", choices=STRATEGIES, default=STRATEGIES[0],
                   help="teacher uncertainty + k-center diversity (default), or a seeded "
                        "random draw (the baseline)")
    p.add_argument("--seed", type=int, default=0, help="the random strategy's seed")
    p.add_argument("--tau", type=float, default=None,
                   help="confidence counted as sure (default pseudo.tau); also the "
                        "pre-annotation's threshold (0: every pixel)")
    p.add_argument("--diversity", type=float, default=0.5,
                   help="weight of feature distance against uncertainty, 0..1")
    p.add_argument("--min-gap", type=float, default=1.0,
                   help="s: frames of one recording closer in time to a chosen one are skipped")
    p.add_argument("--min-index-gap", type=int, default=0,
                   help="frames without stamps: this many neighbours of a chosen one skipped")
    p.add_argument("--min-feature-distance", type=float, default=0.02,
                   help="frames whose pooled teacher features are closer are duplicates")
    p.add_argument("--pre-annotate", action="store_true",
                   help="export the teacher's prediction as masks to correct (PNG, CVAT zip, "
                        "Label Studio predictions)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing selection")


def _select(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise UserError(f"train.device: {exc}") from exc
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    teacher = load_teacher(args.teacher, args.checkpoint, device)
    # the network size: --config's (or --set data.height / width), else the teacher's
    sized = args.config is not None or any(
        s.split("=", 1)[0].strip() in ("data.height", "data.width") for s in args.set)
    data = cfg.data if sized else None
    tdata = teacher.config.get("data", {})
    size = ((data.height, data.width) if data is not None
            else (int(tdata.get("height", cfg.data.height)), int(tdata.get("width",
                                                                           cfg.data.width))))
    rule = SelectionRule(args.budget, args.strategy, cfg.pseudo.tau if args.tau is None
                         else args.tau, args.diversity, args.min_gap, args.min_index_gap,
                         args.min_feature_distance, args.seed, cfg.pseudo.batch_size)
    try:
        m = run_select(teacher, args.data_dir, args.out, rule, size, device, args.pre_annotate,
                       args.overwrite)
    except LabelingError as exc:
        raise UserError(str(exc)) from exc
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in m["skipped"].items() if v)
    print(f"chose {m['chosen']} of {m['candidates']} unlabelled frames ({args.strategy}) into "
          f"{args.out}" + (f"; skipped {skipped}" if skipped else ""))
    for f in m["frames"]:
        print(f"  {f['rank']:3d}. {f['id']}  uncertainty {f['uncertainty']:.3f} (coverage "
              f"{100 * f['coverage']:.0f} %)" + ("" if f["distance"] is None
                                                 else f", distance {f['distance']:.3f}"))
    if m["chosen"] < args.budget:
        print(f"fewer than --budget {args.budget}: the rest were near-duplicates or missing")
    return 0


def _labels_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="labels_command", required=True, metavar="{import}")
    imp = sub.add_parser("import", help="masks (PNG ids/colours, CVAT Segmentation mask 1.1, "
                         "Label Studio JSON) -> segmentation labels of a folder dataset")
    imp.add_argument("src", type=Path, help="select folder, CVAT export (.zip or folder), Label "
                     "Studio JSON export (.json), or a folder of <frame>.png masks")
    imp.add_argument("--into", required=True, type=Path, help="folder dataset to label")
    imp.add_argument("--selection", type=Path, default=None,
                     help="the select folder the masks came from (names, pre-annotation check)")
    imp.add_argument("--replace", action="store_true",
                     help="overwrite frames that already have a segmentation label")
    imp.add_argument("--accept-unchanged", action="store_true",
                     help="import masks that are still the teacher's pre-annotation")
    add_config_options(imp)


def _labels(args: argparse.Namespace) -> int:
    try:
        r = import_labels(args.src, args.into, selection_dir=args.selection,
                          replace=args.replace, accept_unchanged=args.accept_unchanged)
    except LabelingError as exc:
        raise UserError(str(exc)) from exc
    for line in r["skipped"]:
        print(f"skipped {line}")
    sha = r["dataset_json_sha256"]
    replaced = f" ({len(r['replaced'])} replaced)" if r["replaced"] else ""
    print(f"imported {len(r['imported'])} segmentation labels ({r['kind']}) into {args.into}"
          f"{replaced}; dataset.json sha256 {sha['before'][:12]} -> {sha['after'][:12]}")
    if r["imported"]:
        print("the dataset changed: pseudo-labels made before are refused as stale (run "
              "`mtl-train pseudo-label` again)")
    return 0


SELECT = Command("select", "choose the unlabelled frames worth labelling and export them",
                 _select_args, _select)
LABELS = Command("labels", "import finished segmentation masks into a folder dataset",
                 _labels_args, _labels)
