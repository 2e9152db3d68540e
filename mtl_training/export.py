"""The model artifact: one .safetensors file holding weights and JSON metadata, never pickle.

Metadata key "mtl_perception" holds JSON with: format_version, architecture (the ModelConfig that
`registry.build_model` takes), classes, palette, input (height, width, mean, std, channel_order),
depth (unit, min, max), training (dataset, stage, tau, commit, metrics). Readers rebuild the network
from `architecture` and load the tensors: nothing in the file can execute.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_training.config import ConfigError
from mtl_training.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mtl_training.models.registry import build_model, model_config

FORMAT_VERSION = 1
METADATA_KEY = "mtl_perception"


class ArtifactError(ValueError):
    """A model file is missing, not an artifact, damaged or incompatible; names file and cause."""


@dataclass
class Artifact:
    path: Path
    model: nn.Module
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.meta["palette"]]

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.meta["input"]["height"]), int(self.meta["input"]["width"])


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def build_metadata(architecture: dict[str, Any], classes: list[str], palette: list[list[int]],
                   height: int, width: int, max_depth: float,
                   training: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "classes": list(classes),
        "palette": [list(map(int, c)) for c in palette],
        "input": {"height": int(height), "width": int(width), "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD), "channel_order": "rgb"},
        "depth": {"unit": "m", "min": 0.0, "max": float(max_depth)},
        "training": training or {},
    }


def write_artifact(model: nn.Module, meta: dict[str, Any], out: str | Path) -> Path:
    """Save weights (contiguous, CPU) and metadata; writes to a temp name, then renames."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_suffix(out.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, default=float)})
    tmp.replace(out)
    return out


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """Run directory (best.pt or last.pt) -> artifact. Only the student-like nets ship."""
    from mtl_training.train import load_checkpoint

    run_dir = Path(run_dir)
    ckpt_path = run_dir / f"{checkpoint}.pt"
    if not ckpt_path.is_file():
        alt = run_dir / "last.pt"
        if checkpoint == "best" and alt.is_file():
            ckpt_path = alt
        else:
            raise ArtifactError(f"{ckpt_path}: checkpoint not found (train first, or pass a run "
                                "directory that holds best.pt/last.pt)")
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["config"]
    arch = cfg["model"]
    if arch.get("arch") == "teacher":
        raise ArtifactError(f"{ckpt_path}: a teacher needs depth input and is not deployable; "
                            "export a student run")
    model = build_model(arch)
    model.load_state_dict(ckpt["model"])
    info = ckpt["info"]
    training = {"dataset": info["name"], "stage": cfg["train"]["stage"],
                "tau": (cfg.get("pseudo", {}).get("tau")
                        if cfg["data"].get("pseudo_labels") else None),
                "pseudo_labels": cfg["data"].get("pseudo_labels"), "commit": git_commit(),
                "epoch": ckpt["epoch"], "metrics": ckpt.get("metrics", {})}
    meta = build_metadata(arch, info["classes"], info["palette"], cfg["data"]["height"],
                          cfg["data"]["width"], info["max_depth"], training)
    return write_artifact(model, meta, out)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parse and validate the metadata without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable .safetensors file ({exc})") from exc
    if METADATA_KEY not in raw:
        raise ArtifactError(f"{path}: no '{METADATA_KEY}' metadata; export it with "
                            "`mtl-train export RUN_DIR --out FILE.safetensors`")
    try:
        meta = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: metadata is not valid JSON ({exc})") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {version!r}, this build reads "
                            f"{FORMAT_VERSION}; re-export with this version")
    for key in ("architecture", "classes", "palette", "input", "depth"):
        if key not in meta:
            raise ArtifactError(f"{path}: metadata lacks '{key}'")
    if len(meta["palette"]) < len(meta["classes"]):
        raise ArtifactError(f"{path}: palette has fewer colours than classes")
    return meta


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Validated metadata + rebuilt network with its weights, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        model = build_model(model_config(meta["architecture"]))
    except (ConfigError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: cannot build architecture ({exc})") from exc
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:
        raise ArtifactError(f"{path}: weights are damaged ({exc})") from exc
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ArtifactError(f"{path}: weights do not match the architecture ({exc})") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(f"{path}: weights do not match the architecture "
                            f"(missing {result.missing_keys[:3]}, unexpected "
                            f"{result.unexpected_keys[:3]})")
    return Artifact(path, model.to(device).eval(), meta)
