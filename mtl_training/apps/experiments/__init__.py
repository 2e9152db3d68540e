"""`mtl-train experiment <name>`: committed, reproducible studies that write docs/results/*.md.

Each study module registers itself with @experiment; the command lists them, so a results page
always names the exact command that produced it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from mtl_training.apps.train_cli import UserError, command


@dataclass
class Experiment:
    name: str
    help: str
    run: Callable[[argparse.Namespace], None]


EXPERIMENTS: dict[str, Experiment] = {}
_MODULES = ("mtl_training.apps.experiments.imbalance", "mtl_training.apps.experiments.consistency")


def experiment(name: str, help: str):
    def wrap(fn: Callable[[argparse.Namespace], None]):
        EXPERIMENTS[name] = Experiment(name, help, fn)
        return fn

    return wrap


def _load() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study to run (see the list in --help of each)")
    p.add_argument("--out", default=None, help="working directory for runs (default runs/<name>)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply frames/epochs (CPU default 1.0; use e.g. 8 on a GPU)")
    p.add_argument("--report", default=None, help="markdown results file to (re)write")


@command("experiment", "run a committed study (imbalance, consistency) and write its results page",
         _args)
def _run(args: argparse.Namespace) -> None:
    _load()
    if args.name not in EXPERIMENTS:
        raise UserError(f"unknown experiment '{args.name}' "
                        f"(available: {', '.join(sorted(EXPERIMENTS)) or 'none'})")
    EXPERIMENTS[args.name].run(args)
