"""Evaluation on a dataset split with the shared metrics code (training, CLI and replay).

`evaluate` scores a loader; `evaluate_split` scores one split of a config's dataset (train,
val, test: `mtl-train evaluate --split`), refusing labels that are not the model's classes
instead of dropping them. The report's conventions are mtl_perception.core.metrics'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mtl_perception.core.contracts import DatasetInfo
from mtl_perception.core.metrics import DepthMetrics, SegMetrics
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats, PreprocessSpec
from mtl_training.checkpoint import load_checkpoint
from mtl_training.config import (
    ConfigError,
    ExperimentConfig,
    apply_override,
    from_dict,
    load_config,
)
from mtl_training.data import build_split
from mtl_training.data.datasets import collate
from mtl_training.data.sources.folder import DatasetFormatError


def model_inputs(model: nn.Module, batch: dict[str, Any],
                 device: torch.device) -> tuple[Tensor, ...]:
    """Positional inputs for `model`: the image, plus the auxiliary modality for a teacher.

    A teacher declares `aux_input` ("depth" or "seg"); the student takes the image alone.
    """
    image = batch["image"].to(device, non_blocking=True)
    aux = getattr(model, "aux_input", None)
    if aux is None:
        return (image,)
    return (image, batch[aux].to(device, non_blocking=True))


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, class_names: list[str],
             device: torch.device, max_depth: float | None = None,
             keep: int = 0) -> tuple[dict[str, dict[str, Any]], list[dict[str, np.ndarray]]]:
    """Metrics over the whole loader, plus up to `keep` frames of predictions for montages.

    Scores every frame that carries the label, whatever the training pretended to hide: the
    validation split is always fully labelled ground truth.
    """
    was_training = model.training
    model.eval()
    seg_m, depth_m = SegMetrics(num_classes, class_names), DepthMetrics(max_depth=max_depth)
    kept: list[dict[str, np.ndarray]] = []
    stats = getattr(loader.dataset, "stats", IMAGENET_STATS)  # how the pictures were normalised
    for batch in loader:
        out = model(*model_inputs(model, batch, device))
        if "seg" in out and out["seg"].shape[1] != num_classes:
            raise ConfigError(f"the model predicts {out['seg'].shape[1]} classes, the dataset "
                              f"has {num_classes} ({', '.join(class_names[:5])}...): evaluate "
                              "on the dataset the model was trained for (data.classes)")
        seg_pred = out["seg"].argmax(1).cpu().numpy() if "seg" in out else None
        depth_pred = out["depth"][:, 0].float().cpu().numpy() if "depth" in out else None
        for i in range(batch["image"].shape[0]):
            if seg_pred is not None and bool(batch["has_seg"][i]):
                seg_m.update(seg_pred[i], batch["seg"][i].numpy())
            if depth_pred is not None and bool(batch["has_depth"][i]):
                depth_m.update(depth_pred[i], batch["depth"][i, 0].numpy())
            if len(kept) < keep:
                kept.append({
                    "rgb": denormalize(batch["image"][i], stats),
                    "seg": batch["seg"][i].numpy() if bool(batch["has_seg"][i]) else None,
                    "seg_pred": None if seg_pred is None else seg_pred[i],
                    "depth": batch["depth"][i, 0].numpy() if bool(batch["has_depth"][i]) else None,
                    "depth_pred": None if depth_pred is None else depth_pred[i],
                })
    model.train(was_training)
    if seg_m.out_of_range:
        ids = ", ".join(map(str, sorted(seg_m.out_of_range_ids)))
        raise DatasetFormatError(f"{seg_m.out_of_range} ground-truth pixels carry label ids "
                                 f"outside the {num_classes} classes (ids {ids}): the dataset's "
                                 "labels are not the model's classes")
    metrics: dict[str, dict[str, Any]] = {}
    if seg_m.confusion.sum():
        metrics["seg"] = seg_m.compute()
    if depth_m.n:
        metrics["depth"] = depth_m.compute()
    return metrics, kept


def denormalize(image: Tensor, stats: InputStats = IMAGENET_STATS) -> np.ndarray:
    """Normalised [3, H, W] (with `stats`) -> uint8 [H, W, 3] for pictures."""
    return PreprocessSpec(image.shape[-2], image.shape[-1], *stats).denormalize(
        image.float().cpu().numpy())


def evaluate_split(model: nn.Module, cfg: ExperimentConfig, split: str, device: torch.device
                   ) -> tuple[dict[str, dict[str, Any]], DatasetInfo, int]:
    """(metrics, dataset info, frames) of `model` on split `split` of cfg.data's dataset,
    every label scored, no augmentation."""
    dataset = build_split(cfg.data, split, stats=encoder_input_stats(cfg.model.encoder))
    if len(dataset) == 0:
        raise ConfigError(f"data: split '{split}' of {cfg.data.name} holds no frames")
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, collate_fn=collate,
                        num_workers=cfg.data.num_workers)
    info = dataset.info
    metrics, _ = evaluate(model, loader, len(info.classes), info.classes, device, info.max_depth)
    return metrics, info, len(dataset)


def evaluation_config(model_path: Path, config: Path | None,
                      overrides: list[str]) -> ExperimentConfig:
    """The config to evaluate with: `config` when given, else the run's own (its config.yaml,
    or the checkpoint's), so `mtl-train evaluate runs/x --split test` scores the dataset the
    run trained on; `overrides` (--set) apply last."""
    if config is not None:
        return load_config(config, overrides)
    saved = model_path / "config.yaml" if model_path.is_dir() else None
    if saved is not None and saved.is_file():
        return load_config(saved, overrides)
    if model_path.suffix == ".pt" and model_path.is_file():
        cfg = from_dict(ExperimentConfig, load_checkpoint(model_path).get("config") or {})
        for assignment in overrides:
            apply_override(cfg, assignment)
        cfg.validate()
        return cfg
    return load_config(None, overrides)


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """A metrics file `mtl-train evaluate --json` wrote ({"seg": {...}, "depth": {...}})."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable metrics JSON ({exc})") from exc
    if not isinstance(data, dict) or not set(data) & {"seg", "depth"}:
        raise ConfigError(f"{path}: expected the {{'seg': ..., 'depth': ...}} metrics that "
                          "`mtl-train evaluate --json` writes")
    return data
