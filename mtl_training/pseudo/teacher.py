"""The frozen teacher a pseudo-labelling run reads: its network, checkpoint file and its hash.

The checkpoint's sha256 goes into the store's manifest, so a student can always say which teacher
labelled its frames, and a resumed run refuses a folder another teacher started.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_training.checkpoint import CheckpointError, model_from_checkpoint, resolve_checkpoint
from mtl_training.pseudo import PseudoLabelError


@dataclass
class LoadedTeacher:
    model: nn.Module  # frozen: eval(), requires_grad False; used under inference_mode only
    path: Path  # the checkpoint file used
    sha256: str  # of that file: the manifest's "teacher artifact hash"
    config: dict[str, Any]  # the teacher's resolved training config

    @property
    def aux_input(self) -> str:
        """What the teacher reads besides RGB ("depth" or "seg")."""
        return self.model.aux_input

    @property
    def target(self) -> str:
        """What it predicts, i.e. the label it writes ("seg" or "depth")."""
        return self.model.target


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints can be large)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def freeze(model: nn.Module) -> nn.Module:
    """A teacher never trains here: BN statistics stay fixed (eval) and no gradient is kept."""
    model.eval()
    model.requires_grad_(False)
    return model


def load_teacher(path: str | Path, checkpoint: str = "best",
                 device: torch.device | str = "cpu") -> LoadedTeacher:
    """The teacher of a run directory (`<dir>/<checkpoint>.pt`, its best reconciled with last.pt
    as `--resume` does) or a checkpoint file, frozen."""
    try:
        ckpt_path = resolve_checkpoint(path, checkpoint)
    except CheckpointError as exc:
        raise PseudoLabelError(str(exc)) from exc
    if not ckpt_path.is_file():
        raise PseudoLabelError(f"no teacher checkpoint at {ckpt_path} (train one with "
                               "`mtl-train train --stage teacher`)")
    try:
        model, ckpt = model_from_checkpoint(ckpt_path, device)
    except CheckpointError as exc:
        raise PseudoLabelError(str(exc)) from exc
    if getattr(model, "aux_input", None) is None:
        raise PseudoLabelError(f"{ckpt_path} holds a '{ckpt['config']['model'].get('arch')}' "
                               "model, not a teacher (train with model.arch=teacher)")
    freeze(model)
    return LoadedTeacher(model, ckpt_path, file_sha256(ckpt_path), ckpt["config"])
