"""Pictures and tables people read: colourised labels and depth, montages, markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from mtl_perception.core.labels import colorize_labels


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
