"""`mtl-train experiment <name>`: committed, reproducible studies that write docs/results/*.md.

The studies are listed in EXPERIMENTS; the command runs one by name, so a results page always
names the exact command that produced it. Adding a study: a module here with a `run(args)`
function, and one line in EXPERIMENTS.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from mtl_training.apps.command import Command, UserError
from mtl_training.apps.experiments import consistency, domain, imbalance, pseudo_depth, realtime
from mtl_training.stats import MIN_SEEDS


@dataclass(frozen=True)
class Experiment:
    name: str
    help: str
    run: Callable[[argparse.Namespace], None]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("imbalance",
               "UMMT vs UMMT-PS vs UMMT-PD (5/10/50 % and 250-of-500 seg labels), UMMT-PS + XTC, "
               "noisy teacher depth, tau sweep", imbalance.run),
    Experiment("pseudo_depth",
               "UMMT vs UMMT-PS vs UMMT-PD with kept pseudo-depth (calibrated 0.2, flip rule), "
               "5/10/50 % seg labels: the two directions' asymmetry", pseudo_depth.run),
    Experiment("realtime",
               "real-time student (EfficientNet-Lite0 + refine) from ImageNet vs from scratch vs "
               "the demo's ResNet-18 U-Net (equal steps), and UMMT vs UMMT-PS with it",
               realtime.run),
    Experiment("domain",
               "a labelled source world -> a robot world without seg labels: source only vs + "
               "robot depth vs + pseudo-labels vs + 1/2/5 % labels chosen by select or at random",
               domain.run),
    Experiment("consistency",
               "XTasC-Net vs Base ST/MT-Net x weightings (METHOD.md B, Table I/III)",
               consistency.run),
)}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study to run (see the list in --help of each)")
    p.add_argument("--out", default=None, help="working directory for runs (default runs/<name>)")
    p.add_argument("--seeds", type=int, default=MIN_SEEDS,
                   help=f"seeds per configuration (default {MIN_SEEDS}: fewer cannot separate "
                        "the effects these studies measure; mtl_training/stats.py)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply frames/epochs (CPU default 1.0; use e.g. 8 on a GPU)")
    p.add_argument("--report", default=None, help="markdown results file to (re)write")
    p.add_argument("--arms", default=None,
                   help="comma-separated arm tags: run only these (realtime, pseudo_depth, "
                        "domain; e.g. a larger --scale of the headline arms); the page's status "
                        "counts only their runs")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, one process and one torch thread each (imbalance, "
                        "pseudo_depth, realtime, domain; "
                        "default 1: e.g. 2 on a 2-core CPU)")
    # --config / --set (every command's): a dataset config (config/train/nyuv2_imbalanced.yaml,
    # xtasc_nyuv2.yaml, ...) instead of the procedural world: the study trains on its frames


def _run(args: argparse.Namespace) -> None:
    if args.name not in EXPERIMENTS:
        raise UserError(f"unknown experiment '{args.name}' "
                        f"(available: {', '.join(sorted(EXPERIMENTS)) or 'none'})")
    EXPERIMENTS[args.name].run(args)


EXPERIMENT = Command("experiment",
                     "run a committed study (imbalance, pseudo_depth, realtime, domain, "
                     "consistency) and write its results page",
                     _args, _run)
