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


MIN_CALIBRATION_PIXELS = 1000  # held-out pixels a class needs before its precision is read


def precision_thresholds(all_hist: np.ndarray, correct_hist: np.ndarray, tau: float,
                         target_precision: float,
                         min_pixels: int = MIN_CALIBRATION_PIXELS
                         ) -> tuple[np.ndarray, list[dict[str, float | str | None]]]:
    """Per-class thresholds read off labelled frames the teacher never trained on.

    all_hist / correct_hist [C, CONF_BINS]: confidences of the held-out pixels predicted as each
    class, all of them and those the ground truth agrees with. A class's threshold is the lowest
    occupied bin whose kept pixels (confidence >= it) reach `target_precision` on those frames: as
    many pixels as that precision allows. A class the teacher predicts on fewer than
    `min_pixels` held-out pixels keeps `tau` (too few to read a precision); one that never
    reaches the target keeps nothing (threshold 1.01). Returns the thresholds and, per class,
    the rule used with the held-out precision and coverage at its threshold.
    """
    num_classes = all_hist.shape[0]
    thr = np.full(num_classes, tau, dtype=np.float64)
    report: list[dict[str, float | str | None]] = []
    for c in range(num_classes):
        total = int(all_hist[c].sum())
        if total < min_pixels:
            report.append({"rule": "tau (too few held-out pixels)", "pixels": total,
                           "precision": None, "coverage": None})
            continue
        kept = np.cumsum(all_hist[c][::-1])[::-1]  # pixels with confidence >= bin b
        right = np.cumsum(correct_hist[c][::-1])[::-1]
        precision = np.where(kept > 0, right / np.maximum(kept, 1), 0.0)
        # only bins holding pixels: an empty stretch below one would admit target pixels of
        # confidences the held-out frames never showed
        ok = np.flatnonzero((precision >= target_precision) & (all_hist[c] > 0))
        if ok.size == 0:
            thr[c] = 1.01
            report.append({"rule": "none kept (target precision never reached)",
                           "pixels": total, "precision": float(precision[0]), "coverage": 0.0})
            continue
        b = int(ok[0])
        thr[c] = b / CONF_BINS
        report.append({"rule": "calibrated", "pixels": total, "precision": float(precision[b]),
                       "coverage": float(kept[b] / total)})
    return thr, report


def depth_keep(pred: np.ndarray, pred_flip: np.ndarray, max_depth: float,
               rel_tol: float) -> np.ndarray:
    """Validity rule for pseudo-depth: inside the range and flip-consistent within rel_tol."""
    inside = (pred > 1e-3) & (pred < 0.99 * max_depth)  # a saturated sigmoid is no measurement
    return inside & (np.abs(pred - pred_flip) <= rel_tol * pred)


# Calibrated pseudo-depth filter. Flip agreement alone is passed by a near-constant prediction
# (a constant agrees with its mirror everywhere). The calibrated rule keeps flip agreement as the
# ranking signal but lets the teacher's own held-out frames, which carry sensor depth, decide how
# much of that ranking to trust: a pixel is kept only where its disagreement is at most the
# largest s* at which the held-out pixels with disagreement <= s* have mean relative error <=
# the target. A constant teacher has one disagreement value (0) and a large error there, so it
# keeps nothing; a good teacher keeps the share of pixels its measured error allows.
DISAGREEMENT_BINS = 4096
DISAGREEMENT_MAX = 1.0  # relative disagreement above this all lands in the last bin


def flip_disagreement(pred: np.ndarray, pred_flip: np.ndarray) -> np.ndarray:
    """|d - d_flip| / d per pixel (inf where d <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(pred - pred_flip) / pred
    return np.where(pred > 0, rel, np.inf).astype(np.float32)


class DepthCalibration:
    """Streaming histogram of (flip disagreement, relative error) over held-out labelled pixels."""

    def __init__(self, bins: int = DISAGREEMENT_BINS) -> None:
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.err_sum = np.zeros(bins, np.float64)

    def _bin(self, signal: np.ndarray) -> np.ndarray:
        scaled = np.nan_to_num(signal, nan=np.inf, posinf=np.inf) / DISAGREEMENT_MAX * self.bins
        return np.clip(scaled, 0, self.bins - 1).astype(np.int64)

    def add(self, signal: np.ndarray, pred: np.ndarray, target: np.ndarray,
            valid: np.ndarray) -> None:
        """Accumulate pixels where `valid` (sensor depth present, prediction in range)."""
        v = valid & (target > 0)
        b = self._bin(signal[v])
        rel_err = np.abs(pred[v] - target[v]) / target[v]
        self.count += np.bincount(b, minlength=self.bins)
        self.err_sum += np.bincount(b, weights=rel_err, minlength=self.bins)

    def threshold(self, target_rel_err: float) -> float:
        """Largest disagreement s* whose cumulative kept mean error is <= target; -1 = keep
        nothing (no prefix of the ranking is accurate enough, or nothing was measured)."""
        n = np.cumsum(self.count)
        e = np.cumsum(self.err_sum)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, e / np.maximum(n, 1), np.inf)
        ok = np.flatnonzero((n > 0) & (mean <= target_rel_err))
        if ok.size == 0:
            return -1.0
        return float((ok[-1] + 1) / self.bins * DISAGREEMENT_MAX)

    def kept_stats(self, threshold: float) -> dict[str, float]:
        """Coverage and mean relative error of held-out pixels the threshold keeps."""
        total = int(self.count.sum())
        if threshold < 0 or total == 0:
            return {"coverage": 0.0, "rel_err": float("nan"), "pixels": total}
        last = min(self.bins, round(threshold / DISAGREEMENT_MAX * self.bins))
        n = int(self.count[:last].sum())
        err = float(self.err_sum[:last].sum() / n) if n else float("nan")
        return {"coverage": n / total, "rel_err": err, "pixels": total}


def calibrated_depth_keep(pred: np.ndarray, pred_flip: np.ndarray, max_depth: float,
                          threshold: float) -> np.ndarray:
    """Keep in-range pixels whose flip disagreement is within the calibrated threshold."""
    inside = (pred > 1e-3) & (pred < 0.99 * max_depth)
    return inside & (flip_disagreement(pred, pred_flip) <= threshold)
