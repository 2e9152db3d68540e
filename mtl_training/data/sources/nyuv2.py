"""NYUv2 (`data.name: nyuv2`): the two layouts users hold, 13 or 40 classes.

Layout `mat` (the official release, Silberman et al. ECCV 2012), `data.root` holding:
    nyu_depth_v2_labeled.mat  MATLAB v7.3 (HDF5), 1449 frames. As h5py sees MATLAB's column-major
                              arrays: images uint8 [N, 3, 640, 480], depths float32 [N, 640, 480]
                              (metres, in-painted), labels uint16 [N, 640, 480] (0 = unlabelled,
                              1..894); frame i's RGB is images[i].transpose(2, 1, 0), [480, 640, 3]
    splits.mat                trainNdxs [795, 1], testNdxs [654, 1]: 1-based frame numbers
    classMapping40.mat        mapClass [1, 894]: raw class -> 1..40 (Gupta et al.; see
                              nyuv2_classes.py); 13 classes go through 40 -> 13 from there
Layout `npy` (MTAN / LibMTL preprocessing, 288x384), `data.root` holding:
    train/image/<i>.npy  float [288, 384, 3] in 0..1      (795 frames, i = 0..)
    train/label/<i>.npy  float [288, 384], 13 classes 0..12, -1 = ignore
    train/depth/<i>.npy  float [288, 384, 1] metres, 0 = invalid
    val/...              the same for the 654 official test frames (MTAN calls them val)
Splits: train = official train minus data.val_fraction held out (val), test = official test.
Intrinsics: the `mat` layout carries the toolbox's colour camera (camera_params.m); the `npy`
layout has none (its crop/resize is not recorded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX, DatasetInfo, RawFrame
from mtl_perception.core.labels import fallback_palette
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources.folder import DatasetFormatError
from mtl_training.data.sources.holdout import IndexedSource, check_split, official_split_indices
from mtl_training.data.sources.nyuv2_classes import (
    NYU13_CLASSES,
    NYU13_PALETTE,
    NYU40_CLASSES,
    NYU40_TO_13,
)

LABELED_MAT = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"
MAPPING_MAT = "classMapping40.mat"
NYU_MAX_DEPTH = 10.0  # metres: the Kinect v1 range the in-painted depths stay within
# colour camera of the toolbox's camera_params.m (fx_rgb, fy_rgb, cx_rgb, cy_rgb), 640x480
NYU_K = np.array([[5.1885790117450188e02, 0.0, 3.2558244941119034e02],
                  [0.0, 5.1946961112127485e02, 2.5373616633400465e02],
                  [0.0, 0.0, 1.0]])
NUM_RAW_CLASSES = 894


def nyu_intrinsics(width: int, height: int) -> np.ndarray:
    """NYU_K for frames of width x height (the release is 640 x 480: NYU_K itself)."""
    K = NYU_K.copy()
    K[0] *= width / 640.0
    K[1] *= height / 480.0
    return K


def class_set(num: int | None) -> tuple[list[str], list[list[int]]]:
    """(names, palette) of the 13- or 40-class NYUv2 label set (data.classes)."""
    if num in (None, 13):
        return list(NYU13_CLASSES), [list(c) for c in NYU13_PALETTE]
    if num == 40:
        return list(NYU40_CLASSES), fallback_palette(40)
    raise ConfigError(f"data.classes: NYUv2 has 13 or 40 classes, got {num}")


def raw_to_class_lut(map_class: np.ndarray, num: int | None, where: Path) -> np.ndarray:
    """uint8 [895] raw label (0..894) -> class id (255 ignore), from classMapping40's mapClass."""
    m = np.asarray(map_class).reshape(-1)
    if m.size != NUM_RAW_CLASSES or not np.all((m >= 0) & (m <= 40)) or np.any(m != np.round(m)):
        raise DatasetFormatError(f"{where}: mapClass must hold {NUM_RAW_CLASSES} integers in "
                                 f"0..40, got {m.size} values in {m.min()}..{m.max()}")
    m = m.astype(np.int64)
    to40 = np.where(m > 0, m - 1, IGNORE_INDEX)  # raw 1..894 -> 0..39
    if num == 40:
        cls = to40
    else:
        lut13 = np.asarray(NYU40_TO_13, np.int64)
        cls = np.where(to40 == IGNORE_INDEX, IGNORE_INDEX, lut13[np.minimum(to40, 39)])
    return np.concatenate([[IGNORE_INDEX], cls]).astype(np.uint8)


