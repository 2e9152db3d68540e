"""Training checkpoints: one atomic save, one safe load, one way to rebuild the model from them.

A checkpoint is a dict of tensors and plain containers (model/optimizer/scheduler/weighting state,
epoch, step, best score, the resolved experiment config, the dataset info, the epoch's metrics).
It is written under a temporary name and renamed (a crash never leaves a torn file), and loaded
with `weights_only=True`, so a checkpoint cannot execute code. Whatever is wrong with a file
(missing, zero bytes, truncated, random bytes, a pickle of something else, weights that do not fit)
comes out as one CheckpointError naming it, for every reader: resume, export, evaluate and the
pseudo-label teacher all load through `load_checkpoint` / `model_from_checkpoint`.

Which epoch is the run's best is last.pt's to say (`score` over its committed `history`);
`reconcile_best` brings best.pt in line with it, for `--resume` and for every command that reads
a run's best (export, evaluate, pseudo-label, through `resolve_checkpoint`), so a kill between
the commit and best.pt never ships the older best.

A run directory holds RUN_FILES; `prepare_run_dir` decides whether a `train` may use it (new,
`--resume` to continue, `--overwrite` to replace). How the files of one epoch are committed is the
Trainer's protocol (mtl_training.trainer).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_perception.core.fileio import atomic_path, write_bytes_atomic
from mtl_perception.core.models.registry import build_model
from mtl_training.config import ConfigError, ModelConfig, from_dict

log = logging.getLogger(__name__)

class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or not a training checkpoint; names the file."""


class RunDirError(ValueError):
    """A run directory cannot be used as asked (it holds a run and neither --resume nor
    --overwrite was given, or it cannot be resumed); names the directory and the way out."""


# The files that make a directory a run: any one of them and a plain `train` refuses to start.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml")
# Written beside them; --overwrite removes these too, so nothing of the old run is mistaken for
# the new one's.
RUN_OUTPUTS = ("montage.png", "encoder_weights.json")
MAX_ERROR_CHARS = 160  # torch's own messages run to paragraphs; the one line keeps their start


def first_sentence(exc: BaseException) -> str:
    """The start of an exception's message, for a one-line error (torch's run to paragraphs)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0][:MAX_ERROR_CHARS]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file and rename: a crash mid-write never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, data: bytes | None = None) -> dict[str, Any]:
    """Tensors and plain containers only (no unpickling of code); one-line error naming the file.

    `data`: the file's bytes, already read (what reconcile_best copies is what it checked).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if (path.stat().st_size if data is None else len(data)) == 0:
        raise CheckpointError(f"{path}: not a readable checkpoint (empty file)")
    try:
        source = path if data is None else io.BytesIO(data)
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        # whatever torch's reader trips on, the file is bad (seen: EOFError, OSError,
        # RuntimeError, KeyError, UnpicklingError); the cause stays chained
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{first_sentence(exc)})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no model/config)")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: not a training checkpoint (model/config not mappings)")
    return ckpt


def score(metrics: dict[str, dict[str, Any]]) -> float:
    """Higher is better: mIoU when segmentation is evaluated, else negative abs error."""
    if "seg" in metrics:
        return float(metrics["seg"]["miou"])
    if "depth" in metrics:
        return -float(metrics["depth"]["abs_err"])
    return -math.inf


def best_of(history: list[dict[str, Any]], fallback: float) -> tuple[float, int | None]:
    """(best score, its epoch) re-derived from the committed records: the first epoch with the
    highest score, as the training loop's strict `>` picks it."""
    best, best_epoch = -math.inf, None
    for rec in history:
        s = score(rec.get("val", {}))
        if s > best:
            best, best_epoch = s, int(rec["epoch"])
    return (best, best_epoch) if best_epoch is not None else (fallback, None)


