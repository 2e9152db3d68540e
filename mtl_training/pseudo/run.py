"""`mtl-train pseudo-label`: a frozen multi-modal teacher labels the frames nobody labelled.

METHOD.md A: run the teacher on frames that carry its auxiliary input (depth) but lack the target
label (segmentation); keep a pixel's argmax only where the softmax confidence reaches tau, else 255.
A global tau starves rare classes (a teacher is rarely as sure about a ball as about the floor),
so a per-class mode lowers each class's threshold to a quantile of its own confidences, never
above tau. The reverse direction (segmentation in, depth out) keeps a pixel where the prediction
agrees with the prediction on the mirrored frame (|d - d_flip| <= depth_rel_tol * d): a regressor
has no softmax, and left-right consistency is a cheap stand-in for confidence.

Store layout (`--out`):
    manifest.json    format, task, teacher checkpoint + sha256, tau/mode/thresholds, planned
                     frames, per-frame records and the summary; "complete": false until the end
    progress.jsonl   one record per finished frame, appended as it is written (the resume log)
    seg/<id>.png     8-bit class ids, 255 = not confident          (task seg)
    depth/<id>.png   16-bit millimetres, 0 = not kept                (task depth)
Labels are written at the frame's own resolution, so the dataset treats them exactly like ground
truth. An interrupted run continues where it stopped: frames in progress.jsonl are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_training.apps.train_cli import UserError, command, config_from_args
from mtl_training.checkpoint import CheckpointError, model_from_checkpoint
from mtl_training.config import PseudoLabelConfig
from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_training.data.datasets import MultiTaskDataset
from mtl_perception.core.fileio import write_json_atomic
from mtl_training.data.sources.folder import depth_to_mm, read_png, write_png

log = logging.getLogger("mtl_training.pseudo.run")

FORMAT = "mtl_perception.pseudo_labels/1"
MANIFEST = "manifest.json"
JOURNAL = "progress.jsonl"
CONF_BINS = 10_000  # per-class mode: confidence histogram resolution (thresholds to 1e-4)
MODES = ("global", "per_class")


class PseudoLabelError(UserError):
    """A teacher checkpoint or pseudo-label folder is unusable; the message names it and the fix."""


# -- the teacher -------------------------------------------------------------------------------
@dataclass
class LoadedTeacher:
    model: nn.Module  # frozen: eval(), requires_grad False; used under inference_mode only
    path: Path  # the checkpoint file used
    sha256: str  # of that file: the manifest's "teacher artifact hash"
    config: dict[str, Any]  # the teacher's resolved training config

    @property
    def aux_input(self) -> str:
        return self.model.aux_input

    @property
    def target(self) -> str:
        return self.model.target


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def freeze(model: nn.Module) -> nn.Module:
    """A teacher never trains here: BN statistics stay fixed (eval) and no gradient is kept."""
    model.eval()
    model.requires_grad_(False)
    return model


def load_teacher(path: str | Path, checkpoint: str = "best",
                 device: torch.device | str = "cpu") -> LoadedTeacher:
    """The teacher of a run directory (`<dir>/<checkpoint>.pt`) or a checkpoint file, frozen."""
    path = Path(path)
    ckpt_path = path / f"{checkpoint}.pt" if path.is_dir() else path
    if not ckpt_path.is_file():
        raise PseudoLabelError(f"no teacher checkpoint at {ckpt_path} (train one with "
                               "`mtl-train train --stage teacher`)")
    try:
        model, ckpt = model_from_checkpoint(ckpt_path, device)
    except CheckpointError as exc:
        raise PseudoLabelError(str(exc)) from exc
    if getattr(model, "aux_input", None) is None:
        raise PseudoLabelError(f"{ckpt_path} holds a '{ckpt['config']['model'].get('arch')}' "
                               "model, not a teacher (train with model.arch=teacher)")
    freeze(model)
    return LoadedTeacher(model, ckpt_path, file_sha256(ckpt_path), ckpt["config"])


# -- thresholding ------------------------------------------------------------------------------
def seg_confidence(logits: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """logits [C, H, W] -> (confidence float32 [H, W], argmax int64 [H, W])."""
    conf, arg = torch.softmax(logits.float(), dim=0).max(dim=0)
    return conf.cpu().numpy(), arg.cpu().numpy()


def apply_thresholds(conf: np.ndarray, arg: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: the argmax where conf >= thresholds[argmax], else 255."""
    keep = conf >= np.asarray(thresholds, np.float32)[arg]
    return np.where(keep, arg, IGNORE_INDEX).astype(np.uint8)


