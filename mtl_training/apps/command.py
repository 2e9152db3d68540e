"""What every `mtl-train` command shares: the Command record, the user error, the config options.

Domain code raises its own ValueError subclasses (ConfigError, BagError, ...); only the apps turn
them into the one line `mtl-train <command>: error: ...` and exit status 2 (USER_ERRORS).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtl_perception.core.artifact import ArtifactError
from mtl_training.checkpoint import CheckpointError, RunDirError
from mtl_training.config import ConfigError, ExperimentConfig, load_config
from mtl_training.data.bags.reader import BagError
from mtl_training.data.sources.folder import DatasetFormatError
from mtl_training.pseudo import PseudoLabelError
from mtl_training.source_config import source_specs


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# Everything a command may raise on bad input: one line on stderr, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    UserError, ConfigError, ArtifactError, CheckpointError, RunDirError, DatasetFormatError,
    BagError, PseudoLabelError, FileNotFoundError)


@dataclass(frozen=True)
class Command:
    """One `mtl-train` sub-command: its arguments and what runs it (returns the exit status)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def add_config_options(p: argparse.ArgumentParser,
                       set_help: str = "override one config value (repeatable)") -> None:
    """`--config FILE` and repeated `--set key=value`, which every command takes."""
    p.add_argument("--config", type=Path, default=None, help="experiment YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults, then `--config`, then the `--set` overrides; data.sources entries are checked
    here too, so a bad entry fails at load, before any data is opened."""
    cfg = load_config(args.config, args.set)
    if cfg.data.sources is not None:
        source_specs(cfg.data)
    return cfg
