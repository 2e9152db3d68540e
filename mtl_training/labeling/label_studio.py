"""Label Studio: the tasks `select` writes for it, and the JSON export `labels import` reads.

Label Studio keeps a segmentation mask as one `brushlabels` result per region: the region's
label name and an RGBA image of the frame's size, compressed with thi.ng's rle-pack bit format
(`value.format: "rle"`, `value.rle`: the bytes as a list of ints). The bit stream, most
significant bit first:
    32 bits   number of values (height * width * 4: R, G, B, A per pixel)
    5 bits    word size - 1 (8-bit values: 7)
    4 x 4     the four run-length field sizes - 1
then chunks until that many values are out: 1 flag bit, 2 bits choosing one of the four sizes,
that many bits holding (count - 1); flag 1 = `count` copies of the next word, flag 0 = `count`
words that follow. A pixel belongs to the region where its alpha byte is non-zero.

Export (select): label_studio/label_config.xml (an Image and a BrushLabels tag with every class
and its colour) and label_studio/tasks.json: one task per chosen frame, `data.image` the frame's
PNG as a local-files URL (`/data/local-files/?d=<selection folder>/images/<name>.png`, relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT = the folder holding the selection) and `data.frame_id`;
with pre-annotation, the teacher's mask as a `predictions` entry (one brush region per class).

Import: Label Studio's "JSON" export (a list of tasks with `annotations`). Per task the last
annotation that was not cancelled becomes a class-id mask: each brush region's pixels get its
label's class (a later region wins where two overlap), the rest stay unlabelled (255). The frame
is `data.frame_id`, or the image file's name. Labels that are not classes of the dataset, a
region of another size than its task's frame and a damaged RLE stream each stop the import with
one line naming the export and the task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_training.labeling import LabelingError

WORD_BITS = 8  # every value is a byte of the RGBA image
RUN_BITS = (3, 4, 8, 16)  # the four count-field sizes the encoder may choose from
FROM_NAME, TO_NAME = "label", "image"  # the tag names of LS_CONFIG (results refer to them)
LOCAL_FILES = "/data/local-files/?d="
TASKS, CONFIG = "tasks.json", "label_config.xml"


def _bits(value: int, width: int) -> np.ndarray:
    """`value` as `width` bits, most significant first."""
    return ((value >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)


def rle_encode(values: np.ndarray) -> list[int]:
    """Bytes (a flattened RGBA mask) -> Label Studio's rle-pack list of ints. Every run becomes
    one or more repeat chunks with the smallest count field that holds it."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    parts = [_bits(values.size, 32), _bits(WORD_BITS - 1, 5),
             *(_bits(b - 1, 4) for b in RUN_BITS)]
    if values.size:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, values.size])
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            word = _bits(int(values[start]), WORD_BITS)
            while length > 0:
                n = min(length, 1 << RUN_BITS[-1])
                size = next(i for i, b in enumerate(RUN_BITS) if n <= 1 << b)
                parts += [np.ones(1, np.uint8), _bits(size, 2), _bits(n - 1, RUN_BITS[size]),
                          word]
                length -= n
    bits = np.concatenate(parts)
    return np.packbits(bits).tolist()  # zero-padded to whole bytes


def rle_decode(rle: Sequence[int], where: str = "rle") -> np.ndarray:
    """Label Studio's rle-pack list of ints -> the flattened values (uint8). Raises
    LabelingError naming `where` for a stream that ends early or has a word size over 8 bits."""
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise LabelingError(f"{where}: 'rle' is not a list of byte values") from None
    if data.ndim != 1 or data.size < 7 or (data < 0).any() or (data > 255).any():
        raise LabelingError(f"{where}: 'rle' is not a list of byte values")
    bits = np.unpackbits(data.astype(np.uint8))
    pos = 0

    def read(width: int) -> int:
        nonlocal pos
        if pos + width > bits.size:
            raise LabelingError(f"{where}: the RLE stream ends early (damaged or cut short)")
        field = bits[pos:pos + width]
        pos += width
        return int(field.dot(1 << np.arange(width - 1, -1, -1, dtype=np.int64)))

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if word > 8:
        raise LabelingError(f"{where}: RLE words of {word} bits; brush masks hold bytes")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise LabelingError(f"{where}: the RLE stream runs past its {num} values")
        if repeat:
            out[i:j] = read(word)
        else:  # j - i words follow, read at once
            n = (j - i) * word
            if pos + n > bits.size:
                raise LabelingError(f"{where}: the RLE stream ends early (damaged or cut short)")
            words = bits[pos:pos + n].reshape(j - i, word).astype(np.int64)
            out[i:j] = words.dot(1 << np.arange(word - 1, -1, -1, dtype=np.int64))
            pos += n
        i = j
    return out