def reconcile_best(run_dir: str | Path, best_epoch: int | None = None) -> None:
    """Make <run_dir>/best.pt hold the run's best epoch, as last.pt (the commit point) records it.

    A kill after last.pt was committed and before best.pt was refreshed leaves best.pt missing,
    damaged or older than the best epoch; last.pt then is that epoch's end state (the protocol
    in mtl_training.trainer), and its bytes, the ones just checked, are copied over best.pt.
    Where last.pt has moved past the best epoch, nothing can restore it: one CheckpointError.
    A consistent run (or one without last.pt or without a recorded best) is left untouched.
    `best_epoch`: the caller's own reading of the run (resume's, for a checkpoint written
    before last.pt carried its history); by default last.pt's history decides.
    """
    run_dir = Path(run_dir)
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    if not last.is_file():
        return
    data = last.read_bytes()  # once: a trainer still running may replace last.pt meanwhile
    ckpt = load_checkpoint(last, data)
    if best_epoch is None:
        best_epoch = best_of(ckpt.get("history") or [], -math.inf)[1]
    if best_epoch is None:
        return
    try:
        on_disk = int(load_checkpoint(best)["epoch"]) if best.is_file() else None
    except CheckpointError as exc:
        log.warning("%s", exc)
        on_disk = None
    if on_disk == best_epoch:
        return
    if int(ckpt.get("epoch", -1)) != best_epoch or ckpt.get("partial"):
        raise CheckpointError(f"{best}: holds epoch {on_disk} but the run's best is epoch "
                              f"{best_epoch}, which {last} no longer holds; export "
                              "--checkpoint last, or train the run anew")
    try:
        write_bytes_atomic(best, data)
    except OSError as exc:
        raise CheckpointError(f"{best}: holds epoch {on_disk}, the run's best is epoch "
                              f"{best_epoch} and it cannot be restored from {last} ({exc})") \
            from exc
    log.info("restored %s from %s (epoch %d, the run's best)", best, last, best_epoch)


def check_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Raise RunDirError (one line) unless `train` may use `run_dir` as asked; touches nothing.

    A run directory is only ever continued (`resume`) or replaced (`overwrite`): a plain train
    into one would replace its best.pt and duplicate epochs in its metrics.jsonl. A directory
    holding only config.yaml (a run killed before its first checkpoint) resumes by starting
    afresh. Called before anything is built, so a refusal costs nothing.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError(f"{run_dir}: --resume and --overwrite exclude each other (continue the "
                          "run or replace it)")
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not (resume or overwrite):
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(present)}): continue it "
                          "with --resume or replace it with --overwrite")
    if resume and not (run_dir / "last.pt").exists() and set(present) - {"config.yaml"}:
        raise RunDirError(f"{run_dir}: no last.pt to resume from (it holds "
                          f"{', '.join(present)}); replace the run with --overwrite")


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """check_run_dir, then make the directory ready: with `overwrite` the old run's files are
    deleted (the caller has validated the config and built the model first, so a bad config
    never costs the old run), and temp files of writes a kill interrupted are removed."""
    check_run_dir(run_dir, resume, overwrite)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (*RUN_FILES, *RUN_OUTPUTS):
        if overwrite:
            (run_dir / name).unlink(missing_ok=True)
        for tmp in run_dir.glob(f".{name}.*.tmp*"):  # atomic_path's temp names
            tmp.unlink(missing_ok=True)


def model_config_of(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> ModelConfig:
    """The ModelConfig a checkpoint was trained with."""
    try:
        return from_dict(ModelConfig, ckpt["config"]["model"], prefix="model")
    except (ConfigError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: model config unreadable ({exc})") from exc


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """(network with the checkpoint's weights in eval mode, the checkpoint dict).

    The weights are the validated ones: the moving average (`ema`, train.ema_decay) when the run
    kept one, else the trained `model`."""
    ckpt = load_checkpoint(path)
    model_cfg = model_config_of(ckpt, path)
    try:
        model = build_model(model_cfg.spec())
        ema = ckpt.get("ema")
        model.load_state_dict(ema["model"] if isinstance(ema, dict) else ckpt["model"])
    except (ConfigError, RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its model config "
                              f"({first_sentence(exc)})") from exc
    return model.to(device).eval(), ckpt


def resolve_checkpoint(path: str | Path, checkpoint: str = "best") -> Path:
    """A run directory (-> <dir>/<checkpoint>.pt, falling back to last.pt for best) or a file.

    A run directory's best.pt is reconciled with its last.pt first (reconcile_best), so every
    reader gets the best that `--resume` would restore, never the one a kill left behind.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if checkpoint == "best":
        reconcile_best(path)
    wanted = path / f"{checkpoint}.pt"
    if not wanted.is_file() and checkpoint == "best" and (path / "last.pt").is_file():
        return path / "last.pt"
    return wanted
