"""Evaluation on a dataset split with the shared metrics code (training, CLI and replay)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mtl_perception.core.metrics import DepthMetrics, SegMetrics
from mtl_perception.core.preprocess import PreprocessSpec


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
    for batch in loader:
        out = model(*model_inputs(model, batch, device))
        seg_pred = out["seg"].argmax(1).cpu().numpy() if "seg" in out else None
        depth_pred = out["depth"][:, 0].float().cpu().numpy() if "depth" in out else None
        for i in range(batch["image"].shape[0]):
            if seg_pred is not None and bool(batch["has_seg"][i]):
                seg_m.update(seg_pred[i], batch["seg"][i].numpy())
            if depth_pred is not None and bool(batch["has_depth"][i]):
                depth_m.update(depth_pred[i], batch["depth"][i, 0].numpy())
            if len(kept) < keep:
                kept.append({
                    "rgb": denormalize(batch["image"][i]),
                    "seg": batch["seg"][i].numpy() if bool(batch["has_seg"][i]) else None,
                    "seg_pred": None if seg_pred is None else seg_pred[i],
                    "depth": batch["depth"][i, 0].numpy() if bool(batch["has_depth"][i]) else None,
                    "depth_pred": None if depth_pred is None else depth_pred[i],
                })
    model.train(was_training)
    metrics: dict[str, dict[str, Any]] = {}
    if seg_m.confusion.sum():
        metrics["seg"] = seg_m.compute()
    if depth_m.n:
        metrics["depth"] = depth_m.compute()
    return metrics, kept


def denormalize(image: Tensor) -> np.ndarray:
    """Normalised [3, H, W] -> uint8 [H, W, 3] for pictures."""
    return PreprocessSpec(image.shape[-2], image.shape[-1]).denormalize(
        image.float().cpu().numpy())
