"""Training checkpoints: one atomic save, one safe load, one way to rebuild the model from them.

A checkpoint is a dict of tensors and plain containers (model/optimizer/scheduler/weighting state,
epoch, step, best score, the resolved experiment config, the dataset info, the epoch's metrics).
It is written under a temporary name and renamed (a crash never leaves a torn file), and loaded
with `weights_only=True`, so a checkpoint cannot execute code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_perception.core.fileio import atomic_path
from mtl_perception.core.models.registry import build_model
from mtl_training.config import ConfigError, ModelConfig, from_dict


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or not a training checkpoint; names the file."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file and rename: a crash mid-write never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Tensors and plain containers only (no unpickling of code); one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'empty'})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no model/config)")
    return ckpt


def model_config_of(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> ModelConfig:
    """The ModelConfig a checkpoint was trained with."""
    try:
        return from_dict(ModelConfig, ckpt["config"]["model"], prefix="model")
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model config unreadable ({exc})") from exc


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """(network with the checkpoint's weights in eval mode, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    try:
        model = build_model(model_config_of(ckpt, path).spec())
        model.load_state_dict(ckpt["model"])
    except (ConfigError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its model config ({exc})") from exc
    return model.to(device).eval(), ckpt


def resolve_checkpoint(path: str | Path, checkpoint: str = "best") -> Path:
    """A run directory (-> <dir>/<checkpoint>.pt, falling back to last.pt for best) or a file."""
    path = Path(path)
    if not path.is_dir():
        return path
    wanted = path / f"{checkpoint}.pt"
    if not wanted.is_file() and checkpoint == "best" and (path / "last.pt").is_file():
        return path / "last.pt"
    return wanted
