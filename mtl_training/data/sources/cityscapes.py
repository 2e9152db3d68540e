"""Cityscapes (`data.name: cityscapes`): the official tree, 7 categories or 19 classes.

Layout (`data.root`, as the cityscapes-dataset.com packages unpack: leftImg8bit_trainvaltest,
gtFine_trainvaltest, disparity_trainvaltest, camera_trainvaltest):
    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png     8-bit RGB, 2048x1024
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     8-bit label ids 0..33
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png        16-bit, p <= 1 invalid,
                                                                        else (p - 1) / 256 px
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json             extrinsic.baseline (m),
                                                                        intrinsic.fx/fy/u0/v0
Depth = baseline x fx / disparity (each frame's own camera JSON), metres; with
data.depth_target=inverse the depth channel is 1 / depth = disparity / (baseline x fx), in 1/m
(how XTasC-Net and MTAN score Cityscapes). Labels: cityscapes_labels.py (void -> 255).
Splits: official `train` gives our train and val (data.val_fraction held out); the official
`val` (500 frames, labelled) is our test, as in every paper (the official test has no labels).
Frames missing a disparity/camera file have no depth; missing gtFine, no segmentation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.core.contracts import DatasetInfo, RawFrame
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources.cityscapes_labels import (
    CATEGORIES_7,
    CLASSES_19,
    PALETTE_7,
    PALETTE_19,
    label_lut,
)
from mtl_training.data.sources.folder import DatasetFormatError, read_png
from mtl_training.data.sources.holdout import IndexedSource, check_split, official_split_indices

CITYSCAPES_MAX_DEPTH = 100.0  # metres: data.max_depth's default; beyond, disparity < 4.7 px
INVERSE_RANGE = 1.0  # 1/m: depth_target=inverse values lie in (0, 1] (depth >= 1 m; the
#                      closest depth a 16-bit disparity can hold is about 1.85 m)
SUFFIXES = {"rgb": "_leftImg8bit.png", "seg": "_gtFine_labelIds.png",
            "disparity": "_disparity.png", "camera": "_camera.json"}
FOLDERS = {"rgb": "leftImg8bit", "seg": "gtFine", "disparity": "disparity", "camera": "camera"}
log = logging.getLogger("mtl_training.data")


def class_set(num: int | None) -> tuple[list[str], list[list[int]]]:
    """(names, palette) of the 7-category or 19-class set (data.classes)."""
    if num in (None, 7):
        return list(CATEGORIES_7), [list(c) for c in PALETTE_7]
    if num == 19:
        return list(CLASSES_19), [list(c) for c in PALETTE_19]
    raise ConfigError(f"data.classes: Cityscapes has 7 (categories) or 19 classes, got {num}")


@dataclass(frozen=True)
class Camera:
    """The fields of one `_camera.json` that depth needs."""

    baseline: float  # metres
    fx: float
    fy: float
    u0: float
    v0: float

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])


def read_camera(path: Path) -> Camera:
    """extrinsic.baseline and intrinsic.fx/fy/u0/v0, each checked (one line naming the field)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not readable camera JSON ({exc})") from exc
    values = {}
    for section, key in (("extrinsic", "baseline"), ("intrinsic", "fx"), ("intrinsic", "fy"),
                         ("intrinsic", "u0"), ("intrinsic", "v0")):
        v = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            raise DatasetFormatError(f"{path}: {section}.{key} must be a number, got {v!r}")
        if key in ("baseline", "fx", "fy") and v <= 0:
            raise DatasetFormatError(f"{path}: {section}.{key} must be > 0, got {v!r}")
        values[key] = float(v)
    return Camera(**values)


def disparity_pixels(raw: np.ndarray) -> np.ndarray:
    """16-bit disparity PNG values -> disparity in pixels (0 = invalid: p <= 1)."""
    p = raw.astype(np.float32)
    return np.where(p > 1, (p - 1.0) / 256.0, 0.0).astype(np.float32)


def depth_from_disparity(raw: np.ndarray, cam: Camera, inverse: bool = False,
                         max_depth: float = CITYSCAPES_MAX_DEPTH) -> np.ndarray:
    """Metres (or 1/m when `inverse`), 0 = invalid: no disparity, or farther than max_depth."""
    disp = disparity_pixels(raw)
    valid = disp > 0
    with np.errstate(divide="ignore"):
        depth = np.where(valid, cam.baseline * cam.fx / np.where(valid, disp, 1.0), 0.0)
    valid &= depth <= max_depth
    if inverse:
        out = np.where(valid, disp / (cam.baseline * cam.fx), 0.0)
    else:
        out = np.where(valid, depth, 0.0)
    return out.astype(np.float32)


@dataclass(frozen=True)
class FrameFiles:
    frame_id: str
    rgb: Path
    seg: Path | None
    disparity: Path | None
    camera: Path | None


