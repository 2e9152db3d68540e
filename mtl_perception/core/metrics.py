"""Stateful metrics (update / compute / reset), shared by training, evaluation and bag replay.

Conventions (docs/datasets.md compares them with LibMTL, mtan and xtask_mt):
- Segmentation: one confusion matrix over the whole set; mIoU = mean IoU over the classes present
  in the ground truth or the prediction, pixel accuracy = correct / labelled pixels (ignore 255
  excluded), per-class IoU. LibMTL computes the same. `miou_per_image` is mtan / xtask_mt's
  `compute_miou` (each image's mean IoU over the classes in its prediction or ground truth,
  averaged over images), reported beside it so their tables can be compared.
- Depth, per pixel over the whole set, valid where ground truth > min_depth (and <= max_depth):
  absolute error, relative error |p - t| / t, RMSE, delta < 1.25 (max(p/t, t/p) < 1.25).
  LibMTL / mtan / xtask_mt average per-batch pixel means instead (equal when every batch holds
  as many valid pixels).
- Delta_m compares a model against a baseline (METHOD.md B).
"""

from __future__ import annotations

import math

import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX


class SegMetrics:
    def __init__(self, num_classes: int, class_names: list[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.image_miou_sum = 0.0  # mtan's per-image mIoU, summed over scored images
        self.images = 0
        self.out_of_range = 0  # ground-truth pixels neither a class nor ignore (not scored)
        self.out_of_range_ids: set[int] = set()

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred, target: integer class maps of equal shape (one image); 255 in target is
        ignored; other target ids outside the classes are counted in `out_of_range`."""
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        target = np.asarray(target).reshape(-1).astype(np.int64)
        valid = (target != IGNORE_INDEX) & (target >= 0) & (target < self.num_classes)
        bad = ~valid & (target != IGNORE_INDEX)
        if bad.any():
            self.out_of_range += int(bad.sum())
            self.out_of_range_ids.update(int(v) for v in np.unique(target[bad])[:16])
        pred, target = pred[valid], target[valid]
        pred = np.clip(pred, 0, self.num_classes - 1)
        cm = np.bincount(target * self.num_classes + pred, minlength=self.num_classes ** 2
                         ).reshape(self.num_classes, self.num_classes)
        self.confusion += cm
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        if (union > 0).any():
            self.image_miou_sum += float((tp[union > 0] / union[union > 0]).mean())
            self.images += 1

    def compute(self) -> dict[str, float | dict[str, float]]:
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        gt = cm.sum(axis=1)
        pr = cm.sum(axis=0)
        union = gt + pr - tp
        present = union > 0
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
        total = cm.sum()
        return {
            "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
            "pixel_acc": float(tp.sum() / total) if total else float("nan"),
            "miou_per_image": self.image_miou_sum / self.images if self.images else float("nan"),
            "per_class_iou": {n: float(v) for n, v in zip(self.class_names, iou, strict=True)
                              if not math.isnan(v)},
        }


class DepthMetrics:
    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.sq_sum = 0.0
        self.delta1 = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred, target: metres, equal shape; target <= min_depth (or > max_depth) is invalid."""
        pred = np.asarray(pred, dtype=np.float64).reshape(-1)
        target = np.asarray(target, dtype=np.float64).reshape(-1)
        valid = np.isfinite(target) & (target > self.min_depth)
        if self.max_depth is not None:
            valid &= target <= self.max_depth
        p, t = pred[valid], target[valid]
        p = np.where(np.isfinite(p), p, 0.0)
        err = p - t
        self.n += t.size
        self.abs_sum += float(np.abs(err).sum())
        self.rel_sum += float((np.abs(err) / t).sum())
        self.sq_sum += float((err ** 2).sum())
        ratio = np.maximum(p / t, t / np.maximum(p, 1e-9))
        self.delta1 += int((ratio < 1.25).sum())

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {k: float("nan") for k in ("abs_err", "rel_err", "rmse", "delta1")}
        return {
            "abs_err": self.abs_sum / self.n,
            "rel_err": self.rel_sum / self.n,
            "rmse": math.sqrt(self.sq_sum / self.n),
            "delta1": self.delta1 / self.n,
        }


# direction of each headline metric: +1 higher is better, -1 lower is better
METRIC_DIRECTION: dict[str, int] = {
    "miou": 1, "pixel_acc": 1, "delta1": 1, "abs_err": -1, "rel_err": -1, "rmse": -1,
}


def delta_m(model: dict[str, float], baseline: dict[str, float],
            keys: tuple[str, ...] = ("miou", "pixel_acc", "abs_err", "rel_err")) -> float:
    """Mean relative improvement over the baseline, in percent (METHOD.md B).

    Delta_m = 100 / T * sum_i (-1)^{l_i} (M_m,i - M_b,i) / M_b,i, l_i = 1 where lower is better.
    """
    terms = []
    for k in keys:
        if k in model and k in baseline and baseline[k]:
            sign = METRIC_DIRECTION[k]
            terms.append(sign * (model[k] - baseline[k]) / baseline[k])
    if not terms:
        raise ValueError("no common metric between model and baseline")
    return 100.0 * float(np.mean(terms))


def flatten(metrics: dict[str, dict]) -> dict[str, float]:
    """{'seg': {'miou': ..}, 'depth': {...}} -> {'miou': .., 'abs_err': ..} (scalars only)."""
    out: dict[str, float] = {}
    for group in metrics.values():
        for k, v in group.items():
            if isinstance(v, (int, float)):
                out[k] = float(v)
    return out
