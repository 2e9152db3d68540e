"""Class ids -> colours: the one palette rule for datasets, artifacts, the node and pictures.

Class names and their palette belong to a dataset and travel into the artifact; a dataset that
names classes without colours gets `fallback_palette`, the same colours everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX


def fallback_palette(n: int) -> list[list[int]]:
    """n distinct-looking RGB colours (multiplicative hash per channel), stable across runs."""
    return [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(n)]


def palette_for(classes: Sequence[str],
                palette: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """The palette for `classes`: the given one (checked), else the fallback."""
    if not palette:
        return fallback_palette(len(classes))
    colours = [[int(v) for v in c] for c in palette]
    if len(colours) < len(classes):
        raise ValueError(f"palette has {len(colours)} colours for {len(classes)} classes")
    for i, c in enumerate(colours):
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise ValueError(f"palette[{i}] must be 3 values in 0..255, got {c}")
    return colours


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """uint8 [max(256, n), 3] lookup table: ids beyond the palette and IGNORE_INDEX are black."""
    lut = np.zeros((max(256, len(palette)), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    if len(palette) <= IGNORE_INDEX:
        lut[IGNORE_INDEX] = 0
    return lut


def colorize_labels(labels: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
    """[H, W] class ids -> [H, W, 3] uint8 RGB (written into `out` when given)."""
    lut = palette if isinstance(palette, np.ndarray) else palette_lut(palette)
    return np.take(lut, labels, axis=0, mode="clip", out=out)
