"""`labels import`: finished masks back into a folder dataset as segmentation labels.

What SRC may be (found in this order):
- a Label Studio "JSON" export (a .json file: label_studio.py): each task's last annotation,
  its brush regions painted in order, label names -> the dataset's classes, the rest unlabelled;
- a CVAT "Segmentation mask 1.1" export, as the .zip CVAT downloads or unpacked: labelmap.txt
  names -> the dataset's classes ("background", i.e. black, is unlabelled = 255, unless the
  dataset has a class of that name), SegmentationClass/<item>.png colours -> class ids;
- a `select` folder (its manifest.json): the masks in its masks/ folder, edited in place or
  replaced by a tool's output (class ids, or the colours of classes.txt);
- any folder of <frame>.png masks: class ids as 8/16-bit single-channel PNGs, or colours
  (the selection's classes.txt colours: the dataset palette, black unlabelled).
A mask file names its frame by the selection's name for it, the frame id, or the frame id with
folder separators as "_" (what `select` writes); only the base name counts (CVAT item names may
carry the folder the images were uploaded from).

Everything is checked before anything is written: the frame is in the dataset, the mask has the
frame's size, every id is a class or 255 and every colour one the labelmap / palette declares,
no frame appears twice, and a frame that already has a segmentation label keeps it unless
`replace`. One bad file stops the whole import with one line naming it (and how many others
are bad), and the dataset is left exactly as it was: no half import to untangle. A mask equal
to the label the frame already has is skipped (importing a selection again after finishing
more of its masks just adds the new ones). A mask that is
still the teacher's untouched pre-annotation (its content hash is in the selection manifest) is
skipped with a line saying so, unless `accept_unchanged`.

Then each label is written atomically to seg/<name>.png and dataset.json is rewritten
atomically with the frames' "seg" set and an entry appended to its "label_imports" list
(source, frames, time). The dataset's identity (mtl_training.data.identity: dataset.json's
sha256) therefore changes, so pseudo-labels made before the import are refused as stale
(`mtl-train pseudo-label` again), and a selection is never imported twice by accident.
"""

from __future__ import annotations

import datetime
import hashlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_perception.core.fileio import write_json_atomic
from mtl_perception.core.labels import palette_for
from mtl_training.data.sources.folder import (
    INDEX,
    DatasetFormatError,
    read_image,
    read_index,
    read_npy,
)
from mtl_training.labeling import LabelingError, label_studio
from mtl_training.labeling.export_formats import (
    BACKGROUND,
    BLACK,
    CVAT_CLASS_DIR,
    CVAT_LABELMAP,
    colours_to_ids,
    decode_mask,
    encode_png,
    id_image,
    label_colours,
    parse_labelmap,
    rgb_codes,
    safe_name,
    write_file,
)
from mtl_training.labeling.select import mask_sha256, read_selection

Colour = tuple[int, int, int]


@dataclass
class MaskSource:
    """One mask file to import: where it is (for messages), its frame name, how to read it."""

    where: str
    name: str
    read: Callable[[], bytes]


@dataclass
class Layout:
    """What SRC turned out to be, its mask files, and how colours in them map to classes."""

    kind: str  # label_studio | cvat | selection | png
    masks: list[MaskSource]
    colours: dict[Colour, int]  # colour -> class id or 255
    colours_from: str  # what declares them (for messages)
    unknown: dict[Colour, str] = field(default_factory=dict)  # labelmap names not classes
    selection: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # skipped entries, one line each


