"""Which teacher predictions become labels: confidence thresholds for seg, consistency for depth.

A global tau starves rare classes (a teacher is rarely as sure about a ball as about the floor),
so the per-class mode lowers each class's threshold to a quantile of its own confidences, never
above tau. A depth regressor has no softmax: a pixel is kept where the prediction agrees with
the prediction on the mirrored frame (|d - d_flip| <= rel_tol * d), a cheap stand-in for
confidence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtl_perception.core.contracts import IGNORE_INDEX

CONF_BINS = 10_000  # per-class mode: confidence histogram resolution (thresholds to 1e-4)
MODES = ("global", "per_class")


def seg_confidence(logits: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """logits [C, H, W] -> (confidence float32 [H, W], argmax int64 [H, W])."""
    conf, arg = torch.softmax(logits.float(), dim=0).max(dim=0)
    return conf.cpu().numpy(), arg.cpu().numpy()


def apply_thresholds(conf: np.ndarray, arg: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: the argmax where conf >= thresholds[argmax], else 255."""
    keep = conf >= np.asarray(thresholds, np.float32)[arg]
    return np.where(keep, arg, IGNORE_INDEX).astype(np.uint8)


def confidence_histogram(conf: np.ndarray, arg: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, CONF_BINS] counts of pixel confidences per predicted class."""
    bins = np.minimum((conf.reshape(-1) * CONF_BINS).astype(np.int64), CONF_BINS - 1)
    flat = arg.reshape(-1).astype(np.int64) * CONF_BINS + bins
    return np.bincount(flat, minlength=num_classes * CONF_BINS).reshape(num_classes, CONF_BINS)


def class_thresholds(num_classes: int, tau: float, mode: str = "global",
                     hist: np.ndarray | None = None, quantile: float = 0.5) -> np.ndarray:
    """Per-class confidence thresholds [C].

    global: tau for every class. per_class: min(tau, q-quantile of the confidences of the pixels
    predicted as that class), with the quantile taken at the lower edge of its histogram bin, so
    at least a (1 - q) share of every predicted class survives; a class never predicted keeps tau.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown pseudo-label mode '{mode}' (available: {', '.join(MODES)})")
    thr = np.full(num_classes, tau, dtype=np.float64)
    if mode == "global":
        return thr
    if hist is None:
        raise ValueError("per_class mode needs the teacher's confidence histogram")
    for c in range(num_classes):
        total = hist[c].sum()
        if total == 0:
            continue
        b = int(np.searchsorted(np.cumsum(hist[c]), quantile * total, side="left"))
        thr[c] = min(tau, b / CONF_BINS)
    return thr


def depth_keep(pred: np.ndarray, pred_flip: np.ndarray, max_depth: float,
               rel_tol: float) -> np.ndarray:
    """Validity rule for pseudo-depth: inside the range and flip-consistent within rel_tol."""
    inside = (pred > 1e-3) & (pred < 0.99 * max_depth)  # a saturated sigmoid is no measurement
    return inside & (np.abs(pred - pred_flip) <= rel_tol * pred)
