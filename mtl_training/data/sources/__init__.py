"""Frame sources by `data.name`: each module here turns a DataConfig and a split name
(`train`, `val`, `test`) into a FrameSource.

Adding a dataset: a module in this folder with a `source(cfg, split) -> FrameSource` function
(and `splits(cfg) -> (train, val)`), and one line in SOURCES. `val` is what chooses best.pt and
must never be `test` without saying so (holdout.py holds the shared rule).
"""

from __future__ import annotations

from collections.abc import Callable

from mtl_perception.core.contracts import FrameSource
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources import cityscapes, folder, nyuv2, synthetic
from mtl_training.data.sources.holdout import SPLITS, check_split

SOURCES: dict[str, Callable[[DataConfig, str], FrameSource]] = {
    "synthetic": synthetic.source,
    "folder": folder.source,
    "nyuv2": nyuv2.source,
    "cityscapes": cityscapes.source,
}

__all__ = ["SOURCES", "SPLITS", "build_source", "build_sources"]


def build_source(cfg: DataConfig, split: str) -> FrameSource:
    """The frame source of one split (`train`, `val`, `test`) of the dataset cfg.name names."""
    if cfg.name not in SOURCES:
        raise ConfigError(f"Unknown data.name '{cfg.name}' "
                          f"(available: {', '.join(sorted(SOURCES))})")
    check_split(split)
    return SOURCES[cfg.name](cfg, split)


def build_sources(cfg: DataConfig) -> tuple[FrameSource, FrameSource]:
    """(train, val) frame sources named by cfg.name."""
    return build_source(cfg, "train"), build_source(cfg, "val")
