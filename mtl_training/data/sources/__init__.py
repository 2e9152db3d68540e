"""Frame sources by `data.name`: each module here turns a DataConfig into (train, val) sources.

Adding a dataset: a module in this folder with a `splits(cfg) -> (train, val)` function, and one
line in SOURCES.
"""

from __future__ import annotations

from collections.abc import Callable

from mtl_perception.core.contracts import FrameSource
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources import folder, synthetic

SOURCES: dict[str, Callable[[DataConfig], tuple[FrameSource, FrameSource]]] = {
    "synthetic": synthetic.splits,
    "folder": folder.splits,
}


def build_sources(cfg: DataConfig) -> tuple[FrameSource, FrameSource]:
    """(train, val) frame sources named by cfg.name."""
    if cfg.name not in SOURCES:
        raise ConfigError(f"Unknown data.name '{cfg.name}' "
                          f"(available: {', '.join(sorted(SOURCES))})")
    return SOURCES[cfg.name](cfg)