def label_config_xml(classes: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """The project's labeling interface: the frame and one brush label per class."""
    def esc(text: str) -> str:
        return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
                .replace(">", "&gt;"))
    labels = "".join(
        f'    <Label value="{esc(name)}" background="#{c[0]:02x}{c[1]:02x}{c[2]:02x}"/>\n'
        for name, c in zip(classes, colours, strict=True))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}'
            "  </BrushLabels>\n</View>\n")


def brush_results(mask: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One brushlabels region per class present in a class-id mask (255 left out)."""
    h, w = mask.shape
    out = []
    for cls in np.unique(mask).tolist():
        if cls == IGNORE_INDEX or cls >= len(classes):
            continue
        alpha = np.where(mask == cls, 255, 0).astype(np.uint8)
        out.append({"id": f"c{cls}", "type": "brushlabels", "from_name": FROM_NAME,
                    "to_name": TO_NAME, "original_width": w, "original_height": h,
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": rle_encode(np.repeat(alpha.ravel(), 4)),
                              "brushlabels": [classes[cls]]}})
    return out


def task(out: Path, name: str, frame_id: str, mask: np.ndarray | None,
         classes: Sequence[str], model_version: str) -> dict[str, Any]:
    """One frame's task; `mask`: the teacher's pre-annotation (a prediction), or None."""
    entry: dict[str, Any] = {"data": {TO_NAME: f"{LOCAL_FILES}{out.name}/images/{name}.png",
                                      "frame_id": frame_id}}
    if mask is not None:
        entry["predictions"] = [{"model_version": model_version,
                                 "result": brush_results(mask, classes)}]
    return entry


def _frame_name(where: str, entry: dict[str, Any]) -> str:
    data = entry.get("data")
    if not isinstance(data, dict):
        raise LabelingError(f"{where}: no 'data' object: not a Label Studio JSON export")
    if data.get("frame_id"):
        return str(data["frame_id"])
    url = str(data.get(TO_NAME) or "")
    query = parse_qs(urlparse(url).query).get("d")
    path = unquote(query[0] if query else urlparse(url).path)
    if not path:
        raise LabelingError(f"{where}: neither data.frame_id nor data.image names its frame")
    return PurePosixPath(path).stem


def _annotation(where: str, entry: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The regions of the task's last annotation that was not cancelled (None: none)."""
    kept = [a for a in entry.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    result = kept[-1].get("result")
    if not isinstance(result, list):
        raise LabelingError(f"{where}: annotation without a 'result' list")
    return result


def regions_to_ids(where: str, regions: list[dict[str, Any]], classes: Sequence[str]
                   ) -> np.ndarray | None:
    """Class ids [H, W] painted by the brush regions, in order; None if there are none."""
    mask: np.ndarray | None = None
    for k, region in enumerate(regions):
        if str(region.get("type", "")).lower() != "brushlabels":
            continue
        here = f"{where}, region {k}"
        value = region.get("value") or {}
        names = value.get("brushlabels") or []
        if len(names) != 1:
            raise LabelingError(f"{here}: {len(names)} labels on one brush region (need 1)")
        if names[0] not in classes:
            raise LabelingError(f"{here}: label '{names[0]}' is not a class of the dataset "
                                f"({', '.join(classes)})")
        try:
            h, w = int(region["original_height"]), int(region["original_width"])
        except (KeyError, TypeError, ValueError):
            raise LabelingError(f"{here}: no original_width / original_height") from None
        if value.get("format", "rle") != "rle" or "rle" not in value:
            raise LabelingError(f"{here}: not an RLE brush mask")
        values = rle_decode(value["rle"], here)
        if values.size != h * w * 4:
            raise LabelingError(f"{here}: the RLE holds {values.size} values, a {w}x{h} RGBA "
                                f"mask has {h * w * 4}")
        if mask is None:
            mask = np.full((h, w), IGNORE_INDEX, np.int64)
        elif mask.shape != (h, w):
            raise LabelingError(f"{here}: {w}x{h}, the task's other regions are "
                                f"{mask.shape[1]}x{mask.shape[0]}")
        mask[values.reshape(h, w, 4)[:, :, 3] > 0] = classes.index(names[0])
    return mask


def read_export(path: Path) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(where, frame name, regions) per annotated task of a Label Studio JSON export, or
    LabelingError when the file is not one."""
    try:
        tasks = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelingError(f"{path}: not a Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise LabelingError(f"{path}: not a Label Studio JSON export (expected a list of tasks; "
                            "export the project as 'JSON')")
    out = []
    for n, entry in enumerate(tasks):
        where = f"{path} task {entry.get('id', n)}"
        regions = _annotation(where, entry)
        if regions is not None:
            out.append((where, _frame_name(where, entry), regions))
    return out
