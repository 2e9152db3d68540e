"""What a labelling tool reads and writes: class-id PNGs, colour PNGs and CVAT's
"Segmentation mask 1.1" layout, in both directions.

Plain PNG (any tool, or an image editor):
    images/<name>.png        the frame, 8-bit RGB
    masks/<name>.png         class ids, 8-bit (16-bit above 255 classes), 255 = unlabelled
    masks_color/<name>.png   the same in the dataset's palette, unlabelled black (to look at)
    classes.txt              "id name r,g,b" per class: what the ids and colours mean

CVAT "Segmentation mask 1.1" (docs.cvat.ai, dataset_management/formats/format-smask; a Pascal VOC
segmentation layout read by Datumaro's voc_segmentation importer), as CVAT itself exports it:
    labelmap.txt                        "name:r,g,b::" per label, "background:0,0,0::" first
    ImageSets/Segmentation/default.txt  item names (image names without extension)
    SegmentationClass/<name>.png        RGB: each pixel the colour of its label, black unlabelled
    SegmentationObject/<name>.png       RGB instance masks (Pascal VOC instance colours): one
                                        instance per class present, black unlabelled
CVAT matches a colour it does not find in labelmap.txt with "Undeclared color" and a label the
task lacks with "Label ... is not registered", so the export declares black as `background` and
writes the instance masks too: Datumaro then builds one mask per instance and never one for the
black (unlabelled) pixels, which stay unlabelled in CVAT.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_perception.core.fileio import atomic_path
from mtl_perception.core.labels import colorize_labels
from mtl_training.labeling import LabelingError

BACKGROUND = "background"  # CVAT's name for unlabelled pixels (black)
BLACK = (0, 0, 0)
CVAT_ZIP = "segmentation_mask_1.1.zip"
CVAT_LABELMAP = "labelmap.txt"
CVAT_CLASS_DIR = "SegmentationClass"
CVAT_OBJECT_DIR = "SegmentationObject"
CVAT_IMAGESET = "ImageSets/Segmentation/default.txt"


def safe_name(frame_id: str) -> str:
    """A frame id as a file stem (no folder separators): what every export names files by."""
    return str(frame_id).replace("/", "_").replace("\\", "_")


def pascal_colours(n: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour of indices 0..n-1 (bits of the index spread over the high bits of
    r, g, b): the instance colours VOC-style importers expect; index 0 is black."""
    out = []
    for i in range(n):
        r = g = b = 0
        k = i
        for shift in range(7, -1, -1):
            r |= (k & 1) << shift
            g |= ((k >> 1) & 1) << shift
            b |= ((k >> 2) & 1) << shift
            k >>= 3
        out.append((r, g, b))
    return out


def label_colours(palette: Sequence[Sequence[int]], n: int) -> list[tuple[int, int, int]]:
    """Colours of n classes in a colour mask: the dataset's palette when it tells every class
    apart from the others and from black (unlabelled), else Pascal VOC colours 1..n."""
    colours = [tuple(int(v) for v in c) for c in palette[:n]]
    if len(colours) == n and len(set(colours)) == n and BLACK not in colours:
        return colours  # type: ignore[return-value]
    return pascal_colours(n + 1)[1:]


def encode_png(array: np.ndarray) -> bytes:
    """An RGB [H, W, 3] or id [H, W] array as PNG bytes (RGB order in, as written)."""
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError("could not encode a PNG")
    return buf.tobytes()


