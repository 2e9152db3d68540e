"""`mtl-train <command>`: synth, train, pseudo-label, evaluate, export, bag, select, labels.

Every command takes `--config FILE` and repeated `--set key=value`, shows progress on long work,
and turns bad input into one line on stderr and exit status 2 (no traceback for user errors).
The commands are listed in COMMANDS; each lives in its own module beside this one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mtl_training.apps.bag_commands import BAG
from mtl_training.apps.command import USER_ERRORS, Command, add_config_options
from mtl_training.apps.experiments import EXPERIMENT
from mtl_training.apps.label_commands import LABELS, SELECT
from mtl_training.apps.pseudo_commands import PSEUDO_LABEL
from mtl_training.apps.train_commands import EVALUATE, EXPORT, SYNTH, TRAIN

COMMANDS: tuple[Command, ...] = (SYNTH, TRAIN, EVALUATE, EXPORT, PSEUDO_LABEL, BAG, SELECT, LABELS,
                                 EXPERIMENT)


def build_parser() -> argparse.ArgumentParser:
    """The `mtl-train` parser: one sub-parser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(prog="mtl-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        add_config_options(p, "override one config value, e.g. --set train.epochs=2 (repeatable)")
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script `mtl-train`; returns the exit status (2 on bad input, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        print(f"mtl-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mtl-train {args.command}: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