def scan(root: Path, official: str) -> list[FrameFiles]:
    """Every frame of one official split, sorted by city and name."""
    folder = root / FOLDERS["rgb"] / official
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} missing: data.root must hold leftImg8bit/, gtFine/, "
                                 "disparity/ and camera/ (docs/datasets.md, Cityscapes)")
    frames = []
    for rgb in sorted(folder.glob(f"*/*{SUFFIXES['rgb']}")):
        stem, city = rgb.name[: -len(SUFFIXES["rgb"])], rgb.parent.name
        other = {k: root / FOLDERS[k] / official / city / f"{stem}{SUFFIXES[k]}"
                 for k in ("seg", "disparity", "camera")}
        frames.append(FrameFiles(stem, rgb, *(p if p.is_file() else None
                                              for p in other.values())))
    if not frames:
        raise DatasetFormatError(f"{folder}: no <city>/*{SUFFIXES['rgb']} files")
    no_depth = sum(f.disparity is None or f.camera is None for f in frames)
    no_seg = sum(f.seg is None for f in frames)
    if no_depth or no_seg:
        log.warning("cityscapes %s: %d of %d frames lack disparity/camera (no depth), %d lack "
                    "gtFine labelIds (no segmentation)", official, no_depth, len(frames), no_seg)
    return frames


class CityscapesReader:
    """Frames of one official split: RGB, mapped labels, depth from disparity, per-frame K."""

    def __init__(self, files: list[FrameFiles], num_classes: int, inverse: bool,
                 max_depth: float) -> None:
        self.files = files
        self.lut = np.asarray(label_lut(num_classes), np.uint8)
        self.inverse = inverse
        self.max_depth = max_depth

    def has_label(self, i: int, task: str) -> bool:
        f = self.files[i]
        return f.seg is not None if task == "seg" else (f.disparity is not None
                                                        and f.camera is not None)

    def read(self, i: int) -> RawFrame:
        f = self.files[i]
        rgb = cv2.cvtColor(read_png(f.rgb, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        seg = None
        if f.seg is not None:
            ids = read_png(f.seg)
            if ids.ndim != 2 or ids.dtype != np.uint8:
                raise DatasetFormatError(f"{f.seg}: expected 8-bit label ids, got {ids.dtype} "
                                         f"{ids.shape}")
            seg = self.lut[ids]
        depth, K, meta = None, None, {"source": str(f.rgb.parents[2]), "frame_id": f.frame_id}
        if f.camera is not None:
            cam = read_camera(f.camera)
            K = cam.K()
            meta["baseline"] = cam.baseline
        if f.disparity is not None and f.camera is not None:
            raw = read_png(f.disparity)
            if raw.ndim != 2 or raw.dtype != np.uint16:
                raise DatasetFormatError(f"{f.disparity}: expected a 16-bit disparity PNG, got "
                                         f"{raw.dtype} {raw.shape}")
            depth = depth_from_disparity(raw, cam, self.inverse, self.max_depth)
        for name, img in (("gtFine", seg), ("disparity", depth)):
            if img is not None and img.shape != rgb.shape[:2]:
                raise DatasetFormatError(f"{f.frame_id}: {name} is {img.shape}, leftImg8bit "
                                         f"{rgb.shape[:2]}")
        return RawFrame(rgb, depth, seg, K, meta)


def source(cfg: DataConfig, split: str) -> IndexedSource:
    """`data.name: cityscapes`: our train / val (from official train) or test (official val)."""
    check_split(split)
    if not cfg.root:
        raise ConfigError("data.root must name the Cityscapes folder for data.name=cityscapes")
    root = Path(cfg.root)
    classes, palette = class_set(cfg.classes)
    inverse = cfg.depth_target == "inverse"
    max_depth = cfg.max_depth or CITYSCAPES_MAX_DEPTH
    name = f"cityscapes-{len(classes)}" + ("-inverse" if inverse else "")
    info = DatasetInfo(name, classes, palette, INVERSE_RANGE if inverse else float(max_depth))
    use_test = split == "test" or (split == "val" and cfg.val_fraction == 0)
    files = scan(root, "val" if use_test else "train")
    n = len(files)
    # official_split_indices picks within the official train (train/val) or val (our test)
    idx = official_split_indices(cfg, split, np.arange(n), np.arange(n), str(root))
    reader = CityscapesReader(files, len(classes), inverse, float(max_depth))
    return IndexedSource(info, idx, reader.read, [f.frame_id for f in files], split,
                         "inverse" if inverse else "depth", reader.has_label)


def splits(cfg: DataConfig) -> tuple[IndexedSource, IndexedSource]:
    """`data.name: cityscapes`: the (train, val) sources."""
    return source(cfg, "train"), source(cfg, "val")
