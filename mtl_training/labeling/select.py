"""`select`: the unlabelled frames worth a person's time, chosen with the frozen teacher.

Every training frame without a segmentation label (and with the depth an RGB + depth teacher
reads) is scored once by the teacher at its training size:
- uncertainty u = (1 - coverage at tau + mean normalised entropy) / 2, both in 0..1: coverage is
  the share of pixels whose softmax confidence reaches tau (what pseudo-labelling would keep),
  entropy is divided by log(classes). A frame the teacher already labels confidently is worth
  little; one it cannot label is worth a lot.
- a feature: the teacher's deepest fused encoder map, average-pooled and L2-normalised.
Then frames are picked one at a time by score = (1 - w) u + w d / max d, where d is a frame's
feature distance to the nearest frame already chosen or already labelled (k-center greedy,
Sener & Savarese 2018): uncertainty alone would pick twenty views of the same confusing wall.
After each pick its near-duplicates leave the pool: frames within `min_gap_s` of it in time (the
same recording; frames without stamps: within `min_index_gap` places in the dataset's order) or
with features closer than `min_feature_distance`. `strategy="random"` draws uniformly (seeded)
under the same duplicate rules: the baseline a selection rule has to beat.

The output folder (export_formats.py for the file layouts):
    manifest.json   format, dataset identity, teacher checkpoint + sha256, the rule and its
                    settings, budget, candidates and what was skipped, per-frame id / index /
                    stamp / scores / files, class names and colours
    images/, masks/, masks_color/, classes.txt     plain PNG (masks only with pre-annotation)
    cvat/labelmap.txt, cvat/labels.json, cvat/segmentation_mask_1.1.zip (zip: pre-annotation)
    label_studio/label_config.xml, label_studio/tasks.json (predictions: pre-annotation)
manifest.json is written last and atomically: a folder without it is an unfinished selection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_perception.core.contracts import IGNORE_INDEX, FrameSource, RawFrame
from mtl_perception.core.fileio import write_json_atomic, write_text_atomic
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_training.data.identity import dataset_identity
from mtl_training.data.sources.folder import FolderSource, read_index
from mtl_training.data.transforms import make_sample
from mtl_training.labeling import LabelingError, label_studio
from mtl_training.labeling.export_formats import (
    CVAT_ZIP,
    classes_text,
    cvat_labels_json,
    encode_png,
    label_colours,
    labelmap_text,
    safe_name,
    write_cvat_zip,
    write_file,
    write_png_export,
)
from mtl_training.pseudo.teacher import LoadedTeacher

FORMAT = "mtl_perception.label_selection/1"
MANIFEST = "manifest.json"
STRATEGIES = ("uncertainty-diversity", "random")
# what --overwrite clears first
OUTPUTS = ("images", "masks", "masks_color", "cvat", "label_studio")

log = logging.getLogger("mtl_training.labeling")


@dataclass
class SelectionRule:
    """How frames are chosen (recorded in the manifest)."""

    budget: int
    strategy: str = "uncertainty-diversity"
    tau: float = 0.9  # confidence the coverage term (and the pre-annotation) counts as sure
    diversity: float = 0.5  # w: weight of the feature distance against the uncertainty
    min_gap_s: float = 1.0  # stamped frames: closer in time to a chosen one are duplicates
    min_index_gap: int = 0  # frames without stamps: this many places either side are duplicates
    min_feature_distance: float = 0.02  # L2 distance of normalised features below = duplicate
    seed: int = 0  # the random strategy's draw
    batch_size: int = 8

    def check(self) -> None:
        if self.budget < 1:
            raise LabelingError(f"--budget must be >= 1, got {self.budget}")
        if self.strategy not in STRATEGIES:
            raise LabelingError(f"Unknown selection strategy '{self.strategy}' "
                                f"(available: {', '.join(STRATEGIES)})")
        if not 0.0 <= self.tau <= 1.0:
            raise LabelingError(f"--tau must be in 0..1, got {self.tau}")
        if not 0.0 <= self.diversity <= 1.0:
            raise LabelingError(f"--diversity must be in 0..1, got {self.diversity}")
        if self.min_gap_s < 0 or self.min_index_gap < 0 or self.min_feature_distance < 0:
            raise LabelingError("--min-gap, --min-index-gap and --min-feature-distance must "
                                "be >= 0")


@dataclass
class FrameScore:
    """One frame's teacher scores and where it sits in the recording."""

    index: int  # in the scored split
    frame_id: str
    stamp_ns: int | None
    recording: str  # frames are compared in time only within one recording (bag_key)
    coverage: float
    entropy: float
    uncertainty: float
    feature: np.ndarray = field(repr=False)  # float32 [C], L2-normalised


