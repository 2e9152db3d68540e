"""`run_pseudo_label`: a frozen multi-modal teacher labels the frames nobody labelled.

METHOD.md A: run the teacher on frames that carry its auxiliary input (depth) but lack the target
label (segmentation); keep a pixel's argmax only where the softmax confidence reaches tau, else 255
(thresholds.py, also for the reverse direction: segmentation in, depth out, where a pixel is
kept where the prediction agrees with the one on the mirrored frame, or, with
pseudo.depth_filter=calibrated, within the disagreement that held-out frames with sensor depth
show to be accurate enough: a constant prediction passes the first rule and not the second).
Each finished frame is one PNG and one journal line in the store (store.py), so an interrupted
run continues where it stopped, and the manifest records per-frame coverage and, where ground
truth was held back, the accuracy of the kept pixels.

Under torchrun the frames are shared out: every rank checks the folder the same way, rank 0 writes
the manifest header, each rank labels every world-th frame still to do and appends its journal
lines (one O_APPEND write per line, on a local disk), the per-class confidence histogram is summed
over ranks, and rank 0 writes the final manifest from the journal once every rank has finished.
The folder is the same as one process writes (same files, same manifest).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_perception.core.fileio import write_json_atomic
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_training import distributed
from mtl_training.config import PseudoLabelConfig
from mtl_training.data.datasets import MultiTaskDataset
from mtl_training.data.identity import dataset_identity, same_dataset
from mtl_training.data.sources.folder import depth_to_mm
from mtl_training.data.transforms import make_sample
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.provenance import teacher_provenance
from mtl_training.pseudo.store import (
    FORMAT,
    JOURNAL,
    MANIFEST,
    no_identity_message,
    other_dataset_message,
    read_journal,
    read_manifest,
    write_label,
)
from mtl_training.pseudo.teacher import LoadedTeacher
from mtl_training.pseudo.thresholds import (
    CONF_BINS,
    MODES,
    DepthCalibration,
    apply_thresholds,
    calibrated_depth_keep,
    class_thresholds,
    confidence_histogram,
    depth_keep,
    flip_disagreement,
    precision_thresholds,
    seg_confidence,
)

log = logging.getLogger("mtl_training.pseudo.run")


def frames_to_label(dataset: MultiTaskDataset, aux_input: str) -> list[int]:
    """Training frames that keep the teacher's input but not its target label."""
    keep_aux = dataset.keep_depth if aux_input == "depth" else dataset.keep_seg
    keep_target = dataset.keep_seg if aux_input == "depth" else dataset.keep_depth
    return [int(i) for i in np.flatnonzero(keep_aux & ~keep_target)]


def _safe_id(frame_id: str) -> str:
    return frame_id.replace(os.sep, "_").replace("/", "_")


@dataclass
class _Item:
    index: int
    frame_id: str
    raw_seg: np.ndarray | None  # held-back ground truth of the target (scoring only)
    raw_depth: np.ndarray | None
    shape: tuple[int, int]


def _batches(teacher: LoadedTeacher, dataset: MultiTaskDataset, indices: list[int],
             batch_size: int) -> Iterator[tuple[list[_Item], Tensor, Tensor]]:
    """(items, image [B, 3, h, w], aux) batches at network size; frames lacking the input skip.

    Images are normalised as the teacher's encoder expects (its family's statistics)."""
    stats = encoder_input_stats(str(teacher.config.get("model", {}).get("encoder", "resnet18")))
    for start in range(0, len(indices), batch_size):
        items, images, auxes = [], [], []
        for i in indices[start:start + batch_size]:
            raw = dataset.source.frame(i)
            aux = raw.depth if teacher.aux_input == "depth" else raw.seg
            if aux is None:
                log.warning("frame %d has no %s on disk: skipped", i, teacher.aux_input)
                continue
            s = make_sample(raw.rgb, aux if teacher.aux_input == "depth" else None,
                            aux if teacher.aux_input == "seg" else None, dataset.size,
                            stats=stats)
            fid = str(raw.meta.get("frame_id", f"{i:06d}"))
            items.append(_Item(i, fid, raw.seg, raw.depth, raw.rgb.shape[:2]))
            images.append(s["image"])
            auxes.append(s[teacher.aux_input])
        if items:
            yield items, torch.stack(images), torch.stack(auxes)


