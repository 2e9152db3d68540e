"""`mtl-train pseudo-label`: label the frames that lack a target label with the frozen teacher."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtl_perception.core.device import resolve_device
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.models.teacher import REQUIRED_LABELS
from mtl_training.apps.command import Command, UserError, config_from_args
from mtl_training.config import ConfigError, DataConfig, ExperimentConfig, from_dict
from mtl_training.data import build_datasets, build_split
from mtl_training.data.datasets import MultiTaskDataset
from mtl_training.data.multisource import build_multisource
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.teacher import load_teacher
from mtl_training.pseudo.thresholds import MODES
from mtl_training.source_config import source_specs

log = logging.getLogger("mtl_training.pseudo.run")  # the name the pseudo-label warnings had


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, type=Path,
                   help="teacher run directory (uses <dir>/<checkpoint>.pt) or checkpoint file")
    p.add_argument("--out", required=True, type=Path, help="pseudo-label folder to (re)write")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (pseudo.tau)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="global tau, or per-class thresholds min(tau, class quantile)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--max-frames", type=int, default=0,
                   help="stop after this many new frames (run again to continue)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a folder written with other settings")
    p.add_argument("--source", default=None, metavar="LABEL",
                   help="label this data.sources entry (by its label) of the config's student "
                        "stage instead of the top-level data")
    p.add_argument("--depth-filter", choices=("flip", "calibrated"), default=None,
                   help="pseudo-depth filter (pseudo.depth_filter): flip agreement, or its "
                        "threshold calibrated on the validation split's sensor depth")


def _subset_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The data settings that decide which frames keep which labels."""
    keys = ("name", "root", "seed", "train_frames", "seg_fraction", "depth_fraction",
            "seg_count", "depth_count", "seg_frames", "depth_frames")
    return {k: data.get(k) for k in keys}


def teacher_val_split(config: dict[str, Any], encoder: str
                      ) -> MultiTaskDataset | list[MultiTaskDataset]:
    """The teacher's own held-out labelled frames (the validation split of the data it trained
    on, from its checkpoint's config): where pseudo.calibrate=teacher_val reads its thresholds,
    since the frames being labelled have no labels. A teacher trained on several sources
    (data.sources): the validation split of each source it trained on, in the run's classes."""
    try:
        data = from_dict(DataConfig, config.get("data") or {}, "teacher data")
        data.pseudo_labels = None
        stats = encoder_input_stats(encoder)
        if data.sources:
            data.sources = [{**entry, "pseudo_labels": None} for entry in data.sources]
            num_classes = (config.get("model") or {}).get("num_classes")
            multi = build_multisource(data, num_classes=num_classes, stats=stats,
                                      required=REQUIRED_LABELS)
            return list(multi.val.values())
        return build_split(data, "val", stats=stats)
    except (ConfigError, OSError, ValueError) as exc:
        raise PseudoLabelError(f"pseudo.calibrate=teacher_val: cannot open the teacher's "
                               f"validation split ({exc}); its data must be at hand, or use "
                               "pseudo.calibrate=none") from exc


def source_data(cfg: ExperimentConfig, label: str) -> DataConfig:
    """The data of the student stage's data.sources entry labelled `label`: what --source
    pseudo-labels (its `pseudo_labels` key then names the folder the student reads)."""
    data = cfg.for_stage("student").data
    if not data.sources:
        raise UserError(f"--source {label}: the config lists no data.sources (top level or "
                        "stages.student)")
    specs = source_specs(data, num_classes=cfg.model.num_classes)
    match = [s for s in specs if s.label == label]
    if not match:
        raise UserError(f"--source {label}: no data.sources entry has that label (labels: "
                        f"{', '.join(s.label for s in specs)})")
    if match[0].class_map is not None:
        raise UserError(f"--source {label}: the entry has a class_map, so its frames are in "
                        "other classes than the teacher's; pseudo-label it with a config whose "
                        "top-level data is that dataset in the run's classes")
    return match[0].data


def _pseudo_label(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    if args.source:
        cfg.data = source_data(cfg, args.source)
    if args.tau is not None:
        cfg.pseudo.tau = args.tau
    if args.mode is not None:
        cfg.pseudo.mode = args.mode
    if args.depth_filter is not None:
        cfg.pseudo.depth_filter = args.depth_filter
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise UserError(f"train.device: {exc}") from exc
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    teacher = load_teacher(args.teacher, args.checkpoint, device)
    cfg.data.pseudo_labels = None
    if _subset_fields(teacher.config.get("data", {})) != _subset_fields(asdict(cfg.data)):
        log.warning("the teacher was trained with other data/label-subset settings than %s: it "
                    "may have seen labels of frames it now labels", args.config)
    # normalised as the teacher's encoder expects (its calibration reads val_set through it)
    encoder = str(teacher.config.get("model", {}).get("encoder", "resnet18"))
    train_set, val_set = build_datasets(cfg.data, stats=encoder_input_stats(encoder))
    if teacher.model.num_classes != len(train_set.info.classes):
        raise PseudoLabelError(f"teacher predicts {teacher.model.num_classes} classes, dataset "
                               f"'{train_set.info.name}' has {len(train_set.info.classes)}")
    # the calibrated pseudo-depth filter reads its threshold off frames the teacher never
    # trained on that carry sensor depth: the validation split (held out of training)
    calibration = val_set if cfg.pseudo.depth_filter == "calibrated" else None
    if teacher.target == "seg" and cfg.pseudo.calibrate == "teacher_val":
        calibration = teacher_val_split(teacher.config, encoder)
    s = run_pseudo_label(teacher, train_set, args.out, cfg.pseudo, device, args.overwrite,
                         args.max_frames, calibration=calibration)
    what = "pixels kept" if teacher.target == "seg" else "depth pixels kept"
    line = (f"{s['frames']}/{s['planned']} frames labelled ({teacher.target}) in {args.out}: "
            f"{100 * s['coverage']:.1f} % {what}")
    if "kept_accuracy" in s:
        line += f", kept-pixel accuracy {100 * s['kept_accuracy']:.1f} % (held-back ground truth)"
    if "kept_rel_err" in s:
        line += f", kept-pixel rel err {s['kept_rel_err']:.3f}, delta1 {s['kept_delta1']:.3f}"
    if "calibration" in s:
        c = s["calibration"]
        line += (f"; calibrated threshold {c['threshold']:.4g} (validation: "
                 f"{100 * c['coverage']:.1f} % kept at rel err {c['rel_err']:.3f})")
    print(line)
    if teacher.target == "seg" and "per_class_coverage" in s:
        print("per-class coverage: " + ", ".join(
            f"{n} {100 * v:.0f} %" for n, v in s["per_class_coverage"].items() if v is not None))
    if "seg_calibration" in s:
        c = s["seg_calibration"]
        line = (f"thresholds calibrated on the teacher's held-out frames ({c['frames']} frames): "
                f"{100 * c['coverage']:.1f} % of their pixels kept at precision "
                + ("-" if c["precision"] is None else f"{100 * c['precision']:.1f} %")
                + f" (target {100 * c['target_precision']:.0f} %)")
        print(line)
    if s.get("cross_domain"):
        print("cross-domain: the teacher was trained on another dataset (manifest: teacher_data); "
              "its accuracy here is not measured unless held-back labels exist")
    if not s["complete"]:
        print("not finished: run the same command again to continue")


PSEUDO_LABEL = Command("pseudo-label",
                       "label the frames that lack a target label with the frozen teacher",
                       _args, _pseudo_label)