def _loadmat(path: Path) -> dict[str, Any]:
    """A MATLAB v5 file (splits.mat, classMapping40.mat) as arrays; loadmat runs no code."""
    from scipy.io import loadmat  # lazy: scipy is the `train` extra, needed for this layout only
    if not path.is_file():
        raise DatasetFormatError(f"{path} missing (download it with the dataset: "
                                 "docs/datasets.md, NYUv2)")
    try:
        return loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DatasetFormatError(f"{path}: not a readable MATLAB file ({exc})") from exc


def read_official_splits(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, test) frame indices from splits.mat (1-based trainNdxs / testNdxs)."""
    mat = _loadmat(path)
    out = []
    for key in ("trainNdxs", "testNdxs"):
        if key not in mat:
            raise DatasetFormatError(f"{path}: missing variable '{key}'")
        idx = np.asarray(mat[key]).reshape(-1).astype(np.int64)
        if idx.size == 0 or idx.min() < 1 or idx.max() > n:
            raise DatasetFormatError(f"{path}: {key} must be 1-based frame numbers in 1..{n}")
        out.append(idx - 1)
    if np.intersect1d(out[0], out[1]).size:
        raise DatasetFormatError(f"{path}: trainNdxs and testNdxs overlap")
    return out[0], out[1]


class LabeledMat:
    """Lazy reader of nyu_depth_v2_labeled.mat (one HDF5 handle per process: safe with forked
    DataLoader workers)."""

    def __init__(self, path: Path, lut: np.ndarray, classes: list[str]) -> None:
        import h5py  # lazy: h5py is the `train` extra, needed for this layout only
        self.path = path
        if not path.is_file():
            raise DatasetFormatError(f"{path} missing (data.root must hold {LABELED_MAT}, "
                                     f"{SPLITS_MAT} and {MAPPING_MAT}: docs/datasets.md)")
        if not h5py.is_hdf5(str(path)):
            raise DatasetFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file; the official "
                                     f"{LABELED_MAT} is one")
        self.lut = lut
        self.classes = classes
        self._file: Any = None
        self._pid = -1
        f = self._h5()
        shapes = {}
        for key in ("images", "depths", "labels"):
            if key not in f:
                raise DatasetFormatError(f"{path}: missing dataset '{key}'")
            shapes[key] = f[key].shape
        n = shapes["images"][0]
        if (len(shapes["images"]) != 4 or shapes["images"][1] != 3
                or shapes["depths"] != (n, *shapes["images"][2:])
                or shapes["labels"] != shapes["depths"]):
            raise DatasetFormatError(f"{path}: expected images [N, 3, W, H], depths and labels "
                                     f"[N, W, H], got {shapes}")
        self.n = int(n)

    def _h5(self) -> Any:
        import h5py  # lazy: see __init__
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(str(self.path), "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def read(self, i: int) -> RawFrame:
        f = self._h5()
        rgb = np.ascontiguousarray(np.asarray(f["images"][i]).transpose(2, 1, 0))  # [H, W, 3]
        depth = np.ascontiguousarray(np.asarray(f["depths"][i], np.float32).T)  # [H, W] metres
        raw = np.asarray(f["labels"][i]).T.astype(np.int64)  # [H, W] 0..894
        if raw.size and (raw.min() < 0 or raw.max() > NUM_RAW_CLASSES):
            raise DatasetFormatError(f"{self.path}: labels of frame {i + 1} hold ids outside "
                                     f"0..{NUM_RAW_CLASSES}")
        seg = self.lut[raw]
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        return RawFrame(rgb, depth, seg, nyu_intrinsics(rgb.shape[1], rgb.shape[0]),
                        {"source": str(self.path), "frame_id": f"{i + 1:04d}"})


class NpyFolder:
    """Reader of MTAN's preprocessed <split>/{image,label,depth}/<i>.npy folders."""

    def __init__(self, root: Path, part: str, num_classes: int) -> None:
        self.dir = root / part
        for sub in ("image", "label", "depth"):
            if not (self.dir / sub).is_dir():
                raise DatasetFormatError(f"{self.dir / sub} missing (MTAN layout: "
                                         f"{part}/image, {part}/label, {part}/depth)")
        self.n = len(list((self.dir / "image").glob("*.npy")))
        for i in (0, self.n - 1):
            if self.n and not (self.dir / "image" / f"{i}.npy").is_file():
                raise DatasetFormatError(f"{self.dir / 'image'}: files must be 0.npy .. "
                                         f"{self.n - 1}.npy")
        self.num_classes = num_classes

    def _load(self, kind: str, i: int) -> np.ndarray:
        path = self.dir / kind / f"{i}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(f"cannot read {path} ({exc})") from exc

    def read(self, i: int) -> RawFrame:
        image = self._load("image", i)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DatasetFormatError(f"{self.dir / 'image' / f'{i}.npy'}: expected [H, W, 3], "
                                     f"got {image.shape}")
        rgb = image if image.dtype == np.uint8 else np.clip(np.round(image * 255), 0, 255
                                                             ).astype(np.uint8)
        label = self._load("label", i)
        path = self.dir / "label" / f"{i}.npy"
        lab = np.asarray(label, np.float64)
        if lab.shape != rgb.shape[:2] or np.any(lab != np.round(lab)):
            raise DatasetFormatError(f"{path}: expected integer class ids [H, W] "
                                     f"{rgb.shape[:2]}, got {label.dtype} {label.shape}")
        bad = np.unique(lab[(lab >= self.num_classes) | (lab < -1)])
        if bad.size:
            raise DatasetFormatError(f"{path}: label ids {bad[:8].astype(int).tolist()} outside "
                                     f"0..{self.num_classes - 1} (-1 = ignore)")
        seg = np.where(lab < 0, IGNORE_INDEX, lab).astype(np.uint8)
        depth = np.asarray(self._load("depth", i), np.float32)
        depth = depth[..., 0] if depth.ndim == 3 else depth
        if depth.shape != rgb.shape[:2]:
            raise DatasetFormatError(f"{self.dir / 'depth' / f'{i}.npy'}: expected [H, W(, 1)] "
                                     f"{rgb.shape[:2]}, got {depth.shape}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        return RawFrame(rgb, depth, seg, None,
                        {"source": str(self.dir), "frame_id": f"{self.dir.name}_{i:04d}"})