@torch.inference_mode()
def _predict(teacher: LoadedTeacher, image: Tensor, aux: Tensor, device: torch.device,
             flip: bool = False) -> Tensor:
    if flip:
        image, aux = image.flip(-1), aux.flip(-1)
    out = teacher.model(image.to(device), aux.to(device))[teacher.target].float()
    return out.flip(-1) if flip else out


def _upsample(x: Tensor, shape: tuple[int, int]) -> Tensor:
    # x [C, h, w] -> [C, H, W]; bilinear logits/depth, then the label is decided at full size
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return F.interpolate(x[None], size=shape, mode="bilinear", align_corners=False)[0]


def _teacher_outputs(teacher: LoadedTeacher, dataset: MultiTaskDataset, indices: list[int],
                     batch_size: int, device: torch.device, cache: dict | None,
                     desc: str, progress: bool) -> Iterator[tuple[_Item, Any]]:
    """Per frame: seg -> (conf, argmax) at frame size; depth -> (pred, pred on mirrored frame)."""
    bar = tqdm(total=len(indices), desc=desc, unit="frame", disable=None if progress else True,
               dynamic_ncols=True)
    todo = [i for i in indices if cache is None or i not in cache]
    cached = [i for i in indices if cache is not None and i in cache]
    for i in cached:
        bar.update(1)
        yield cache[i]
    for items, image, aux in _batches(teacher, dataset, todo, batch_size):
        out = _predict(teacher, image, aux, device)  # [B, C|1, h, w]
        out_flip = _predict(teacher, image, aux, device, flip=True) \
            if teacher.target == "depth" else None
        for k, item in enumerate(items):
            if teacher.target == "seg":
                result = seg_confidence(_upsample(out[k], item.shape))
            else:
                result = (_upsample(out[k], item.shape)[0].cpu().numpy(),
                          _upsample(out_flip[k], item.shape)[0].cpu().numpy())
            if cache is not None:
                cache[item.index] = (item, result)
            bar.update(1)
            yield item, result
    bar.close()


def _seg_record(item: _Item, conf: np.ndarray, arg: np.ndarray, thresholds: np.ndarray,
                num_classes: int) -> tuple[np.ndarray, dict[str, Any]]:
    label = apply_thresholds(conf, arg, thresholds)
    kept = label != IGNORE_INDEX
    rec: dict[str, Any] = {
        "pixels": int(label.size), "kept": int(kept.sum()),
        "predicted_per_class": np.bincount(arg.reshape(-1), minlength=num_classes).tolist(),
        "kept_per_class": np.bincount(label[kept].astype(np.int64),
                                      minlength=num_classes).tolist(),
    }
    if item.raw_seg is not None:  # held-back ground truth: how right are the kept pixels?
        gt = item.raw_seg.astype(np.int64)
        scored = kept & (gt != IGNORE_INDEX)
        hit = scored & (label == gt)
        rec["scored"] = int(scored.sum())
        rec["correct"] = int(hit.sum())
        rec["correct_per_class"] = np.bincount(label[hit].astype(np.int64),
                                               minlength=num_classes).tolist()
        rec["scored_per_class"] = np.bincount(label[scored].astype(np.int64),
                                              minlength=num_classes).tolist()
    rec["coverage"] = rec["kept"] / max(rec["pixels"], 1)
    return label, rec


