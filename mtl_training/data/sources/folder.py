"""Folder datasets: the on-disk layout that `mtl-train synth` and `mtl-train bag extract` write,
and the one a converter from any other dataset should write.

Format `mtl_perception.folder/2` (format/1 folders are still read; they are format/2 with
depth_scale 0.001, no label_map and no depth files other than 16-bit PNGs), or
`mtl_perception.folder/3` when a frame's images are .npy arrays (format/3 = format/2 plus those;
a folder of PNGs keeps saying /2, so older readers still open it):
    dataset.json   {"format", "name", "classes", "palette", "max_depth" (metres, the depth range
                    of the data), "depth_scale" (metres per unit of 16-bit depth PNGs without
                    their own; default 0.001), "label_map" (optional {"raw id": class id | 255}),
                    "frames": [...], "splits": {"train": [ids], "val": [ids], "test": [ids]}}
    rgb/<id>.png   8-bit RGB
    depth/<id>.png 16-bit, metres = value x depth_scale (the entry's, else the index's), 0 = invalid
    depth/<id>.npy float32 metres (read with allow_pickle=False), 0 = invalid: depth a 16-bit PNG
                   cannot hold (beyond 65535 x depth_scale), or exact floats on request
    seg/<id>.png   8-bit (16-bit above 255) class ids, 255 = ignore; raw ids only with label_map
  format/3 only (image_format "npy": the same pixels as raw arrays, ~3x cheaper to write than even
  an uncompressed PNG and ~9x cheaper to read; every .npy is read with allow_pickle=False):
    rgb/<id>.npy   uint8 [H, W, 3] RGB
    depth/<id>.npy uint16 [H, W]: metres = value x depth_scale, as the 16-bit PNG
    seg/<id>.npy   uint8 / uint16 [H, W] class ids, as the PNG
Each frame entry: {"id", "rgb", "depth"|null, "depth_scale" (PNG depth), "depth_max" (metres,
largest valid value), "seg"|null, "K": [9 floats]|null, "meta": {...}}. Files absent = unknown.
dataset.json is written last and atomically, so a folder without it is an unfinished write.

What reading refuses or says (one line naming the file): a label id that is neither a class nor
255 (unless label_map maps it), a label_map value outside the classes, depth that is not finite
metres; a dataset without a held-out split is read for train and val alike with a warning that
says how to add one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX, DatasetInfo, RawFrame
from mtl_perception.core.fileio import write_json_atomic
from mtl_perception.core.labels import palette_for
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data.sources.holdout import check_split, holdout

FORMAT = "mtl_perception.folder/2"  # 2: depth_scale, float32 .npy depth, label_map, test split
FORMAT_V3 = "mtl_perception.folder/3"  # 3: rgb / seg / 16-bit depth as .npy arrays too
FORMAT_V1 = "mtl_perception.folder/1"  # 16-bit millimetre depth only
READABLE_FORMATS = (FORMAT, FORMAT_V3, FORMAT_V1)
INDEX = "dataset.json"
DEPTH_SCALE = 0.001  # metres per unit of a 16-bit depth PNG: millimetres (REP 118)
DEPTH_ENCODINGS = ("auto", "png16", "npy")
IMAGE_FORMATS = ("png", "npy")  # how write_frame stores rgb, seg and 16-bit depth

log = logging.getLogger("mtl_training.data")


class DatasetFormatError(ValueError):
    """A dataset folder is missing, unfinished or malformed; the message names the file."""


def png_params(compression: int | None) -> list[int]:
    """cv2.imwrite flags for a zlib level 0..9 (None: OpenCV's default). Level 0 stores the
    pixels unfiltered and uncompressed: still a lossless PNG every reader opens, ~30x cheaper
    to write than the default and ~1.7x larger (what `bag extract` uses by default)."""
    if compression is None:
        return []
    if not 0 <= compression <= 9:
        raise ValueError(f"PNG compression must be 0..9, got {compression}")
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    if compression == 0:  # filtering only helps deflate: with none it is wasted work
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    return params


def write_png(path: Path, array: np.ndarray, *, compression: int | None = None) -> None:
    """PNG write that fails loudly (cv2.imwrite only returns False); `compression`: png_params."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array, png_params(compression)):
        raise OSError(f"could not write {path}")


def write_npy(path: Path, array: np.ndarray) -> None:
    """An array as .npy (no pickle), its folder created: the folder format's raw image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def read_npy(path: Path, kinds: tuple[str, ...], ndim: int, what: str) -> np.ndarray:
    """An image stored as .npy: never unpickled, and its dtype and rank checked, so a wrong or
    hostile file stops reading with one line naming it."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetFormatError(f"cannot read {what} {path} ({exc})") from exc
    if a.ndim != ndim or a.dtype.name not in kinds or (ndim == 3 and a.shape[2] != 3):
        raise DatasetFormatError(f"{path}: {what} must be {'/'.join(kinds)} "
                                 f"{'[H, W, 3]' if ndim == 3 else '[H, W]'}, got {a.dtype} "
                                 f"{list(a.shape)}")
    return a


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres, clipped at 65.535 m (pseudo-depth PNGs; the folder format
    itself never clips: see write_frame)."""
    return np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)


def _clean_depth(depth: np.ndarray) -> np.ndarray:
    """float32 metres with every non-finite or non-positive value as 0 (invalid)."""
    d = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0)).astype(np.float32)


def encode_depth(depth_m: np.ndarray, encoding: str = "auto",
                 scale: float = DEPTH_SCALE) -> tuple[str, np.ndarray, float | None]:
    """(file suffix, array to write, depth_scale or None) for one depth map in metres.

    `auto`: a 16-bit PNG at `scale` when every valid value fits (65535 x scale metres: 65.5 m at
    1 mm), else float32 .npy; `png16` refuses depth it would clip; `npy` keeps exact floats.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, "
                         f"got {encoding!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"depth_scale must be a finite number > 0, got {scale}")
    d = _clean_depth(depth_m)
    top = float(d.max()) if d.size else 0.0
    fits = round(top / scale) <= 65535
    if encoding == "png16" and not fits:
        raise ValueError(f"depth up to {top:.3f} m does not fit a 16-bit PNG at depth_scale "
                         f"{scale:g} (max {65535 * scale:.3f} m): use a larger depth_scale or "
                         "depth_encoding='npy'")
    if encoding == "npy" or not fits:
        return ".npy", d, None
    units = np.round(d / scale).astype(np.uint16)
    units[(d > 0) & (units == 0)] = 1  # a valid depth below half a unit stays valid
    return ".png", units, float(scale)


def frame_entry(frame_id: str, rgb: str, depth: str | None, seg: str | None,
                K: np.ndarray | None, meta: dict[str, Any] | None = None, *,
                depth_scale: float | None = None,
                depth_max: float | None = None) -> dict[str, Any]:
    """One frame's index entry (paths relative to the dataset folder)."""
    entry: dict[str, Any] = {
        "id": frame_id, "rgb": rgb, "depth": depth, "seg": seg,
        "K": None if K is None else [float(v) for v in np.asarray(K).reshape(-1)],
        "meta": meta or {}}
    if depth_scale is not None:
        entry["depth_scale"] = float(depth_scale)
    if depth_max is not None:
        entry["depth_max"] = float(depth_max)
    return entry


def write_frame(root: Path, frame_id: str, rgb: np.ndarray, depth: np.ndarray | None,
                seg: np.ndarray | None, K: np.ndarray | None,
                meta: dict[str, Any] | None = None, *, depth_encoding: str = "auto",
                depth_scale: float = DEPTH_SCALE, png_compression: int | None = None,
                image_format: str = "png") -> dict[str, Any]:
    """Write one frame's files and return its index entry.

    Depth is metres (0 / NaN = invalid) and is never clipped: `depth_encoding` `auto` writes
    16-bit depth at `depth_scale` (1 mm: exact for 16UC1 sensor depth) when it fits and float32
    .npy when it does not (beyond 65.535 m at 1 mm); `png16` raises instead; `npy` is exact.
    `image_format` "png" writes rgb, seg and 16-bit depth as PNGs (`png_compression`: zlib
    level 0..9, None = OpenCV's default, every level lossless: png_params); "npy" writes the
    same pixels as raw .npy arrays (format/3), the cheapest lossless file to write and read.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, "
                         f"got {image_format!r}")
    root = Path(root)

    def image(folder: str, array: np.ndarray) -> str:
        rel = f"{folder}/{frame_id}.{image_format}"
        if image_format == "npy":
            write_npy(root / rel, array)
        else:
            write_png(root / rel, array, compression=png_compression)
        return rel

    rgb_rel = image("rgb", rgb)
    depth_rel, scale, top = None, None, None
    if depth is not None:
        suffix, array, scale = encode_depth(depth, depth_encoding, depth_scale)
        if suffix == ".npy":  # float metres: .npy in either image format
            depth_rel = f"depth/{frame_id}.npy"
            write_npy(root / depth_rel, array)
        else:
            depth_rel = image("depth", array)
        top = float(array.max()) * (scale or 1.0) if array.size else 0.0
    seg_rel = None
    if seg is not None:
        seg = np.asarray(seg)
        if seg.size and (int(seg.min()) < 0 or int(seg.max()) > 65535):
            raise ValueError(f"{frame_id}: label ids must be in 0..65535")
        dtype = np.uint8 if not seg.size or int(seg.max()) <= 255 else np.uint16
        seg_rel = image("seg", seg.astype(dtype, copy=False))
    return frame_entry(frame_id, rgb_rel, depth_rel, seg_rel, K, meta, depth_scale=scale,
                       depth_max=top)


def _raw_images(entry: dict[str, Any]) -> bool:
    """Whether a frame has a format/3 file: rgb or seg .npy, or 16-bit depth .npy (one with a
    depth_scale; float metres .npy is format/2's)."""
    npy = [k for k in ("rgb", "seg", "depth") if str(entry.get(k) or "").endswith(".npy")]
    return any(k != "depth" or "depth_scale" in entry for k in npy)


def write_index(root: Path, info: DatasetInfo, frames: Iterable[dict[str, Any]],
                splits: dict[str, list[str]] | None = None, extra: dict | None = None, *,
                label_map: dict[int, int] | None = None) -> None:
    """dataset.json, atomically. `info.max_depth` None = the largest depth the frames hold
    (their entries' depth_max), so the range a model must cover is always recorded."""
    frames = list(frames)
    max_depth = info.max_depth
    if max_depth is None:
        tops = [float(f["depth_max"]) for f in frames if f.get("depth_max")]
        max_depth = max(tops) if tops else 10.0
    index: dict[str, Any] = {"format": FORMAT_V3 if any(map(_raw_images, frames)) else FORMAT,
                             "name": info.name, "classes": info.classes, "palette": info.palette,
                             "max_depth": float(max_depth), "depth_scale": DEPTH_SCALE,
                             "frames": frames, "splits": splits or {}}
    if label_map:
        index["label_map"] = {str(int(k)): int(v) for k, v in label_map.items()}
    index.update(extra or {})
    write_json_atomic(Path(root) / INDEX, index)


def read_index(root: str | Path) -> dict[str, Any]:
    """dataset.json, checked: format, keys, depth_scale, label_map."""
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
    if not isinstance(index, dict) or index.get("format") not in READABLE_FORMATS:
        got = index.get("format") if isinstance(index, dict) else None
        raise DatasetFormatError(f"{path}: format {got!r}, expected one of "
                                 f"{', '.join(map(repr, READABLE_FORMATS))}")
    for key in ("classes", "frames"):
        if key not in index:
            raise DatasetFormatError(f"{path}: missing key '{key}'")
    scale = index.get("depth_scale", DEPTH_SCALE)
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise DatasetFormatError(f"{path}: depth_scale must be a number > 0 (metres per unit "
                                 f"of the 16-bit depth PNGs), got {scale!r}")
    max_depth = index.get("max_depth", 10.0)
    if not (isinstance(max_depth, (int, float)) and np.isfinite(max_depth) and max_depth > 0):
        raise DatasetFormatError(f"{path}: max_depth must be a number > 0 (metres), "
                                 f"got {max_depth!r}")
    return index


def label_lut(path: Path, label_map: Any, num_classes: int) -> np.ndarray | None:
    """int64 [65536] raw id -> class id (255 ignore, -1 = not mapped) from dataset.json's
    label_map, or None without one."""
    if label_map is None:
        return None
    if not isinstance(label_map, dict):
        raise DatasetFormatError(f"{path}: label_map must map raw ids to class ids, "
                                 f"got {type(label_map).__name__}")
    lut = np.full(65536, -1, np.int64)
    for raw, cls in label_map.items():
        try:
            r = int(raw)
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: label_map key {raw!r} is not an integer id") from exc
        if not 0 <= r <= 65535:
            raise DatasetFormatError(f"{path}: label_map key {raw!r} outside 0..65535")
        if not (isinstance(cls, int) and (0 <= cls < num_classes or cls == IGNORE_INDEX)):
            raise DatasetFormatError(f"{path}: label_map[{raw!r}] = {cls!r} is neither a class "
                                     f"id in 0..{num_classes - 1} nor {IGNORE_INDEX} (ignore)")
        lut[r] = cls
    return lut


def check_labels(path: Path, seg: np.ndarray, num_classes: int,
                 lut: np.ndarray | None = None) -> np.ndarray:
    """Class ids of one label image: raw ids through `lut`, then every id a class or 255.

    An out-of-range id would crash training (IndexError in the loss) and vanish from
    evaluation (silently dropped), so it stops reading with the file and the ids named.
    """
    seg = np.asarray(seg)
    if lut is not None:
        mapped = lut[seg.astype(np.int64)]
        bad = np.unique(seg[mapped < 0])
        if bad.size:
            raise DatasetFormatError(f"{path}: label ids {_ids(bad)} are not in dataset.json's "
                                     "label_map (add them, mapped to a class id or 255)")
        return mapped.astype(np.uint8 if num_classes <= 255 else np.uint16)
    # the ids present (bincount: several times faster than unique on 8/16-bit images)
    ids = (np.flatnonzero(np.bincount(seg.ravel(), minlength=1)) if seg.dtype.kind == "u"
           else np.unique(seg))
    bad = ids[(ids >= num_classes) & (ids != IGNORE_INDEX)]
    if bad.size:
        raise DatasetFormatError(
            f"{path}: label ids {_ids(bad)} outside the {num_classes} classes (0..{num_classes - 1}"
            f", {IGNORE_INDEX} = ignore): convert them, or declare a \"label_map\" "
            "{\"raw id\": class id or 255} in dataset.json")
    return seg


def _ids(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({values.size} ids)" if values.size > limit else "")


def read_png(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise DatasetFormatError(f"cannot read image {path}")
    return img


def read_image(path: Path, what: str) -> np.ndarray:
    """A frame's rgb (uint8 RGB [H, W, 3]) or seg (uint8/uint16 [H, W]) file, PNG or .npy."""
    if path.suffix == ".npy":
        if what == "rgb":
            return read_npy(path, ("uint8",), 3, "rgb")
        return read_npy(path, ("uint8", "uint16"), 2, "label image")
    if what == "rgb":
        return cv2.cvtColor(read_png(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return read_png(path)


def read_depth(path: Path, scale: float) -> np.ndarray:
    """float32 metres from 16-bit depth (x scale; PNG or uint16 .npy) or float32 .npy metres
    (no pickle, ever)."""
    if path.suffix == ".npy":
        d = read_npy(path, ("float16", "float32", "float64", "uint16"), 2,
                     "depth (float metres or uint16 x depth_scale)")
        if d.dtype == np.uint16:
            return d.astype(np.float32) * np.float32(scale)
        return _clean_depth(d)
    img = read_png(path)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise DatasetFormatError(f"{path}: depth PNG must be single-channel 16-bit, got "
                                 f"{img.dtype} {img.shape}")
    return img.astype(np.float32) * np.float32(scale)


class FolderSource:
    """Random access to one split of a folder dataset.

    `max_depth` (data.max_depth) caps the depth read: beyond it is invalid, and it becomes the
    dataset's range; None keeps dataset.json's max_depth.
    """

    def __init__(self, root: str | Path, split: str | None = None,
                 max_depth: float | None = None) -> None:
        self.root = Path(root)
        index = read_index(self.root)
        path = self.root / INDEX
        frames = index["frames"]
        splits = index.get("splits") or {}
        self.split = split
        if split is not None and split in splits:
            wanted = set(splits[split])
            frames = [f for f in frames if f["id"] in wanted]
        elif split is not None and splits:
            raise DatasetFormatError(f"{path}: no split '{split}' "
                                     f"(available: {', '.join(sorted(splits))})")
        self.frames = frames
        classes = list(index["classes"])
        try:
            palette = palette_for(classes, index.get("palette"))
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: {exc}") from exc
        self.depth_scale = float(index.get("depth_scale", DEPTH_SCALE))
        self.lut = label_lut(path, index.get("label_map"), len(classes))
        self.max_depth = max_depth
        self.info = DatasetInfo(index.get("name", self.root.name), classes, palette,
                                float(max_depth if max_depth is not None
                                      else index.get("max_depth", 10.0)))

    def subset(self, indices: Sequence[int], split: str) -> FolderSource:
        """The same dataset limited to frames `indices` (a held-out part of a split)."""
        other = object.__new__(FolderSource)
        other.__dict__.update(self.__dict__)
        other.frames = [self.frames[int(i)] for i in indices]
        other.split = split
        return other

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> RawFrame:
        entry = self.frames[index]
        rgb = read_image(self.root / entry["rgb"], "rgb")
        depth = None
        if entry.get("depth"):
            depth = read_depth(self.root / entry["depth"],
                               float(entry.get("depth_scale", self.depth_scale)))
            if self.max_depth is not None:
                depth[depth > self.max_depth] = 0.0
        seg = None
        if entry.get("seg"):
            path = self.root / entry["seg"]
            seg = check_labels(path, read_image(path, "seg"), len(self.info.classes), self.lut)
        K = None if entry.get("K") is None else np.asarray(entry["K"], np.float64).reshape(3, 3)
        meta = {"source": str(self.root), "frame_id": entry["id"], **entry.get("meta", {})}
        return RawFrame(rgb, depth, seg, K, meta)


def source(cfg: DataConfig, split: str) -> FolderSource:
    """`data.name: folder`: split `train`, `val` or `test` of `data.root`'s dataset.json.

    Without a `val` split, data.val_fraction of `train` is held out for validation (so best.pt
    is never chosen on `test`); without any split, every frame is read for every split, with a
    warning that says how to add one.
    """
    if not cfg.root:
        raise ConfigError("data.root must name the dataset folder for data.name=folder")
    check_split(split)
    root = Path(cfg.root)
    index = read_index(root)
    splits_ = index.get("splits") or {}
    path = root / INDEX
    if cfg.classes is not None and cfg.classes != len(index["classes"]):
        raise ConfigError(f"data.classes: {cfg.classes} but {path} lists "
                          f"{len(index['classes'])} classes (a folder dataset's classes are its "
                          "index's; leave data.classes null)")
    if not splits_:
        if split != "train":
            log.warning("%s has no splits: train, val and test all read its frames, so the "
                        "%s scores are on training frames. Add \"splits\": {\"train\": [ids], "
                        "\"val\": [ids], \"test\": [ids]} to it (bag extract: bag.val_every > 0)",
                        path, split)
        return FolderSource(root, None, cfg.max_depth)
    carve = "val" not in splits_ and "train" in splits_ and cfg.val_fraction > 0
    if split in ("train", "val") and carve:
        train = FolderSource(root, "train", cfg.max_depth)
        kept, held = holdout(len(train), cfg.val_fraction, cfg.seed)
        return train.subset(kept if split == "train" else held, split)
    if split in splits_:
        return FolderSource(root, split, cfg.max_depth)
    raise DatasetFormatError(f"{path}: no split '{split}' (available: "
                             f"{', '.join(sorted(splits_))}); add it under \"splits\"")


def splits(cfg: DataConfig) -> tuple[FolderSource, FolderSource]:
    """`data.name: folder`: the (train, val) sources."""
    return source(cfg, "train"), source(cfg, "val")
