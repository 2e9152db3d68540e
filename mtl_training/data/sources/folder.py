"""Folder datasets: the on-disk layout that `mtl-train synth` and `mtl-train bag extract` write.

Layout (one folder, portable, human-inspectable):
    dataset.json   {"format": FORMAT, "classes", "palette", "max_depth", "frames": [...], "splits"}
    rgb/<id>.png   8-bit RGB
    depth/<id>.png 16-bit millimetres (REP 118), 0 = invalid        (absent when unknown)
    seg/<id>.png   8-bit class ids, 255 = ignore                     (absent when unlabelled)
Each frame entry: {"id", "rgb", "depth"|null, "seg"|null, "K": [9 floats]|null, "meta": {...}}.
dataset.json is written last and atomically, so a folder without it is an unfinished write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl_perception.core.contracts import DatasetInfo, RawFrame
from mtl_perception.core.fileio import write_json_atomic
from mtl_perception.core.labels import palette_for
from mtl_training.config import ConfigError, DataConfig

FORMAT = "mtl_perception.folder/1"
INDEX = "dataset.json"


class DatasetFormatError(ValueError):
    """A dataset folder is missing, unfinished or malformed; the message names the file."""


def write_png(path: Path, array: np.ndarray) -> None:
    """PNG write that fails loudly (cv2.imwrite only returns False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)


def frame_entry(frame_id: str, rgb: str, depth: str | None, seg: str | None,
                K: np.ndarray | None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": frame_id, "rgb": rgb, "depth": depth, "seg": seg,
            "K": None if K is None else [float(v) for v in np.asarray(K).reshape(-1)],
            "meta": meta or {}}


def write_frame(root: Path, frame_id: str, rgb: np.ndarray, depth: np.ndarray | None,
                seg: np.ndarray | None, K: np.ndarray | None,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one frame's files and return its index entry."""
    write_png(root / "rgb" / f"{frame_id}.png", rgb)
    if depth is not None:
        write_png(root / "depth" / f"{frame_id}.png", depth_to_mm(depth))
    if seg is not None:
        write_png(root / "seg" / f"{frame_id}.png", seg.astype(np.uint8))
    return frame_entry(frame_id, f"rgb/{frame_id}.png",
                       None if depth is None else f"depth/{frame_id}.png",
                       None if seg is None else f"seg/{frame_id}.png", K, meta)


def write_index(root: Path, info: DatasetInfo, frames: Iterable[dict[str, Any]],
                splits: dict[str, list[str]] | None = None, extra: dict | None = None) -> None:
    index = {"format": FORMAT, "name": info.name, "classes": info.classes,
             "palette": info.palette, "max_depth": info.max_depth, "frames": list(frames),
             "splits": splits or {}, **(extra or {})}
    write_json_atomic(root / INDEX, index)


def read_index(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / INDEX
    if not root.is_dir():
        raise DatasetFormatError(f"dataset folder not found: {root}")
    if not path.is_file():
        raise DatasetFormatError(f"{path} missing: not a dataset folder, or an unfinished write "
                                 "(run the command that makes it again)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc})") from exc
    if index.get("format") != FORMAT:
        raise DatasetFormatError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    for key in ("classes", "frames"):
        if key not in index:
            raise DatasetFormatError(f"{path}: missing key '{key}'")
    return index


def read_png(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise DatasetFormatError(f"cannot read image {path}")
    return img


class FolderSource:
    """Random access to one split of a folder dataset."""

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root)
        index = read_index(self.root)
        frames = index["frames"]
        splits = index.get("splits") or {}
        if split is not None and split in splits:
            wanted = set(splits[split])
            frames = [f for f in frames if f["id"] in wanted]
        elif split is not None and splits:
            raise DatasetFormatError(f"{self.root / INDEX}: no split '{split}' "
                                     f"(available: {', '.join(sorted(splits))})")
        self.frames = frames
        classes = list(index["classes"])
        try:
            palette = palette_for(classes, index.get("palette"))
        except ValueError as exc:
            raise DatasetFormatError(f"{self.root / INDEX}: {exc}") from exc
        self.info = DatasetInfo(index.get("name", self.root.name), classes, palette,
                                float(index.get("max_depth", 10.0)))

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> RawFrame:
        entry = self.frames[index]
        rgb = cv2.cvtColor(read_png(self.root / entry["rgb"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = None
        if entry.get("depth"):
            depth = read_png(self.root / entry["depth"]).astype(np.float32) * 0.001
        seg = read_png(self.root / entry["seg"]) if entry.get("seg") else None
        K = None if entry.get("K") is None else np.asarray(entry["K"], np.float64).reshape(3, 3)
        meta = {"source": str(self.root), "frame_id": entry["id"], **entry.get("meta", {})}
        return RawFrame(rgb, depth, seg, K, meta)


def splits(cfg: DataConfig) -> tuple[FolderSource, FolderSource]:
    """`data.name: folder`: the index's train and val splits of `data.root`."""
    if not cfg.root:
        raise ConfigError("data.root must name the dataset folder for data.name=folder")
    return FolderSource(cfg.root, "train"), FolderSource(cfg.root, "val")