def id_image(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as the dtype a PNG holds: 8-bit, 16-bit above 255 classes."""
    return mask.astype(np.uint8 if num_classes <= IGNORE_INDEX else np.uint16)


def write_file(path: Path, data: bytes) -> None:
    """One export file, atomically (a crash leaves the old file or none, never half of one)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_png_export(out: Path, name: str, mask: np.ndarray,
                     colours: Sequence[Sequence[int]], num_classes: int) -> dict[str, str]:
    """masks/<name>.png (ids) and masks_color/<name>.png (colours) for one frame."""
    ids = id_image(mask, num_classes)
    write_file(out / "masks" / f"{name}.png", encode_png(ids))
    colour = colorize_labels(np.where(mask == IGNORE_INDEX, num_classes, mask).astype(np.int64),
                             [*map(list, colours), list(BLACK)])
    write_file(out / "masks_color" / f"{name}.png", encode_png(colour))
    return {"mask": f"masks/{name}.png", "mask_color": f"masks_color/{name}.png"}


def classes_text(classes: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """classes.txt: 'id name r,g,b' per class, then the unlabelled id."""
    lines = [f"{i} {n} {','.join(map(str, c))}" for i, (n, c) in enumerate(zip(classes, colours,
                                                                                strict=True))]
    return "\n".join([*lines, f"{IGNORE_INDEX} unlabelled 0,0,0"]) + "\n"


def labelmap_text(classes: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """CVAT labelmap.txt: background (black) first, then every class with its colour."""
    rows = [f"{BACKGROUND}:0,0,0::"] + [f"{n}:{','.join(map(str, c))}::"
                                        for n, c in zip(classes, colours, strict=True)
                                        if n != BACKGROUND]
    return "# label:color_rgb:parts:actions\n" + "\n".join(rows) + "\n"


def cvat_labels_json(classes: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """The task's labels for CVAT's label constructor ("Raw" tab): same names and colours as
    labelmap.txt, so the uploaded masks meet labels the task has."""
    return json.dumps([{"name": n, "color": "#" + "".join(f"{int(v):02x}" for v in c),
                        "type": "any", "attributes": []}
                       for n, c in zip(classes, colours, strict=True)], indent=1)


def cvat_masks(mask: np.ndarray, colours: Sequence[Sequence[int]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(SegmentationClass RGB, SegmentationObject RGB) of one class-id mask [H, W]."""
    n = len(colours)
    lut = np.zeros((max(n, IGNORE_INDEX) + 1, 3), np.uint8)
    lut[:n] = np.asarray(colours, np.uint8).reshape(-1, 3)
    ids = mask.astype(np.int64)
    cls = lut[np.where(ids == IGNORE_INDEX, IGNORE_INDEX, ids)]
    present = [int(c) for c in np.unique(ids) if c != IGNORE_INDEX]
    inst_ids = np.zeros(ids.shape, np.int64)
    for k, c in enumerate(present, start=1):
        inst_ids[ids == c] = k
    inst_lut = np.asarray(pascal_colours(len(present) + 1), np.uint8)
    return cls, inst_lut[inst_ids]


def write_cvat_zip(path: Path, names: Sequence[str], masks: Sequence[np.ndarray],
                   classes: Sequence[str], colours: Sequence[Sequence[int]]) -> None:
    """The "Segmentation mask 1.1" archive CVAT's "Upload annotations" takes (module docstring)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CVAT_LABELMAP, labelmap_text(classes, colours))
        z.writestr(CVAT_IMAGESET, "".join(f"{n}\n" for n in names))
        for name, mask in zip(names, masks, strict=True):
            cls, inst = cvat_masks(mask, colours)
            z.writestr(f"{CVAT_CLASS_DIR}/{name}.png", encode_png(cls))
            z.writestr(f"{CVAT_OBJECT_DIR}/{name}.png", encode_png(inst))
    write_file(path, buf.getvalue())


def parse_labelmap(path: str, text: str) -> dict[str, tuple[int, int, int]]:
    """labelmap.txt -> {name: colour}, in file order; a malformed line is one error naming it."""
    out: dict[str, tuple[int, int, int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        name, colour = parts[0], parts[1] if len(parts) > 1 else ""
        try:
            rgb = tuple(int(v) for v in colour.split(","))
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise LabelingError(f"{path} line {number}: expected 'name:r,g,b::', got {line!r}")
        if name in out:
            raise LabelingError(f"{path} line {number}: label '{name}' declared twice")
        out[name] = rgb  # type: ignore[assignment]
    return out


def rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> int64 [H, W] codes r << 16 | g << 8 | b."""
    c = rgb.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def colours_to_ids(where: str, rgb: np.ndarray, table: dict[tuple[int, int, int], int],
                   what: str) -> np.ndarray:
    """An RGB mask -> class ids through `table` (colour -> id or 255); an undeclared colour is
    one error naming the file and the colours."""
    codes = rgb_codes(rgb)
    values, inverse = np.unique(codes, return_inverse=True)
    lut = np.empty(values.size, np.int64)
    bad = []
    for k, v in enumerate(values):
        colour = (int(v) >> 16 & 255, int(v) >> 8 & 255, int(v) & 255)
        cls = table.get(colour)
        if cls is None:
            bad.append(colour)
            cls = IGNORE_INDEX
        lut[k] = cls
    if bad:
        shown = ", ".join(f"({r},{g},{b})" for r, g, b in bad[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise LabelingError(f"{where}: colours {shown}{more} are not in {what}")
    return lut[inverse.reshape(codes.shape)]


def decode_mask(where: str, data: bytes) -> np.ndarray:
    """A mask PNG's pixels as stored: [H, W] ids (8/16-bit) or [H, W, 3] RGB (a palette PNG
    comes out as RGB). `where` names the file (or zip member) in errors."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise LabelingError(f"{where}: not a readable PNG")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        if img.dtype not in (np.uint8, np.uint16):
            raise LabelingError(f"{where}: class-id masks must be 8- or 16-bit, got {img.dtype}")
        return img
    if img.dtype != np.uint8 or img.shape[2] not in (3, 4):
        raise LabelingError(f"{where}: colour masks must be 8-bit RGB, got {img.dtype} "
                            f"{img.shape[2]} channels")
    if img.shape[2] == 4:
        if (img[..., 3] != 255).any():
            raise LabelingError(f"{where}: colour mask has transparent pixels; flatten it "
                                "(unlabelled = black)")
        img = img[..., :3]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