def layout(root: Path) -> str:
    """`mat` or `npy`, from what data.root holds."""
    if (root / LABELED_MAT).is_file():
        return "mat"
    if (root / "train" / "image").is_dir():
        return "npy"
    raise DatasetFormatError(f"{root}: neither {LABELED_MAT} (official release) nor "
                             "train/image/*.npy (MTAN preprocessing): see docs/datasets.md")


def _with_max_depth(read: Callable[[int], RawFrame],
                    cap: float | None) -> Callable[[int], RawFrame]:
    if cap is None:
        return read

    def capped(i: int) -> RawFrame:
        f = read(i)
        if f.depth is not None:
            f.depth[f.depth > cap] = 0.0
        return f
    return capped


def _always(index: int, task: str) -> bool:
    """Every NYUv2 frame of both layouts carries segmentation and depth."""
    return True


def source(cfg: DataConfig, split: str) -> IndexedSource:
    """`data.name: nyuv2`: split train / val / test of the layout in data.root."""
    check_split(split)
    if not cfg.root:
        raise ConfigError("data.root must name the NYUv2 folder for data.name=nyuv2")
    if cfg.depth_target != "depth":
        raise ConfigError("data.depth_target: NYUv2 is scored on metric depth; use 'depth'")
    root = Path(cfg.root)
    classes, palette = class_set(cfg.classes)
    max_depth = cfg.max_depth or NYU_MAX_DEPTH
    info = DatasetInfo(f"nyuv2-{len(classes)}", classes, palette, float(max_depth))
    if layout(root) == "mat":
        mapping = _loadmat(root / MAPPING_MAT)
        if "mapClass" not in mapping:
            raise DatasetFormatError(f"{root / MAPPING_MAT}: missing variable 'mapClass'")
        lut = raw_to_class_lut(mapping["mapClass"], len(classes), root / MAPPING_MAT)
        mat = LabeledMat(root / LABELED_MAT, lut, classes)
        train, test = read_official_splits(root / SPLITS_MAT, mat.n)
        idx = official_split_indices(cfg, split, train, test, str(root))
        ids = [f"{i + 1:04d}" for i in range(mat.n)]
        return IndexedSource(info, idx, _with_max_depth(mat.read, cfg.max_depth), ids, split,
                             has_label=_always)
    if len(classes) != 13:
        raise ConfigError("data.classes: the MTAN .npy layout holds 13-class labels; use 13 "
                          f"(got {len(classes)}), or the official .mat for 40")
    parts = {"train": NpyFolder(root, "train", 13), "test": NpyFolder(root, "val", 13)}
    train, test = np.arange(parts["train"].n), np.arange(parts["test"].n)
    part = parts["test" if split == "test" or (split == "val" and cfg.val_fraction == 0)
                 else "train"]
    idx = official_split_indices(cfg, split, train, test, str(root))
    ids = [f"{part.dir.name}_{i:04d}" for i in range(part.n)]
    return IndexedSource(info, idx, _with_max_depth(part.read, cfg.max_depth), ids, split,
                         has_label=_always)


def splits(cfg: DataConfig) -> tuple[IndexedSource, IndexedSource]:
    """`data.name: nyuv2`: the (train, val) sources."""
    return source(cfg, "train"), source(cfg, "val")
