"""Per-task losses that honour partial labels.

Each returns a dict of named terms; a task with no label anywhere in the batch contributes no term
(absent from the dict) rather than a zero with a misleading gradient path, so weighting schemes
that look at loss ratios (DWA, GradNorm) never see fake values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_training.data.datasets import IGNORE_INDEX


def masked_cross_entropy(logits: Tensor, target: Tensor, has_seg: Tensor,
                         pixel_weight: Tensor | None = None) -> Tensor | None:
    """Mean CE over labelled pixels of frames with a seg label; None if there are none.

    logits [B, C, H, W], target [B, H, W] (255 = ignore), has_seg [B] bool, pixel_weight [B]
    (e.g. a lower weight for pseudo-labelled frames).
    """
    valid = (target != IGNORE_INDEX) & has_seg.view(-1, 1, 1)
    if not bool(valid.any()):
        return None
    tgt = torch.where(valid, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), tgt, reduction="none")  # [B, H, W]
    w = valid.float()
    if pixel_weight is not None:
        w = w * pixel_weight.view(-1, 1, 1).to(w.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-6)


def masked_l1(pred: Tensor, target: Tensor, has_depth: Tensor) -> Tensor | None:
    """Mean |pred - target| over valid depth pixels (target > 0) of frames with depth; or None.

    pred, target [B, 1, H, W] metres; has_depth [B] bool.
    """
    valid = (target > 0) & has_depth.view(-1, 1, 1, 1)
    if not bool(valid.any()):
        return None
    return (pred.float() - target).abs()[valid].mean()


def seg_pixel_weights(batch: dict, pseudo_weight: float) -> Tensor | None:
    """Per-frame weight: 1 for ground truth, `pseudo_weight` for pseudo-labels."""
    sources = batch.get("seg_source")
    if sources is None or pseudo_weight == 1.0:
        return None
    return torch.tensor([pseudo_weight if s == "pseudo" else 1.0 for s in sources])


def task_losses(pred: dict[str, Tensor], batch: dict, pseudo_weight: float = 1.0
                ) -> dict[str, Tensor]:
    """{task: loss} for the tasks that the model predicts and the batch labels."""
    terms: dict[str, Tensor] = {}
    if "seg" in pred:
        w = seg_pixel_weights(batch, pseudo_weight)
        if w is not None:
            w = w.to(pred["seg"].device)
        loss = masked_cross_entropy(pred["seg"], batch["seg"], batch["has_seg"].to(pred["seg"].device), w)
        if loss is not None:
            terms["seg"] = loss
    if "depth" in pred:
        loss = masked_l1(pred["depth"], batch["depth"], batch["has_depth"].to(pred["depth"].device))
        if loss is not None:
            terms["depth"] = loss
    return terms