def confidence_histogram(conf: np.ndarray, arg: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, CONF_BINS] counts of pixel confidences per predicted class."""
    bins = np.minimum((conf.reshape(-1) * CONF_BINS).astype(np.int64), CONF_BINS - 1)
    flat = arg.reshape(-1).astype(np.int64) * CONF_BINS + bins
    return np.bincount(flat, minlength=num_classes * CONF_BINS).reshape(num_classes, CONF_BINS)


def class_thresholds(num_classes: int, tau: float, mode: str = "global",
                     hist: np.ndarray | None = None, quantile: float = 0.5) -> np.ndarray:
    """Per-class confidence thresholds [C].

    global: tau for every class. per_class: min(tau, q-quantile of the confidences of the pixels
    predicted as that class), with the quantile taken at the lower edge of its histogram bin, so
    at least a (1 - q) share of every predicted class survives; a class never predicted keeps tau.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown pseudo-label mode '{mode}' (available: {', '.join(MODES)})")
    thr = np.full(num_classes, tau, dtype=np.float64)
    if mode == "global":
        return thr
    if hist is None:
        raise ValueError("per_class mode needs the teacher's confidence histogram")
    for c in range(num_classes):
        total = hist[c].sum()
        if total == 0:
            continue
        b = int(np.searchsorted(np.cumsum(hist[c]), quantile * total, side="left"))
        thr[c] = min(tau, b / CONF_BINS)
    return thr


def depth_keep(pred: np.ndarray, pred_flip: np.ndarray, max_depth: float,
               rel_tol: float) -> np.ndarray:
    """Validity rule for pseudo-depth: inside the range and flip-consistent within rel_tol."""
    inside = (pred > 1e-3) & (pred < 0.99 * max_depth)  # a saturated sigmoid is no measurement
    return inside & (np.abs(pred - pred_flip) <= rel_tol * pred)


# -- labelling ---------------------------------------------------------------------------------
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
    """(items, image [B, 3, h, w], aux) batches at network size; frames lacking the input skip."""
    from mtl_training.data.transforms import make_sample

    for start in range(0, len(indices), batch_size):
        items, images, auxes = [], [], []
        for i in indices[start:start + batch_size]:
            raw = dataset.source.frame(i)
            aux = raw.depth if teacher.aux_input == "depth" else raw.seg
            if aux is None:
                log.warning("frame %d has no %s on disk: skipped", i, teacher.aux_input)
                continue
            s = make_sample(raw.rgb, aux if teacher.aux_input == "depth" else None,
                            aux if teacher.aux_input == "seg" else None, dataset.size)
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
    from tqdm import tqdm

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
                  rel_tol: float) -> tuple[np.ndarray, dict[str, Any]]:
    keep = depth_keep(pred, pred_flip, max_depth, rel_tol)
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PseudoLabelError(f"{path}: unreadable ({exc}); delete the folder or pass "
                               "--overwrite") from exc


def _read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """Finished frames; a torn last line (a crash mid-write) is simply not finished."""
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


def run_pseudo_label(teacher: LoadedTeacher, dataset: MultiTaskDataset, out: str | Path,
                     cfg: PseudoLabelConfig, device: torch.device | str = "cpu",
                     overwrite: bool = False, max_frames: int = 0, progress: bool = True,
                     cache: dict | None = None) -> dict[str, Any]:
    """Label every frame of `dataset` that keeps the teacher's input but not its target.

    Resumable: frames already in progress.jsonl (with their file present) are skipped; a folder
    written with other settings (teacher hash, tau, mode, frames) is refused unless `overwrite`.
    `max_frames` > 0 stops after that many new frames (a time-sliced run; call again to finish).
    `cache` (a dict kept by the caller) reuses teacher outputs across calls, e.g. a tau sweep.
    Returns the manifest's summary; the manifest says "complete": true once every frame is done.
    """
    out = Path(out)
    device = torch.device(device)
    task, classes = teacher.target, list(dataset.info.classes)
    if task == "seg" and cfg.mode not in MODES:
        raise PseudoLabelError(f"Unknown pseudo.mode '{cfg.mode}' (available: {', '.join(MODES)})")
    if not 0.0 < cfg.tau <= 1.0:
        raise PseudoLabelError(f"pseudo.tau must be in (0, 1], got {cfg.tau}")
    indices = frames_to_label(dataset, teacher.aux_input)
    planned = [dataset.frame_id(i) for i in indices]
    settings: dict[str, Any] = {
        "format": FORMAT, "task": task, "aux_input": teacher.aux_input,
        "teacher": {"checkpoint": str(teacher.path), "sha256": teacher.sha256},
        "network_size": list(dataset.size), "classes": classes,
    }
    if task == "seg":
        settings.update(tau=cfg.tau, mode=cfg.mode)
        if cfg.mode == "per_class":
            settings["per_class_quantile"] = cfg.per_class_quantile
    else:
        settings.update(depth_rel_tol=cfg.depth_rel_tol, max_depth=dataset.info.max_depth)
    manifest_path = out / MANIFEST
    previous = _read_json(manifest_path) if manifest_path.is_file() and not overwrite else None
    if previous is not None:
        for key, value in {**settings, "planned": planned}.items():
            if previous.get(key) != value:
                raise PseudoLabelError(
                    f"{manifest_path} was written with other settings ({key}: "
                    f"{previous.get(key)!r} != {value!r}); choose another --out or pass "
                    "--overwrite")
    if overwrite and (out / JOURNAL).is_file():
        (out / JOURNAL).unlink()
    out.mkdir(parents=True, exist_ok=True)

    thresholds = None
    if task == "seg":
        if previous is not None and previous.get("thresholds") is not None:
            thresholds = np.asarray(previous["thresholds"], np.float64)
        else:
            hist = None
            if cfg.mode == "per_class":  # pass 1: each class's confidence distribution
                hist = np.zeros((len(classes), CONF_BINS), np.int64)
                for _, (conf, arg) in _teacher_outputs(teacher, dataset, indices, cfg.batch_size,
                                                       device, cache, "confidences", progress):
                    hist += confidence_histogram(conf, arg, len(classes))
            thresholds = class_thresholds(len(classes), cfg.tau, cfg.mode, hist,
                                          cfg.per_class_quantile)
    header = {**settings, "thresholds": None if thresholds is None else thresholds.tolist(),
              "planned": planned}
    write_json_atomic(manifest_path, {**header, "complete": False, "frames": {}})

    done = _read_journal(out)
    todo = [i for i, fid in zip(indices, planned, strict=True) if fid not in done]
    if max_frames > 0:
        todo = todo[:max_frames]
    with (out / JOURNAL).open("a") as journal:
        for item, result in _teacher_outputs(teacher, dataset, todo, cfg.batch_size, device,
                                             cache, f"pseudo-label {task}", progress):
            name = f"{task}/{_safe_id(item.frame_id)}.png"
            if task == "seg":
                label, rec = _seg_record(item, *result, thresholds, len(classes))
                image = label
            else:
                depth, rec = _depth_record(item, *result, dataset.info.max_depth,
                                           cfg.depth_rel_tol)
                image = depth_to_mm(depth)
            tmp = out / f"{name}.tmp.png"
            write_png(tmp, image)
            os.replace(tmp, out / name)  # a file under its final name is always whole
            rec = {"id": item.frame_id, "file": name, **rec}
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[item.frame_id] = rec

    records = {fid: done[fid] for fid in planned if fid in done}
    complete = len(records) == len(planned)
    summary = summarize_records(records, task, classes)
    write_json_atomic(manifest_path, {**header, "complete": complete, "summary": summary,
                                      "frames": records})
    return {**summary, "complete": complete, "planned": len(planned)}


