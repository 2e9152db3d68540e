"""`mtl-train export`: a training run's checkpoint -> the deployable artifact.

Only the RGB-only network ships (a student or a single-task baseline); the task-transfer nets and
teachers stay in training. The artifact's metadata is built here from the run: the model's own
spec, the dataset's classes and palette, the preprocessing the run trained with, and provenance.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from mtl_perception.core.artifact import ArtifactError, ArtifactMeta, write_artifact
from mtl_perception.core.models.registry import DEPLOYABLE_ARCHS
from mtl_perception.core.preprocess import PreprocessSpec
from mtl_training.checkpoint import (
    CheckpointError,
    model_config_of,
    model_from_checkpoint,
    resolve_checkpoint,
)


def git_commit() -> str | None:
    """The commit this package was installed from, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def training_preprocess(data: dict[str, Any]) -> PreprocessSpec:
    """The preprocessing a run's samples had (data.height x data.width, ImageNet statistics)."""
    return PreprocessSpec(int(data["height"]), int(data["width"]))


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """Run directory (best.pt, else last.pt) -> artifact at `out`."""
    ckpt_path = resolve_checkpoint(run_dir, checkpoint)
    if not ckpt_path.is_file():
        raise ArtifactError(f"{ckpt_path}: checkpoint not found (train first, or pass a run "
                            "directory that holds best.pt/last.pt)")
    model, ckpt = model_from_checkpoint(ckpt_path)
    cfg = ckpt["config"]
    arch = cfg["model"].get("arch")
    if arch not in DEPLOYABLE_ARCHS:
        raise ArtifactError(f"{ckpt_path}: a {arch} needs more than RGB input and is not "
                            "deployable; export a student run")
    try:  # a file that loads but lacks what every Trainer checkpoint holds: one line, not a trace
        info = ckpt["info"]
        training = {"dataset": info["name"], "stage": cfg["train"]["stage"],
                    "tau": (cfg.get("pseudo", {}).get("tau")
                            if cfg["data"].get("pseudo_labels") else None),
                    "pseudo_labels": cfg["data"].get("pseudo_labels"), "commit": git_commit(),
                    "epoch": ckpt["epoch"], "metrics": ckpt.get("metrics", {})}
        classes, palette = list(info["classes"]), [list(c) for c in info["palette"]]
        preprocess, max_depth = training_preprocess(cfg["data"]), float(info["max_depth"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{ckpt_path}: not an exportable training checkpoint (missing or "
                              f"malformed {exc})") from exc
    spec = model_config_of(ckpt, ckpt_path).spec()
    meta = ArtifactMeta(spec, classes, palette, preprocess, max_depth, training=training)
    return write_artifact(model, meta, out)