def _depth_record(item: _Item, pred: np.ndarray, pred_flip: np.ndarray, max_depth: float,
                  rel_tol: float, threshold: float | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The pseudo-depth of one frame: flip-consistent within rel_tol, or, given a calibrated
    `threshold`, flip disagreement within it (pseudo/thresholds.py)."""
    keep = (depth_keep(pred, pred_flip, max_depth, rel_tol) if threshold is None
            else calibrated_depth_keep(pred, pred_flip, max_depth, threshold))
    depth = np.where(keep, pred, 0.0).astype(np.float32)
    rec: dict[str, Any] = {"pixels": int(depth.size), "kept": int(keep.sum())}
    if item.raw_depth is not None:
        gt = item.raw_depth
        scored = keep & (gt > 1e-3)
        p, t = pred[scored].astype(np.float64), gt[scored].astype(np.float64)
        rec["scored"] = int(scored.sum())
        rec["abs_err_sum"] = float(np.abs(p - t).sum())
        rec["rel_err_sum"] = float((np.abs(p - t) / t).sum())
        rec["delta1_count"] = int((np.maximum(p / t, t / np.maximum(p, 1e-9)) < 1.25).sum())
    rec["coverage"] = rec["kept"] / max(rec["pixels"], 1)
    return depth, rec


def summarize_records(records: dict[str, dict[str, Any]], task: str,
                      classes: list[str]) -> dict[str, Any]:
    """Coverage overall and per class; accuracy of kept pixels where ground truth was held back."""
    recs = list(records.values())
    pixels = sum(r["pixels"] for r in recs)
    kept = sum(r["kept"] for r in recs)
    out: dict[str, Any] = {"frames": len(recs), "coverage": kept / pixels if pixels else 0.0}
    scored = sum(r.get("scored", 0) for r in recs)
    if task == "seg":
        pred_c = np.sum([r["predicted_per_class"] for r in recs], axis=0) if recs else None
        kept_c = np.sum([r["kept_per_class"] for r in recs], axis=0) if recs else None
        if recs:
            out["per_class_coverage"] = {n: float(kept_c[i] / pred_c[i]) if pred_c[i] else None
                                         for i, n in enumerate(classes)}
            out["per_class_share_of_kept"] = {n: float(kept_c[i] / max(kept, 1))
                                              for i, n in enumerate(classes)}
        if scored:
            out["kept_accuracy"] = sum(r["correct"] for r in recs) / scored
            sc = np.sum([r["scored_per_class"] for r in recs if "scored" in r], axis=0)
            cc = np.sum([r["correct_per_class"] for r in recs if "scored" in r], axis=0)
            out["per_class_kept_accuracy"] = {n: float(cc[i] / sc[i]) if sc[i] else None
                                              for i, n in enumerate(classes)}
    elif scored:
        out["kept_abs_err"] = sum(r["abs_err_sum"] for r in recs) / scored
        out["kept_rel_err"] = sum(r["rel_err_sum"] for r in recs) / scored
        out["kept_delta1"] = sum(r["delta1_count"] for r in recs) / scored
    return out


Calibration = MultiTaskDataset | Sequence[MultiTaskDataset]


def _calibration_sets(calibration: Calibration) -> list[MultiTaskDataset]:
    """One held-out set, or one per source a multi-source teacher trained on."""
    if isinstance(calibration, MultiTaskDataset):
        return [calibration]
    return list(calibration)


def _calibration_identity(calibration: Calibration) -> dict[str, Any] | list[dict[str, Any]]:
    """The manifest's `calibration`: one identity, or a list for several sources."""
    ids = [dataset_identity(c.source) for c in _calibration_sets(calibration)]
    return ids[0] if len(ids) == 1 else ids


def calibrate_seg(teacher: LoadedTeacher, calibration: Calibration,
                  cfg: PseudoLabelConfig, device: torch.device, num_classes: int
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-class thresholds at cfg.target_precision on labelled frames the teacher never trained
    on (pseudo/thresholds.py precision_thresholds), and what they kept there. Pixel precision
    on the teacher's own held-out frames: on another domain the teacher is less often right at
    the same confidence, so the target's precision is lower than this (the manifest says
    cross_domain). Several sets (a teacher trained on several sources): their pixels pooled."""
    all_hist = np.zeros((num_classes, CONF_BINS), np.int64)
    right_hist = np.zeros((num_classes, CONF_BINS), np.int64)
    frames = 0
    for held_out in _calibration_sets(calibration):
        for item, (conf, arg) in _teacher_outputs(teacher, held_out, list(range(len(held_out))),
                                                  cfg.batch_size, device, None, "calibrate",
                                                  False):
            if item.raw_seg is None:
                continue
            gt = item.raw_seg.astype(np.int64)
            scored = gt != IGNORE_INDEX
            hit = scored & (arg == gt)
            all_hist += confidence_histogram(conf[scored], arg[scored], num_classes)
            right_hist += confidence_histogram(conf[hit], arg[hit], num_classes)
            frames += 1
    if frames == 0:
        raise PseudoLabelError("pseudo.calibrate=teacher_val: none of the teacher's held-out "
                               "frames carries its input and a segmentation label")
    thresholds, per_class = precision_thresholds(all_hist, right_hist, cfg.tau,
                                                 cfg.target_precision)
    total, right = int(all_hist.sum()), int(right_hist.sum())
    kept = sum(int(all_hist[c, round(t * CONF_BINS):].sum()) if t <= 1.0 else 0
               for c, t in enumerate(thresholds))
    kept_right = sum(int(right_hist[c, round(t * CONF_BINS):].sum()) if t <= 1.0 else 0
                     for c, t in enumerate(thresholds))
    return thresholds, {"frames": frames, "pixels": total,
                        "accuracy_all_pixels": right / max(total, 1),
                        "coverage": kept / max(total, 1),
                        "precision": kept_right / kept if kept else None,
                        "target_precision": cfg.target_precision, "per_class": per_class}


def calibrate_depth(teacher: LoadedTeacher, calibration: MultiTaskDataset, batch_size: int,
                    device: torch.device) -> DepthCalibration:
    """(flip disagreement, relative error) of the teacher on frames that carry its input and
    sensor depth and that it never trained on: what the calibrated filter's threshold reads."""
    cal = DepthCalibration()
    max_depth = calibration.info.max_depth
    indices = [int(i) for i in np.flatnonzero(calibration.keep_seg & calibration.keep_depth)]
    for item, (pred, pred_flip) in _teacher_outputs(teacher, calibration, indices, batch_size,
                                                    device, None, "calibrate", False):
        if item.raw_depth is None:
            continue
        inside = (pred > 1e-3) & (pred < 0.99 * max_depth)
        cal.add(flip_disagreement(pred, pred_flip), pred, item.raw_depth, inside)
    return cal


def run_pseudo_label(teacher: LoadedTeacher, dataset: MultiTaskDataset, out: str | Path,
                     cfg: PseudoLabelConfig, device: torch.device | str = "cpu",
                     overwrite: bool = False, max_frames: int = 0, progress: bool = True,
                     cache: dict | None = None,
                     calibration: Calibration | None = None) -> dict[str, Any]:
    """Label every frame of `dataset` that keeps the teacher's input but not its target.

    Resumable: frames already in progress.jsonl (with their file present) are skipped; a folder
    written with other settings (dataset identity, teacher hash, tau, mode, frames) is refused
    unless `overwrite`. The manifest records the dataset's identity (mtl_training.data.identity)
    so a student can refuse labels made from another dataset.
    `max_frames` > 0 stops after that many new frames (a time-sliced run; call again to finish).
    `cache` (a dict kept by the caller) reuses teacher outputs across calls, e.g. a tau sweep.
    `calibration`: labelled frames the teacher never trained on, which pseudo.depth_filter
    "calibrated" needs (a depth target only), or the teacher's own held-out labelled frames
    that pseudo.calibrate=teacher_val reads (one set per source of a multi-source teacher);
    every rank reads all of them (they are few).
    Returns the manifest's summary; the manifest says "complete": true once every frame is done.
    Launched by torchrun, the ranks share the frames (module docstring).
    """
    ctx = distributed.from_env()
    device = distributed.rank_device(ctx, torch.device(device))
    owned = distributed.init(ctx, device)
    try:
        ctx = distributed.current()
        teacher.model.to(device)  # frozen and never wrapped: each rank holds its own copy
        return _run(teacher, dataset, Path(out), cfg, device, overwrite, max_frames, progress,
                    cache, ctx, calibration)
    finally:
        distributed.shutdown(owned)


def _run(teacher: LoadedTeacher, dataset: MultiTaskDataset, out: Path, cfg: PseudoLabelConfig,
         device: torch.device, overwrite: bool, max_frames: int, progress: bool,
         cache: dict | None, ctx: distributed.Dist,
         calibration: Calibration | None = None) -> dict[str, Any]:
    main = ctx.is_main
    progress = progress and main
    task, classes = teacher.target, list(dataset.info.classes)
    if task == "seg" and cfg.mode not in MODES:
        raise PseudoLabelError(f"Unknown pseudo.mode '{cfg.mode}' (available: {', '.join(MODES)})")
    if not 0.0 < cfg.tau <= 1.0:
        raise PseudoLabelError(f"pseudo.tau must be in (0, 1], got {cfg.tau}")
    indices = frames_to_label(dataset, teacher.aux_input)
    planned = [dataset.frame_id(i) for i in indices]
    identity = dataset_identity(dataset.source)
    settings: dict[str, Any] = {
        "format": FORMAT, "dataset": identity, "task": task, "aux_input": teacher.aux_input,
        "teacher": {"checkpoint": str(teacher.path), "sha256": teacher.sha256},
        "network_size": list(dataset.size), "classes": classes,
    }
    if task == "seg":
        settings.update(tau=cfg.tau, mode=cfg.mode)
        if cfg.mode == "per_class":
            settings["per_class_quantile"] = cfg.per_class_quantile
        if cfg.calibrate == "teacher_val":  # absent for "none": older folders still resume
            if calibration is None:
                raise PseudoLabelError(
                    "pseudo.calibrate=teacher_val needs the teacher's held-out labelled frames "
                    "(its validation split, with its input and segmentation labels)")
            settings.update(calibrate=cfg.calibrate, target_precision=cfg.target_precision,
                            calibration=_calibration_identity(calibration))
    else:
        settings.update(depth_rel_tol=cfg.depth_rel_tol, max_depth=dataset.info.max_depth)
        if cfg.depth_filter == "calibrated":  # absent for "flip": older folders still resume
            if calibration is None:
                raise PseudoLabelError(
                    "pseudo.depth_filter=calibrated needs calibration frames: labelled frames "
                    "with the teacher's input and sensor depth that it never trained on")
            settings.update(depth_filter=cfg.depth_filter,
                            depth_max_rel_err=cfg.depth_max_rel_err,
                            calibration=dataset_identity(calibration.source))
        elif cfg.depth_filter != "flip":
            raise PseudoLabelError(f"Unknown pseudo.depth_filter '{cfg.depth_filter}' "
                                   "(available: flip, calibrated)")
    manifest_path = out / MANIFEST
    previous = read_manifest(manifest_path) if manifest_path.is_file() and not overwrite else None
    if previous is not None:
        if not isinstance(previous.get("dataset"), dict):
            raise PseudoLabelError(no_identity_message(manifest_path, out))
        if not same_dataset(previous["dataset"], identity):
            raise PseudoLabelError(other_dataset_message(manifest_path, previous["dataset"],
                                                         identity) + " or pass --overwrite")
        previous["dataset"] = identity  # same frames, perhaps moved: record where they are now
        for key, value in {**settings, "planned": planned}.items():
            if previous.get(key) != value:
                raise PseudoLabelError(
                    f"{manifest_path} was written with other settings ({key}: "
                    f"{previous.get(key)!r} != {value!r}); choose another --out or pass "
                    "--overwrite")
    ctx.barrier()  # every rank has read the old folder before rank 0 changes it
    if main:
        if overwrite and (out / JOURNAL).is_file():
            (out / JOURNAL).unlink()
        out.mkdir(parents=True, exist_ok=True)

    thresholds, seg_calibration = None, None
    if task == "seg":
        if previous is not None and previous.get("thresholds") is not None:
            thresholds = np.asarray(previous["thresholds"], np.float64)
            seg_calibration = previous.get("seg_calibration")
        else:
            hist = None
            if cfg.mode == "per_class" and settings.get("calibrate") != "teacher_val":
                # pass 1: each class's confidence distribution
                hist = np.zeros((len(classes), CONF_BINS), np.int64)
                share = indices[ctx.rank::ctx.world]  # every frame on exactly one rank
                for _, (conf, arg) in _teacher_outputs(teacher, dataset, share, cfg.batch_size,
                                                       device, cache, "confidences", progress):
                    hist += confidence_histogram(conf, arg, len(classes))
                if ctx.active:
                    total = torch.from_numpy(hist).to(device)
                    hist = ctx.sum_(total).cpu().numpy()
            if settings.get("calibrate") == "teacher_val":
                thresholds, seg_calibration = calibrate_seg(teacher, calibration, cfg, device,
                                                            len(classes))
            else:
                thresholds = class_thresholds(len(classes), cfg.tau, cfg.mode, hist,
                                              cfg.per_class_quantile)
    depth_threshold, calibrated = None, None
    if settings.get("depth_filter") == "calibrated":
        if previous is not None and previous.get("depth_threshold") is not None:
            depth_threshold = float(previous["depth_threshold"])
            calibrated = previous.get("calibrated")
        else:
            cal = calibrate_depth(teacher, calibration, cfg.batch_size, device)
            depth_threshold = cal.threshold(cfg.depth_max_rel_err)
            calibrated = cal.kept_stats(depth_threshold)
            calibrated["threshold"] = depth_threshold
    header = {**settings, "thresholds": None if thresholds is None else thresholds.tolist(),
              "planned": planned, **teacher_provenance(teacher.config, identity)}
    if calibrated is not None:  # -1 = nothing kept: no prefix of the ranking was accurate
        header.update(depth_threshold=depth_threshold, calibrated=calibrated)
    if seg_calibration is not None:
        header["seg_calibration"] = seg_calibration
    if main:
        write_json_atomic(manifest_path, {**header, "complete": False, "frames": {}})
    ctx.barrier()

    done = read_journal(out)
    todo = [i for i, fid in zip(indices, planned, strict=True) if fid not in done]
    if max_frames > 0:
        todo = todo[:max_frames]
    todo = todo[ctx.rank::ctx.world]  # this rank's share (all of it for one process)
    with (out / JOURNAL).open("a") as journal:
        for item, result in _teacher_outputs(teacher, dataset, todo, cfg.batch_size, device,
                                             cache, f"pseudo-label {task}", progress):
            name = f"{task}/{_safe_id(item.frame_id)}.png"
            if task == "seg":
                label, rec = _seg_record(item, *result, thresholds, len(classes))
                image = label
            else:
                depth, rec = _depth_record(item, *result, dataset.info.max_depth,
                                           cfg.depth_rel_tol, depth_threshold)
                image = depth_to_mm(depth)
            write_label(out, name, image)  # atomic: a file under its final name is whole
            rec = {"id": item.frame_id, "file": name, **rec}
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[item.frame_id] = rec

    if ctx.active:  # every rank's lines are in the journal once all have finished
        ctx.barrier()
        done = read_journal(out)
    records = {fid: done[fid] for fid in planned if fid in done}
    complete = len(records) == len(planned)
    summary = summarize_records(records, task, classes)
    if calibrated is not None:  # what the calibration frames predicted for the kept pixels
        summary["calibration"] = calibrated
    if seg_calibration is not None:
        summary["seg_calibration"] = seg_calibration
    if main:
        write_json_atomic(manifest_path, {**header, "complete": complete, "summary": summary,
                                          "frames": records})
    ctx.barrier()
    return {**summary, "complete": complete, "planned": len(planned),
            "cross_domain": header["cross_domain"]}