def _normalisation(teacher: LoadedTeacher) -> dict[str, Any]:
    """make_sample's keyword for the (mean, std) the teacher's encoder family expects."""
    encoder = str(teacher.config.get("model", {}).get("encoder", "resnet18"))
    return {"stats": encoder_input_stats(encoder)}


def _inputs(teacher: LoadedTeacher, src: FrameSource, indices: list[int],
            size: tuple[int, int], batch_size: int
            ) -> Iterator[tuple[list[int], Tensor, Tensor, list[RawFrame]]]:
    """(indices, image [B, 3, h, w], depth [B, 1, h, w], the frames as read) at the network
    size; the frames give their own size and meta without a second read."""
    norm = _normalisation(teacher)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images, depths, raws = [], [], []
        for i in chunk:
            raw = src.frame(i)
            s = make_sample(raw.rgb, raw.depth, None, size, **norm)
            images.append(s["image"])
            depths.append(s["depth"])
            raws.append(raw)
        yield chunk, torch.stack(images), torch.stack(depths), raws


@torch.inference_mode()
def _forward(teacher: LoadedTeacher, image: Tensor, depth: Tensor, device: torch.device
             ) -> tuple[Tensor, Tensor]:
    """(logits [B, C, h, w], pooled feature [B, F]) in one pass: a hook on the last fusion block
    catches the deepest fused map the decoder reads."""
    caught: list[Tensor] = []
    handle = teacher.model.fusions[-1].register_forward_hook(
        lambda _m, _i, out: caught.append(out))
    try:
        logits = teacher.model(image.to(device), depth.to(device))["seg"].float()
    finally:
        handle.remove()
    feat = caught[-1].float().mean(dim=(2, 3))  # [B, F]
    return logits, F.normalize(feat, dim=1)


