"""The pseudo-label folder: its layout, the resume journal, and the read side a student uses.

Layout (`mtl-train pseudo-label --out`):
    manifest.json    format, task, teacher checkpoint + sha256, the labelled dataset's identity
                     (mtl_training.data.identity), tau/mode/thresholds, planned frames,
                     per-frame records and the summary; "complete": false until the end
    progress.jsonl   one record per finished frame, appended as it is written (the resume log)
    seg/<id>.png     8-bit class ids, 255 = not confident          (task seg)
    depth/<id>.png   16-bit millimetres, 0 = not kept                (task depth)
Labels are written at the frame's own resolution, so the dataset treats them exactly like ground
truth. Every PNG is written atomically: a file under its final name is always whole, so a journal
line whose file exists names a finished frame.

Labels are looked up by frame id, and ids repeat across datasets, so a student checks the
recorded dataset identity against its own training set (`check_dataset`) and refuses another
dataset's folder. A folder written before identities were recorded (format 1) is refused too,
with the command that rewrites it: it cannot be checked, and accepting it would keep exactly the
silent mix-up the check exists to stop (re-running is resumable and cheap next to training).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.core.fileio import atomic_path
from mtl_training.data.identity import describe_identity, same_dataset
from mtl_training.data.sources.folder import read_png, write_png
from mtl_training.pseudo import PseudoLabelError

FORMAT = "mtl_perception.pseudo_labels/2"  # 2: records the dataset identity
FORMAT_WITHOUT_IDENTITY = "mtl_perception.pseudo_labels/1"
MANIFEST = "manifest.json"
JOURNAL = "progress.jsonl"


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest's JSON, or PseudoLabelError naming the file and the fix."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PseudoLabelError(f"{path}: unreadable ({exc}); delete the folder or pass "
                               "--overwrite") from exc


def read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """Finished frames by id; a torn last line (a crash mid-write) is simply not finished."""
    done: dict[str, dict[str, Any]] = {}
    path = out / JOURNAL
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec and (out / rec.get("file", "")).is_file():
            done[rec["id"]] = rec
    return done


def write_label(out: Path, name: str, image: np.ndarray) -> None:
    """Write one label PNG at `out/name` atomically (before its journal line is appended)."""
    with atomic_path(out / name, suffix=".png") as tmp:
        write_png(tmp, image)


class PseudoLabelStore:
    """Read side, handed to MultiTaskDataset: `get(frame_id)` -> label map or None.

    `task` says what the maps are: "seg" (uint8 class ids, 255 = not confident) or "depth"
    (float32 metres, 0 = not kept). Only a finished folder is accepted: training on half a
    pseudo-label set would silently change the experiment.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise PseudoLabelError(f"{path} missing: not a pseudo-label folder (write one with "
                                   "`mtl-train pseudo-label`)")
        manifest = read_manifest(path)
        if manifest.get("format") == FORMAT_WITHOUT_IDENTITY or (
                manifest.get("format") == FORMAT and not isinstance(manifest.get("dataset"), dict)):
            raise PseudoLabelError(no_identity_message(path, self.root))
        if manifest.get("format") != FORMAT:
            raise PseudoLabelError(f"{path}: format {manifest.get('format')!r}, "
                                   f"expected {FORMAT!r}")
        if not manifest.get("complete"):
            raise PseudoLabelError(f"{path}: pseudo-labelling did not finish; run "
                                   "`mtl-train pseudo-label` again with the same --out to resume")
        self.manifest = manifest
        self.task: str = manifest["task"]
        self.tau: float | None = manifest.get("tau")
        self.teacher_sha256: str = manifest["teacher"]["sha256"]
        self.dataset: dict[str, Any] = manifest["dataset"]
        self.files = {fid: self.root / rec["file"] for fid, rec in manifest["frames"].items()}

    def check_dataset(self, identity: dict[str, Any]) -> None:
        """Refuse to serve labels to a dataset other than the one they were made from.

        `identity` is the student's training set (mtl_training.data.identity.dataset_identity);
        datasets_from_sources calls this where the store meets the dataset. Raises
        PseudoLabelError, one line naming both datasets.
        """
        if not same_dataset(self.dataset, identity):
            raise PseudoLabelError(other_dataset_message(self.root / MANIFEST, self.dataset,
                                                         identity))

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, frame_id: str) -> bool:
        return frame_id in self.files

    def get(self, frame_id: str) -> np.ndarray | None:
        """The frame's label map (seg ids or metres), None when the frame was not labelled."""
        path = self.files.get(frame_id)
        if path is None:
            return None
        if not path.is_file():
            raise PseudoLabelError(f"{path} listed in {self.root / MANIFEST} but missing; "
                                   "run `mtl-train pseudo-label` again to rewrite it")
        img = read_png(path)
        if self.task == "depth":
            return img.astype(np.float32) * 0.001
        return img


def no_identity_message(manifest: Path, root: Path) -> str:
    """The one line for a folder that records no dataset identity (format 1)."""
    return (f"{manifest}: records no dataset identity (written by an older version), so it "
            "cannot be checked against the training set; re-run pseudo-label: `mtl-train "
            f"pseudo-label --teacher ... --out {root} --overwrite`")


def other_dataset_message(manifest: Path, recorded: dict[str, Any],
                          actual: dict[str, Any]) -> str:
    """The one line for pseudo-labels made from another dataset than the one at hand."""
    return (f"{manifest}: pseudo-labels were made from {describe_identity(recorded)}, not from "
            f"this training set, {describe_identity(actual)}; run `mtl-train pseudo-label` for "
            "this dataset (another --out)")