# -- reading a store -------------------------------------------------------------------------
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
        manifest = _read_json(path)
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
        self.files = {fid: self.root / rec["file"] for fid, rec in manifest["frames"].items()}

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, frame_id: str) -> bool:
        return frame_id in self.files

    def get(self, frame_id: str) -> np.ndarray | None:
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


# -- command -----------------------------------------------------------------------------------
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, type=Path,
                   help="teacher run directory (uses <dir>/<checkpoint>.pt) or checkpoint file")
    p.add_argument("--out", required=True, type=Path, help="pseudo-label folder to (re)write")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (pseudo.tau)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="global tau, or per-class thresholds min(tau, class quantile)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--max-frames", type=int, default=0,
                   help="stop after this many new frames (run again to continue)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a folder written with other settings")


def _subset_fields(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "root", "seed", "train_frames", "seg_fraction", "depth_fraction",
            "seg_count", "depth_count", "seg_frames", "depth_frames")
    return {k: data.get(k) for k in keys}


@command("pseudo-label", "label the frames that lack a target label with the frozen teacher",
         _args)
def _pseudo_label(args: argparse.Namespace) -> None:
    from mtl_training.data import build_datasets
    from mtl_perception.core.device import resolve_device

    cfg = config_from_args(args)
    if args.tau is not None:
        cfg.pseudo.tau = args.tau
    if args.mode is not None:
        cfg.pseudo.mode = args.mode
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    teacher = load_teacher(args.teacher, args.checkpoint, device)
    cfg.data.pseudo_labels = None
    if _subset_fields(teacher.config.get("data", {})) != _subset_fields(asdict(cfg.data)):
        log.warning("the teacher was trained with other data/label-subset settings than %s: it "
                    "may have seen labels of frames it now labels", args.config)
    train_set, _ = build_datasets(cfg.data)
    if teacher.model.num_classes != len(train_set.info.classes):
        raise PseudoLabelError(f"teacher predicts {teacher.model.num_classes} classes, dataset "
                               f"'{train_set.info.name}' has {len(train_set.info.classes)}")
    s = run_pseudo_label(teacher, train_set, args.out, cfg.pseudo, device, args.overwrite,
                         args.max_frames)
    what = "pixels kept" if teacher.target == "seg" else "depth pixels kept"
    line = (f"{s['frames']}/{s['planned']} frames labelled ({teacher.target}) in {args.out}: "
            f"{100 * s['coverage']:.1f} % {what}")
    if "kept_accuracy" in s:
        line += f", kept-pixel accuracy {100 * s['kept_accuracy']:.1f} % (held-back ground truth)"
    if "kept_rel_err" in s:
        line += f", kept-pixel rel err {s['kept_rel_err']:.3f}, delta1 {s['kept_delta1']:.3f}"
    print(line)
    if teacher.target == "seg" and "per_class_coverage" in s:
        print("per-class coverage: " + ", ".join(
            f"{n} {100 * v:.0f} %" for n, v in s["per_class_coverage"].items() if v is not None))
    if not s["complete"]:
        print("not finished: run the same command again to continue")