def _member_reader(zpath: Path, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(zpath) as z:
            return z.read(member)
    return read


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _cvat_layout(src: Path, classes: list[str]) -> Layout | None:
    """A CVAT Segmentation mask 1.1 export (zip or folder), or None when SRC is not one."""
    if src.is_file():
        if not zipfile.is_zipfile(src):
            raise LabelingError(f"{src}: not a zip archive nor a folder of masks")
        with zipfile.ZipFile(src) as z:
            members = [m for m in z.namelist() if not m.endswith("/")]
            files = {m: _member_reader(src, m) for m in members}
    else:
        files = {p.relative_to(src).as_posix(): _file_reader(p)
                 for p in src.rglob("*") if p.is_file()}
    roots = {m[: m.index(f"{CVAT_CLASS_DIR}/")] for m in files
             if f"{CVAT_CLASS_DIR}/" in m and m.endswith(".png")}
    if not roots:
        if src.is_file():
            raise LabelingError(f"{src}: no {CVAT_CLASS_DIR}/*.png inside: not a CVAT "
                                "'Segmentation mask 1.1' export")
        return None
    if len(roots) > 1:
        raise LabelingError(f"{src}: several {CVAT_CLASS_DIR} folders ({', '.join(sorted(roots))})"
                            "; import one export at a time")
    root = roots.pop()
    where = f"{src}/{root}{CVAT_LABELMAP}"
    if f"{root}{CVAT_LABELMAP}" not in files:
        raise LabelingError(f"{where} missing: export from CVAT as 'Segmentation mask 1.1' "
                            "(it writes labelmap.txt), or add one ('name:r,g,b::' per label)")
    declared = parse_labelmap(where, files[f"{root}{CVAT_LABELMAP}"]().decode())
    table: dict[Colour, int] = {}
    unknown: dict[Colour, str] = {}
    for name, colour in declared.items():
        if name in classes:
            cls = classes.index(name)
        elif name == BACKGROUND:
            cls = IGNORE_INDEX
        else:
            unknown[colour] = name
            continue
        if colour in table and table[colour] != cls:
            raise LabelingError(f"{where}: colour {colour} declared for two labels")
        table[colour] = cls
    prefix = f"{root}{CVAT_CLASS_DIR}/"
    masks = [MaskSource(f"{src}/{m}", PurePosixPath(m[len(prefix):-4]).name, files[m])
             for m in sorted(files) if m.startswith(prefix) and m.endswith(".png")]
    return Layout("cvat", masks, table, where, unknown)


def _label_studio_layout(src: Path, classes: list[str]) -> Layout:
    """A Label Studio JSON export: one class-id mask per annotated task (label_studio.py),
    handed on as a single-channel PNG so it passes the same checks as any mask file."""
    masks, notes = [], []
    for where, name, regions in label_studio.read_export(src):
        def read(where: str = where, regions: list = regions) -> bytes:
            ids = label_studio.regions_to_ids(where, regions, classes)
            return encode_png(id_image(ids, len(classes)))  # type: ignore[arg-type]
        if not any(str(r.get("type", "")).lower() == "brushlabels" for r in regions
                   if isinstance(r, dict)):
            notes.append(f"{where}: its annotation has no brush region, not imported")
            continue
        masks.append(MaskSource(where, name, read))
    if not masks and not notes:
        raise LabelingError(f"{src}: no annotated task (export the project as 'JSON' after "
                            "submitting the annotations)")
    return Layout("label_studio", masks, {}, f"{src} (brush label names)", notes=notes)


def _png_table(palette: list[list[int]], n: int) -> dict[Colour, int]:
    """The colours plain colour masks use: the selection's (label_colours), black unlabelled."""
    table: dict[Colour, int] = {tuple(c): i for i, c in enumerate(label_colours(palette, n))}
    table.setdefault(BLACK, IGNORE_INDEX)
    return table


def find_layout(src: Path, classes: list[str], palette: list[list[int]]) -> Layout:
    """What SRC holds (module docstring), its mask files in name order."""
    if not src.exists():
        raise LabelingError(f"{src}: not found")
    if src.is_file() and src.suffix.lower() == ".json":
        return _label_studio_layout(src, classes)
    cvat = _cvat_layout(src, classes)
    if cvat is not None:
        return cvat
    table = _png_table(palette, len(classes))
    selection = read_selection(src)
    folder = src / "masks" if selection is not None else src
    files = sorted(p for p in folder.glob("*.png") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise LabelingError(f"{folder}: no mask PNGs to import (class ids or the colours of "
                            "classes.txt, one <frame>.png per frame)")
    return Layout("selection" if selection is not None else "png",
                  [MaskSource(str(p), p.stem, _file_reader(p)) for p in files], table,
                  "the dataset's colours (classes.txt)", selection=selection)


def _frame_size(root: Path, entry: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of a frame's RGB image, read from the file."""
    path = root / entry["rgb"]
    if path.suffix == ".npy":
        return tuple(read_npy(path, ("uint8",), 3, "rgb").shape[:2])  # type: ignore[return-value]
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LabelingError(f"cannot read image {path}")
    return img.shape[:2]


def _to_ids(mask: MaskSource, pixels: np.ndarray, layout: Layout, n: int) -> np.ndarray:
    """Class ids [H, W] of one decoded mask, or one error naming the file."""
    if pixels.ndim == 3:
        if layout.unknown:
            present = set(np.unique(rgb_codes(pixels)).tolist())
            for colour, name in layout.unknown.items():
                if (colour[0] << 16 | colour[1] << 8 | colour[2]) in present:
                    raise LabelingError(f"{mask.where}: label '{name}' (colour {colour}) is not "
                                        f"a class of the dataset; rename it to one of its "
                                        "classes or leave its pixels unlabelled")
        return colours_to_ids(mask.where, pixels, layout.colours, layout.colours_from)
    if layout.kind == "cvat":
        raise LabelingError(f"{mask.where}: CVAT class masks are RGB colours, got one channel")
    ids = pixels.astype(np.int64)
    bad = np.unique(ids[(ids >= n) & (ids != IGNORE_INDEX)])
    if bad.size:
        shown = ", ".join(map(str, bad[:8].tolist())) + (", ..." if bad.size > 8 else "")
        raise LabelingError(f"{mask.where}: label ids {shown} are not classes of the dataset "
                            f"(0..{n - 1}, {IGNORE_INDEX} = unlabelled)")
    return ids


def _same_label(root: Path, entry: dict[str, Any], ids: np.ndarray) -> bool:
    """Whether a frame's stored label already holds `ids` (a selection imported again after more
    masks were finished: the frames done before are skipped, not refused)."""
    path = root / entry["seg"]
    try:
        stored = read_image(path, "seg")
    except DatasetFormatError:
        return False
    return stored.shape == ids.shape and bool((stored.astype(np.int64) == ids).all())


@dataclass
class Planned:
    frame_id: str
    where: str
    ids: np.ndarray
    replaces: str | None


def plan_import(src: Path, data_dir: Path, *, selection_dir: Path | None = None,
                replace: bool = False, accept_unchanged: bool = False
                ) -> tuple[list[Planned], list[str], Layout, dict[str, Any]]:
    """(labels to write, skip lines, layout, the dataset index): everything checked, nothing
    written. Raises LabelingError naming the first bad file (and how many more are bad)."""
    index = read_index(data_dir)
    if index.get("label_map"):
        raise LabelingError(f"{data_dir / INDEX}: has a label_map (its labels are raw ids); "
                            "imported labels are class ids, so import into a dataset without one")
    classes = list(index["classes"])
    try:
        palette = palette_for(classes, index.get("palette"))
    except ValueError as exc:
        raise LabelingError(f"{data_dir / INDEX}: {exc}") from exc
    layout = find_layout(src, classes, palette)
    selection = layout.selection
    if selection_dir is not None:
        selection = read_selection(selection_dir)
        if selection is None:
            raise LabelingError(f"{selection_dir / 'manifest.json'} missing: --selection must "
                                "name a folder written by `mtl-train select`")
    by_id = {str(f["id"]): f for f in index["frames"]}
    by_name: dict[str, str] = {}
    for fid in by_id:
        by_name.setdefault(safe_name(fid), fid)
    pre: dict[str, str] = {}
    if selection is not None:
        for rec in selection.get("frames", []):
            by_name[str(rec["name"])] = str(rec["id"])
            if rec.get("pre_annotation_sha256"):
                pre[str(rec["id"])] = str(rec["pre_annotation_sha256"])
    errors: list[str] = []
    skips: list[str] = list(layout.notes)
    planned: list[Planned] = []
    seen: dict[str, str] = {}
    for mask in layout.masks:
        try:
            fid = mask.name if mask.name in by_id else by_name.get(mask.name)
            if fid is None:
                raise LabelingError(f"{mask.where}: frame '{mask.name}' is not in the dataset "
                                    f"{data_dir} ({len(by_id)} frames; name masks by frame id)")
            if fid in seen:
                raise LabelingError(f"{mask.where}: frame '{fid}' also comes from {seen[fid]}")
            seen[fid] = mask.where
            entry = by_id[fid]
            pixels = decode_mask(mask.where, mask.read())
            h, w = _frame_size(data_dir, entry)
            if pixels.shape[:2] != (h, w):
                raise LabelingError(f"{mask.where}: mask is {pixels.shape[1]}x{pixels.shape[0]}, "
                                    f"frame '{fid}' is {w}x{h} (width x height)")
            ids = _to_ids(mask, pixels, layout, len(classes))
            if fid in pre and mask_sha256(ids) == pre[fid] and not accept_unchanged:
                skips.append(f"{mask.where}: still the teacher's pre-annotation, not imported "
                             "(pass --accept-unchanged to import it as reviewed)")
                continue
            if entry.get("seg") and _same_label(data_dir, entry, ids):
                skips.append(f"{mask.where}: frame '{fid}' already has exactly this label "
                             "(imported before)")
                continue
            if entry.get("seg") and not replace:
                raise LabelingError(f"{mask.where}: frame '{fid}' already has a segmentation "
                                    f"label ({entry['seg']}); pass --replace to overwrite it")
            planned.append(Planned(fid, mask.where, ids, entry.get("seg")))
        except LabelingError as exc:
            errors.append(str(exc))
    if errors:
        more = f" (and {len(errors) - 1} more bad files)" if len(errors) > 1 else ""
        raise LabelingError(f"{errors[0]}{more}; nothing was imported")
    return planned, skips, layout, index


def import_labels(src: str | Path, data_dir: str | Path, *, selection_dir: str | Path | None = None,
                  replace: bool = False, accept_unchanged: bool = False) -> dict[str, Any]:
    """Import SRC's masks into the folder dataset `data_dir` (module docstring). Returns what was
    done: frames imported and replaced, skip lines, the dataset.json sha256 before and after."""
    src, data_dir = Path(src), Path(data_dir)
    planned, skips, layout, index = plan_import(
        src, data_dir, selection_dir=None if selection_dir is None else Path(selection_dir),
        replace=replace, accept_unchanged=accept_unchanged)
    index_path = data_dir / INDEX
    before = hashlib.sha256(index_path.read_bytes()).hexdigest()
    if not planned:
        return {"imported": [], "replaced": [], "skipped": skips, "kind": layout.kind,
                "dataset_json_sha256": {"before": before, "after": before}}
    n = len(index["classes"])
    by_id = {str(f["id"]): f for f in index["frames"]}
    for p in planned:
        rel = f"seg/{safe_name(p.frame_id)}.png"
        write_file(data_dir / rel, encode_png(id_image(p.ids, n)))
        entry = by_id[p.frame_id]
        entry["seg"] = rel
        entry.setdefault("meta", {})["seg_source"] = "imported"
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "source": str(src.resolve()), "kind": layout.kind,
              "frames": [p.frame_id for p in planned],
              "replaced": [p.frame_id for p in planned if p.replaces]}
    if layout.selection is not None or selection_dir is not None:
        sel = layout.selection or read_selection(Path(selection_dir))  # type: ignore[arg-type]
        record["teacher_sha256"] = (sel or {}).get("teacher", {}).get("sha256")
    index.setdefault("label_imports", []).append(record)
    write_json_atomic(index_path, index)
    after = hashlib.sha256(index_path.read_bytes()).hexdigest()
    return {"imported": record["frames"], "replaced": record["replaced"], "skipped": skips,
            "kind": layout.kind, "dataset_json_sha256": {"before": before, "after": after}}