def _uncertainty(logits: Tensor, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(coverage at tau [B], mean normalised entropy [B]) of logits [B, C, h, w]."""
    p = torch.softmax(logits, dim=1)
    coverage = (p.max(dim=1).values >= tau).float().mean(dim=(1, 2))
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1) / np.log(max(logits.shape[1], 2))
    return coverage.cpu().numpy(), ent.mean(dim=(1, 2)).cpu().numpy()


def _frame_meta(src: FrameSource, index: int, raw: RawFrame) -> tuple[str, dict[str, Any]]:
    """(frame id, meta) of a frame: a folder dataset's index entry, else the meta of the frame
    as read (any FrameSource: the cross-domain study scores the procedural world directly)."""
    frames = getattr(src, "frames", None)
    if frames is not None:
        return str(frames[index]["id"]), frames[index].get("meta") or {}
    meta = raw.meta or {}
    return str(meta.get("frame_id", f"{index:06d}")), meta


def score_frames(teacher: LoadedTeacher, src: FrameSource, indices: list[int],
                 size: tuple[int, int], tau: float, batch_size: int,
                 device: torch.device) -> list[FrameScore]:
    """The teacher's uncertainty and feature for each of `indices` of `src`."""
    out: list[FrameScore] = []
    for chunk, image, depth, raws in _inputs(teacher, src, indices, size, batch_size):
        logits, feat = _forward(teacher, image, depth, device)
        coverage, entropy = _uncertainty(logits, tau)
        feats = feat.cpu().numpy().astype(np.float32)
        for k, i in enumerate(chunk):
            frame_id, meta = _frame_meta(src, i, raws[k])
            stamp = meta.get("stamp_ns")
            out.append(FrameScore(
                i, frame_id, int(stamp) if stamp is not None else None,
                str(meta.get("bag_key", "")), float(coverage[k]), float(entropy[k]),
                float((1.0 - coverage[k] + entropy[k]) / 2.0), feats[k]))
    return out


@dataclass
class Pick:
    """One chosen frame: which, in what order, and why."""

    score: FrameScore
    rank: int
    distance: float | None  # to the nearest chosen / labelled frame (None: nothing to compare)
    value: float  # the score it was picked with


@dataclass
class Choice:
    picks: list[Pick]
    skipped: dict[str, int]


def _near_in_time(scores: list[FrameScore], pick: FrameScore, rule: SelectionRule
                  ) -> np.ndarray:
    """Which frames are the pick's near-duplicates in time (same recording)."""
    out = np.zeros(len(scores), bool)
    for k, s in enumerate(scores):
        if s.stamp_ns is not None and pick.stamp_ns is not None:
            out[k] = (s.recording == pick.recording
                      and abs(s.stamp_ns - pick.stamp_ns) < rule.min_gap_s * 1e9)
        elif rule.min_index_gap > 0:
            out[k] = abs(s.index - pick.index) <= rule.min_index_gap
    return out


def choose(scores: list[FrameScore], labelled: list[np.ndarray], rule: SelectionRule) -> Choice:
    """Pick up to rule.budget of `scores` (module docstring); `labelled`: features of frames
    that already carry labels, which count as chosen for diversity and duplicates."""
    n = len(scores)
    skipped = {"near_in_time": 0, "near_in_features": 0}
    if n == 0:
        return Choice([], skipped)
    feats = np.stack([s.feature for s in scores]).astype(np.float64)  # [N, F]
    u = np.array([s.uncertainty for s in scores])
    alive = np.ones(n, bool)
    mind = np.full(n, np.inf)
    if labelled:
        lab = np.stack(labelled).astype(np.float64)  # [M, F]
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: an [N, M] product, never an [N, M, F] difference
        sq = (feats ** 2).sum(1)[:, None] + (lab ** 2).sum(1)[None, :] - 2.0 * feats @ lab.T
        mind = np.sqrt(np.maximum(sq, 0.0)).min(axis=1)
        dup = mind < rule.min_feature_distance
        skipped["near_labelled_frame"] = int(dup.sum())
        alive &= ~dup
    order = (np.random.default_rng(rule.seed).permutation(n) if rule.strategy == "random"
             else None)
    picks: list[Pick] = []
    while len(picks) < rule.budget and alive.any():
        finite = np.isfinite(mind)
        if order is not None:
            k = int(next(i for i in order if alive[i]))
            value = float("nan")
        else:
            top = float(mind[alive & finite].max()) if (alive & finite).any() else 0.0
            d = np.where(finite, mind / top, 1.0) if top > 0 else np.zeros(n)
            value_all = (1.0 - rule.diversity) * u + rule.diversity * d
            value_all[~alive] = -np.inf
            k = int(np.argmax(value_all))  # ties: the earliest frame
            value = float(value_all[k])
        picks.append(Pick(scores[k], len(picks) + 1,
                          float(mind[k]) if np.isfinite(mind[k]) else None, value))
        alive[k] = False
        mind = np.minimum(mind, np.sqrt(((feats - feats[k]) ** 2).sum(-1)))
        near_t = alive & _near_in_time(scores, scores[k], rule)
        skipped["near_in_time"] += int(near_t.sum())
        alive &= ~near_t
        near_f = alive & (mind < rule.min_feature_distance)
        skipped["near_in_features"] += int(near_f.sum())
        alive &= ~near_f
    return Choice(picks, skipped)


@torch.inference_mode()
def pre_annotation(teacher: LoadedTeacher, src: FolderSource, index: int,
                   size: tuple[int, int], tau: float, device: torch.device) -> np.ndarray:
    """The teacher's labels at the frame's own size: argmax where confidence >= tau, else 255
    (tau 0: every pixel), the same rule as pseudo-labels."""
    (_, image, depth, raws), = _inputs(teacher, src, [index], size, 1)
    logits = teacher.model(image.to(device), depth.to(device))["seg"].float()
    logits = F.interpolate(logits, size=raws[0].rgb.shape[:2], mode="bilinear",
                           align_corners=False)[0]
    conf, arg = torch.softmax(logits, dim=0).max(dim=0)
    return torch.where(conf >= tau, arg, IGNORE_INDEX).cpu().numpy().astype(np.int64)


def mask_sha256(mask: np.ndarray) -> str:
    """Hash of a class-id mask's content (shape and ids), whatever file it came from: import
    compares it to tell a reviewed mask from an untouched pre-annotation."""
    a = np.ascontiguousarray(mask.astype(np.int64))
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def candidate_frames(src: FolderSource) -> tuple[list[int], list[int], int]:
    """(unlabelled frames with depth, labelled frames with depth, unlabelled frames without
    depth) of a split, by index."""
    unlabelled, labelled, no_depth = [], [], 0
    for i, f in enumerate(src.frames):
        if not f.get("depth"):
            no_depth += 0 if f.get("seg") else 1
        elif f.get("seg"):
            labelled.append(i)
        else:
            unlabelled.append(i)
    return unlabelled, labelled, no_depth


def training_frames(data_dir: Path) -> FolderSource:
    """The split frames are chosen from: `train` when the dataset has splits, else all."""
    index = read_index(data_dir)
    splits = index.get("splits") or {}
    return FolderSource(data_dir, "train" if "train" in splits else None)


def run_select(teacher: LoadedTeacher, data_dir: str | Path, out: str | Path,
               rule: SelectionRule, size: tuple[int, int], device: torch.device | str = "cpu",
               pre_annotate: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Choose rule.budget frames of the folder dataset `data_dir` and write the selection folder
    `out` (module docstring). Returns the manifest."""
    rule.check()
    data_dir, out, device = Path(data_dir), Path(out), torch.device(device)
    if teacher.aux_input != "depth" or teacher.target != "seg":
        raise LabelingError(f"{teacher.path}: select ranks frames by the uncertainty of an RGB + "
                            f"depth -> segmentation teacher; this one reads {teacher.aux_input} "
                            f"and predicts {teacher.target}")
    if (out / MANIFEST).is_file() and not overwrite:
        raise LabelingError(f"{out / MANIFEST} exists: choose another --out or pass --overwrite")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise LabelingError(f"{out}: not empty and not a selection folder; choose a new or "
                            "empty --out")
    src = training_frames(data_dir)
    classes = list(src.info.classes)
    if teacher.model.num_classes != len(classes):
        raise LabelingError(f"{teacher.path}: the teacher predicts {teacher.model.num_classes} "
                            f"classes, {data_dir} has {len(classes)}")
    teacher.model.to(device)
    unlabelled, labelled, no_depth = candidate_frames(src)
    if overwrite:  # a previous selection's masks must not be imported as this one's
        (out / MANIFEST).unlink(missing_ok=True)
        for sub in OUTPUTS:
            shutil.rmtree(out / sub, ignore_errors=True)
    if not unlabelled:
        raise LabelingError(f"{data_dir}: no {src.split or 'dataset'} frame lacks a "
                            "segmentation label (and has the depth the teacher reads)")
    log.info("scoring %d unlabelled and %d labelled frames", len(unlabelled), len(labelled))
    scores = score_frames(teacher, src, unlabelled, size, rule.tau, rule.batch_size, device)
    centres = ([s.feature for s in score_frames(teacher, src, labelled, size, rule.tau,
                                                rule.batch_size, device)]
               if rule.strategy != "random" or rule.min_feature_distance > 0 else [])
    choice = choose(scores, centres, rule)

    colours = label_colours(src.info.palette, len(classes))
    frames, names, masks, tasks = [], [], [], []
    for pick in choice.picks:
        s = pick.score
        name = safe_name(s.frame_id)
        raw = src.frame(s.index)
        write_file(out / "images" / f"{name}.png", encode_png(raw.rgb))
        rec: dict[str, Any] = {
            "rank": pick.rank, "id": s.frame_id, "name": name, "index": s.index,
            "stamp_ns": s.stamp_ns, "recording": s.recording or None,
            "image": f"images/{name}.png", "size": list(raw.rgb.shape[:2]),
            "uncertainty": s.uncertainty, "coverage": s.coverage, "entropy": s.entropy,
            "distance": pick.distance, "score": None if np.isnan(pick.value) else pick.value}
        if pre_annotate:
            mask = pre_annotation(teacher, src, s.index, size, rule.tau, device)
            rec.update(write_png_export(out, name, mask, colours, len(classes)))
            rec["pre_annotation_sha256"] = mask_sha256(mask)
            masks.append(mask)
        tasks.append(label_studio.task(out, name, s.frame_id, masks[-1] if pre_annotate else None,
                                       classes, f"teacher {teacher.sha256[:12]}"))
        names.append(name)
        frames.append(rec)
    write_text_atomic(out / "classes.txt", classes_text(classes, colours))
    write_text_atomic(out / "cvat" / "labelmap.txt", labelmap_text(classes, colours))
    write_text_atomic(out / "cvat" / "labels.json", cvat_labels_json(classes, colours))
    ls_dir = out / "label_studio"
    write_text_atomic(ls_dir / label_studio.CONFIG, label_studio.label_config_xml(classes, colours))
    write_text_atomic(ls_dir / label_studio.TASKS, json.dumps(tasks) + "\n")
    exports: dict[str, Any] = {"images": "images/", "classes": "classes.txt",
                               "cvat_labelmap": "cvat/labelmap.txt",
                               "cvat_labels": "cvat/labels.json",
                               "label_studio_config": f"label_studio/{label_studio.CONFIG}",
                               "label_studio_tasks": f"label_studio/{label_studio.TASKS}"}
    if pre_annotate:
        write_cvat_zip(out / "cvat" / CVAT_ZIP, names, masks, classes, colours)
        exports.update(masks="masks/", masks_color="masks_color/", cvat=f"cvat/{CVAT_ZIP}")
    manifest = {
        "format": FORMAT, "dataset": dataset_identity(src), "data_dir": str(data_dir.resolve()),
        "split": src.split, "teacher": {"checkpoint": str(teacher.path),
                                        "sha256": teacher.sha256},
        "rule": {**asdict(rule), "network_size": list(size),
                 "uncertainty": "(1 - coverage at tau + mean entropy / log(classes)) / 2",
                 "diversity_term": "k-center greedy: L2 distance of the teacher's pooled "
                                   "deepest fused features to the nearest chosen or labelled "
                                   "frame, divided by the largest such distance",
                 "score": "(1 - diversity) * uncertainty + diversity * distance"},
        "pre_annotated": pre_annotate, "classes": classes,
        "colours": [list(c) for c in colours], "ignore_id": IGNORE_INDEX,
        "candidates": len(unlabelled), "labelled": len(labelled),
        "skipped": {**choice.skipped, "no_depth": no_depth}, "chosen": len(frames),
        "frames": frames, "exports": exports}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def read_selection(path: Path) -> dict[str, Any] | None:
    """A selection folder's manifest, None when `path` holds none."""
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelingError(f"{file}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise LabelingError(f"{file}: format {got!r}, expected {FORMAT!r} (a folder written by "
                            "`mtl-train select`)")
    return manifest
