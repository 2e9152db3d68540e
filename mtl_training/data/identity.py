"""Which dataset a set of frames is: recorded by what is derived from it (pseudo-labels).

Pseudo-labels are matched to frames by frame id alone, and ids repeat across datasets (every
synthetic world numbers its frames 0000000.., two extractions of one bag share ids). So a
pseudo-label folder records the identity of the dataset it labelled, and a student compares it
with its own training set before reading a single label.

An identity is a small JSON-ready dict: what kind of source, its name, where it is (`root`, for
the message only: a moved or copied folder is still the same dataset), how many frames, a hash of
the ordered frame ids, and what pins the content: the dataset.json's sha256 for a folder dataset
(a re-extraction or an added bag changes it), the seed and render size for the synthetic world.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mtl_perception.core.contracts import FrameSource
from mtl_training.data.sources.folder import INDEX, FolderSource
from mtl_training.data.sources.synthetic import SyntheticSource

LOCATION_KEYS = ("root",)  # where the dataset lives: shown, never compared


def _ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def dataset_identity(source: FrameSource) -> dict[str, Any]:
    """The identity of one split's frame source (the training split, for pseudo-labels).

    Folder, synthetic, NYUv2 and Cityscapes sources are described without reading any image;
    another source's frame ids are read from its frames' `meta["frame_id"]` (one load each).
    """
    n = len(source)
    if isinstance(source, FolderSource):
        ids = [str(f["id"]) for f in source.frames]
        index = source.root / INDEX
        return {"kind": "folder", "name": source.info.name, "root": str(source.root.resolve()),
                "frames": n, "frame_ids_sha256": _ids_sha256(ids),
                "dataset_json_sha256": hashlib.sha256(index.read_bytes()).hexdigest()}
    if isinstance(source, SyntheticSource):
        ids = [f"{source.start + i:07d}" for i in range(n)]  # what SyntheticSource.frame says
        return {"kind": "synthetic", "name": source.info.name, "root": None,
                "seed": source.seed, "start": source.start, "frames": n,
                "render_size": [source.cfg.height, source.cfg.width],
                "max_depth": source.cfg.max_depth, "frame_ids_sha256": _ids_sha256(ids),
                # recorded only off the standard style, so identities written before styles
                # existed still match
                **({"style": source.cfg.style} if source.cfg.style != "standard" else {})}
    listed = getattr(source, "frame_ids", None)  # nyuv2 / cityscapes list ids without loading
    ids = (list(map(str, listed())) if callable(listed)
           else [str(source.frame(i).meta.get("frame_id", f"{i:06d}")) for i in range(n)])
    return {"kind": type(source).__name__, "name": source.info.name, "root": None, "frames": n,
            "frame_ids_sha256": _ids_sha256(ids)}


def same_dataset(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two identities name the same frames (location ignored)."""
    def key(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in LOCATION_KEYS}

    return key(a) == key(b)


def describe_identity(identity: dict[str, Any]) -> str:
    """One readable phrase naming a dataset identity, for one-line errors."""
    kind, name = identity.get("kind", "?"), identity.get("name", "?")
    ids = str(identity.get("frame_ids_sha256", "?"))[:12]
    if kind == "folder":
        where = Path(str(identity.get("root", "?")))
        return (f"folder dataset '{name}' at {where} ({identity.get('frames')} frames, ids "
                f"{ids}, dataset.json sha256 {str(identity.get('dataset_json_sha256'))[:12]})")
    if kind == "synthetic":
        h, w = identity.get("render_size", ["?", "?"])
        style = identity.get("style", "standard")
        return (f"synthetic world seed {identity.get('seed')} ({style} style, "
                f"{identity.get('frames')} frames from {identity.get('start')}, {h}x{w}, "
                f"ids {ids})")
    return f"{kind} dataset '{name}' ({identity.get('frames')} frames, ids {ids})"


def training_identity(source: Any) -> dict[str, Any] | None:
    """The identity a checkpoint records of its training source, or None where it would cost a
    pass over the frames (a source that neither lists its files nor its ids): resume compares it
    to notice a dataset that changed under the run (`mtl-train labels import`)."""
    if isinstance(source, (FolderSource, SyntheticSource)) or callable(
            getattr(source, "frame_ids", None)):
        return dataset_identity(source)
    return None
