"""Pictures and tables people read: colourised labels and depth, montages, markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from mtl_perception.core.labels import colorize_labels
from mtl_perception.core.metrics import delta_m, flatten


def colorize_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """[H, W] metres -> [H, W, 3] uint8 RGB (turbo colour map; invalid = black)."""
    d = np.clip(np.nan_to_num(depth, nan=0.0) / max(max_depth, 1e-6), 0, 1)
    img = cv2.applyColorMap((d * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img[~(depth > 0)] = 0
    return img


def montage(rows: list[dict[str, np.ndarray]], palette: Sequence[Sequence[int]],
            max_depth: float) -> np.ndarray:
    """One row per frame: RGB | true seg | predicted seg | true depth | predicted depth.

    Each row dict has 'rgb' [H, W, 3] uint8 and optionally 'seg', 'seg_pred', 'depth',
    'depth_pred'; a missing panel is grey, so partially labelled frames still line up.
    """
    lines = []
    for r in rows:
        h, w = r["rgb"].shape[:2]
        grey = np.full((h, w, 3), 64, np.uint8)
        panels = [r["rgb"]]
        for key in ("seg", "seg_pred"):
            panels.append(colorize_labels(r[key], palette) if r.get(key) is not None else grey)
        for key in ("depth", "depth_pred"):
            panels.append(colorize_depth(r[key], max_depth) if r.get(key) is not None else grey)
        sep = np.full((h, 2, 3), 255, np.uint8)
        line = []
        for p in panels:
            line += [p, sep]
        lines.append(np.concatenate(line[:-1], axis=1))
        lines.append(np.full((2, lines[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(lines[:-1], axis=0)


def save_rgb_png(path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def markdown_table(rows: list[dict[str, object]], columns: list[str] | None = None,
                   floatfmt: str = ".4f", cell: Callable[[object], str] | None = None) -> str:
    """Rows of dicts -> a markdown table; columns default to the union of keys, in order seen."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]

    def fmt(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    show = cell or fmt
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(show(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


CONVENTIONS = (
    "Conventions: segmentation from one confusion matrix over the whole split (mIoU over the "
    "classes present in ground truth or prediction; pixel accuracy over labelled pixels; 255 "
    "ignored), as LibMTL; `mIoU/image` is mtan / xtask_mt's per-image mean. Depth errors are "
    "per-pixel means over the whole split, over valid pixels only (ground truth > 0.001 and <= "
    "the dataset's max_depth); mtan / LibMTL / xtask_mt average per-batch means. delta1 = share "
    "of pixels with max(p/t, t/p) < 1.25. Delta_m = mean over (mIoU, pix acc, abs err, rel err) "
    "of +-(M - M_base) / M_base, in %.")


def metrics_report(metrics: dict[str, dict], title: str, depth_unit: str = "m",
                   baseline: dict[str, dict] | None = None) -> str:
    """Markdown: both metric families (13-class: mIoU, pix acc, abs/rel err; 40-class: mIoU,
    RMSE), delta1, per-image mIoU, Delta_m against `baseline`, per-class IoU, the conventions."""
    from_seg, from_depth = metrics.get("seg", {}), metrics.get("depth", {})

    def v(group: dict, key: str, fmt: str = ".4f") -> str:
        x = group.get(key)
        return format(x, fmt) if isinstance(x, (int, float)) else "-"

    lines = [f"## {title}", "",
             "| family | mIoU | pix acc | abs err | rel err | RMSE | delta<1.25 | mIoU/image |",
             "|---|---|---|---|---|---|---|---|",
             f"| 13-class (MTAN, XTasC-Net): mIoU, pix acc, abs/rel err | {v(from_seg, 'miou')} "
             f"| {v(from_seg, 'pixel_acc')} | {v(from_depth, 'abs_err')} "
             f"| {v(from_depth, 'rel_err')} | | | |",
             f"| 40-class (Erkent): mIoU, RMSE | {v(from_seg, 'miou')} | | | "
             f"| {v(from_depth, 'rmse')} | | |",
             f"| also | | | | | {v(from_depth, 'rmse')} | {v(from_depth, 'delta1')} "
             f"| {v(from_seg, 'miou_per_image')} |", "",
             f"Depth errors in {depth_unit}."]
    if baseline is not None:
        dm = delta_m(flatten(metrics), flatten(baseline))
        lines.append(f"Delta_m against the baseline: {dm:+.2f} %")
    per_class = from_seg.get("per_class_iou") or {}
    if per_class:
        lines += ["", markdown_table([{"class": k, "IoU": float(x)} for k, x in per_class.items()])]
    lines += ["", CONVENTIONS]
    return "\n".join(lines) + "\n"
