"""Where a teacher learned, recorded beside the frames it labels.

A robot's recordings carry no segmentation labels, so the teacher that labels them is trained on
another source (NYUv2, Cityscapes, the procedural world): its pseudo-labels are then a
cross-domain guess, less accurate than on its own held-out frames. The manifest says so: the
teacher's data section (which source, where, which seed and classes) and whether it is the
target's own dataset. Recorded, never compared on resume: the teacher's sha256 already pins the
teacher, and an older folder without these keys still resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA_KEYS = ("name", "root", "seed", "classes", "train_frames", "render_height", "render_width",
             "style")


def teacher_data(config: dict[str, Any]) -> dict[str, Any]:
    """The identifying part of a teacher run's resolved `data` config section; a teacher
    trained on several sources (data.sources): {"sources": [one such part per source]}, each
    entry over the top-level keys it inherits."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    entries = data.get("sources")
    if isinstance(entries, list) and entries:
        top = {k: v for k, v in data.items() if k != "sources"}
        merged = [{**top, **e} if isinstance(e, dict) else top for e in entries]
        return {"sources": [{k: m[k] for k in DATA_KEYS if k in m} for m in merged]}
    return {k: data[k] for k in DATA_KEYS if k in data}


def _same_root(a: Any, b: Any) -> bool:
    if not a or not b:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def is_cross_domain(teacher: dict[str, Any], target: dict[str, Any]) -> bool:
    """Whether the teacher was trained on a dataset other than `target` (a dataset_identity).

    Same dataset: the same procedural world (name synthetic, same seed and style), the same
    folder (roots resolved from the current directory: run pseudo-label where the teacher was
    trained, as the packaged configs' relative roots assume), or the same benchmark at the same
    root. Anything else, including a teacher config without a data section, is cross-domain:
    the cautious answer, since it tells the user the kept-pixel accuracy is not measured on the
    target. Several sources: cross-domain unless one of them is the target."""
    if isinstance(teacher.get("sources"), list):
        return all(is_cross_domain(s, target) for s in teacher["sources"])
    name, kind = teacher.get("name"), target.get("kind")
    if kind == "synthetic":
        return not (name == "synthetic" and teacher.get("seed", 0) == target.get("seed")
                    and teacher.get("style", "standard") == target.get("style", "standard"))
    if kind == "folder":
        return not (name == "folder" and _same_root(teacher.get("root"), target.get("root")))
    target_name = str(target.get("name", "")).lower()
    return not (name and str(name).lower() in target_name
                and _same_root(teacher.get("root"), target.get("root")))


def teacher_provenance(config: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `teacher_data` and `cross_domain` entries."""
    data = teacher_data(config)
    return {"teacher_data": data, "cross_domain": is_cross_domain(data, target)}
