"""One training loop for teacher and student (nanoGPT-shaped: short, linear, resumable).

step: autocast forward -> named loss terms -> weighting -> backward -> clip -> step -> zero_grad.
Around it: per-epoch validation, metrics.jsonl, montage PNG, atomic last.pt / best.pt holding the
resolved config (so a checkpoint rebuilds its own model), and `--resume` from last.pt.

Run directory protocol (what a kill -9 at any instant leaves consistent):
- `last.pt` is the commit point. It carries the run's whole `history` (every epoch's
  metrics.jsonl record) and `best_epoch`, so nothing else has to survive for the run to be known.
- At the end of epoch N: (1) last.pt is written atomically (temp name, fsync, rename) holding
  history[..N]; (2) if N improved the score, best.pt is written atomically with the same state;
  (3) metrics.jsonl is rewritten atomically from the history. The montage PNG comes last and is
  not part of the commit.
- `resume` reconciles before training anything: metrics.jsonl is rewritten from last.pt's history
  (a line lost between (1) and (3) reappears, a line of an uncommitted epoch cannot exist, so no
  epoch is ever duplicated or missing), and if best.pt is missing, damaged or older than
  best_epoch, last.pt (which, by the order above, is then the end-of-epoch state of best_epoch) is
  copied over it. best.pt is only ever replaced by a strictly better committed epoch, so the best
  checkpoint is never lost or replaced by a worse one. export, evaluate and pseudo-label repair
  best.pt the same way before reading it (checkpoint.reconcile_best, one place for all four).
- Mid-epoch: with `train.checkpoint_every = K > 0`, every K optimiser steps last.pt is rewritten
  with the epoch's sample order, the position reached in it and the running loss sums (history
  and best unchanged). Resume then continues that epoch at that sample with the same order
  (per-sample augmentation is seeded by (seed, epoch, index)), so a kill loses at most the steps
  since the last save and the resumed run matches an uninterrupted one. If the training split's
  length changed, the interrupted epoch restarts from its beginning instead.
- Resume refuses a changed training set (its dataset identity, unless train.resume_data_changed),
  a different architecture (model.* spec, loss.xtc / xtc_channels / weighting /
  gradnorm_lr, whose state is in the checkpoint), a different model.encoder_weights / pretrained /
  aux_pretrained (they only initialise a new run) and train.epochs / max_steps below what the run
  already did; every other `--set` is applied for real: train.lr, weight_decay, lr_schedule and
  lr_step_epochs are written into the loaded optimiser/scheduler, data.* and the rest are read
  from the config as training goes.

Under torchrun (mtl_training.distributed): every rank walks the same seeded epoch order and takes
its share of each global batch; one DistributedDataParallel over the network and the transfer
nets averages their gradients; rank 0 alone validates, writes the run directory and the
TensorBoard events (mtl_training.tblog), and the others wait for it at the end of each epoch.
The sample position of a mid-epoch save counts global samples, so a run resumes under any world
size. docs/training_at_scale.md has the rest.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from mtl_perception.core.contracts import DatasetInfo
from mtl_perception.core.device import resolve_device
from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.models.registry import build_model
from mtl_perception.core.models.transfer import TaskTransfer
from mtl_training import distributed
from mtl_training.amp import autocast_dtype, grad_scaler
from mtl_training.checkpoint import (
    CheckpointError,
    best_of,
    check_run_dir,
    first_sentence,
    load_checkpoint,
    model_config_of,
    prepare_run_dir,
    reconcile_best,
    save_checkpoint,
    score,
)
from mtl_training.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    from_dict,
    save_config,
    stride_warnings,
)
from mtl_training.data import build_datasets, check_depth_range, check_task_labels
from mtl_training.data.datasets import MultiTaskDataset, collate, training_view
from mtl_training.data.identity import describe_identity, same_dataset, training_identity
from mtl_training.data.multisource import MultiSourceTrainSet, build_multisource, mean_metrics
from mtl_training.ema import WeightAverage
from mtl_training.evaluate import evaluate, model_inputs
from mtl_training.losses import XTC_MODES, cross_task_losses, task_losses, task_objectives
from mtl_training.lr_schedule import build_scheduler, lr_factor
from mtl_training.pretrained import initialise_encoders
from mtl_training.pseudo.store import PseudoLabelStore
from mtl_training.report import montage, save_rgb_png
from mtl_training.tblog import TB_DIR, TensorBoardLog
from mtl_training.weighting import build_weighting

log = logging.getLogger("mtl_training.trainer")


class NonFiniteLossError(RuntimeError):
    """Training diverged; stopping beats writing NaN weights over a good checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainNet(nn.Module):
    """The network and (with loss.xtc) the task-transfer nets as one module: what one
    DistributedDataParallel wraps under torchrun (the frozen teacher of pseudo-labelling is never
    part of it). Holds no parameters of its own, so checkpoints keep saving `model`/`transfer`."""

    def __init__(self, model: nn.Module, transfer: TaskTransfer | None) -> None:
        super().__init__()
        self.model = model
        self.transfer = transfer

    def forward(self, *inputs: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        pred = self.model(*inputs)
        out = {"pred": pred}
        if self.transfer is not None:
            out["transferred"] = self.transfer(pred)
        return out


class EpochSampler(Sampler):
    """Yields (epoch, index) keys from an order the Trainer sets per epoch (this rank's share of
    the remaining order). The DataLoader is built once, so persistent workers survive epochs; the
    epoch travels with each key because workers hold their own copy of the dataset."""

    def __init__(self) -> None:
        self.epoch, self.indices = 0, []

    def set(self, epoch: int, indices: list[int]) -> None:
        self.epoch, self.indices = epoch, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.indices])


class EpochKeyed(Dataset):
    """A training dataset read by (epoch, index): sets the augmentation epoch (seeded by
    (seed, epoch, index)) in whichever process reads the sample."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        set_epoch = getattr(self.base, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return self.base[index]


class Trainer:
    """Builds everything a stage needs from a validated config; `fit` runs it into
    cfg.train.out_dir under the run directory protocol of this module's docstring."""

    def __init__(self, cfg: ExperimentConfig, pseudo: Any = None,
                 datasets: tuple[MultiTaskDataset, MultiTaskDataset] | None = None,
                 load_pretrained: bool = True) -> None:
        cfg.validate()  # configs built in Python never went through load_config
        self.cfg = cfg
        self.run_dir = Path(cfg.train.out_dir)
        # this process's rank in a torchrun launch (train() joins the group); one process else
        self.dist = distributed.current()
        self.device = distributed.rank_device(self.dist, train_device(cfg))
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)
        if self.dist.is_main:
            for line in stride_warnings(cfg.data):
                log.warning("%s", line)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed)
        stats = encoder_input_stats(cfg.model.encoder)  # the normalisation its encoder expects
        self.val_sets: dict[str, Any] = {}  # per source, when data.sources lists several
        self.model: nn.Module = build_model(cfg.model.spec()).to(self.device)
        # a teacher learns only from frames carrying its input and its target (METHOD.md A)
        required = tuple(getattr(self.model, "required_labels", ()))
        if cfg.data.sources and datasets is None:
            multi = build_multisource(cfg.data, num_classes=cfg.model.num_classes, stats=stats,
                                      open_pseudo=PseudoLabelStore, required=required)
            if self.dist.is_main:
                for line in multi.skipped:
                    log.warning("%s", line)
            self.train_set = MultiSourceTrainSet(
                multi, epoch_frames=max(len(multi.train), cfg.data.min_epoch_frames))
            self.val_sets = multi.val
            self.val_set = next(iter(self.val_sets.values()))
        else:
            self.train_set, self.val_set = datasets or build_datasets(cfg.data, pseudo,
                                                                      stats=stats)
        for split in (self.train_set, self.val_set):
            if getattr(split, "stats", stats) != stats:
                raise ConfigError(f"model.encoder {cfg.model.encoder} expects inputs normalised "
                                  f"with {stats}, the datasets given use {split.stats}: build "
                                  "them with stats=encoder_input_stats(model.encoder)")
        self.info: DatasetInfo = self.train_set.info
        if cfg.model.num_classes != len(self.info.classes):
            raise ConfigError(f"model.num_classes: {cfg.model.num_classes} but dataset "
                              f"'{self.info.name}' has {len(self.info.classes)} classes")
        check_depth_range(cfg.model, self.info)  # a head bounded below the data saturates
        # a task no training frame has a label for would train nothing and exit 0
        check_task_labels(list(getattr(self.model, "tasks", cfg.model.tasks)), self.train_set)
        # what resume compares: labels imported since the run started change the training set
        self.data_identity = training_identity(getattr(self.train_set, "source", None))
        if self.val_sets:  # every source's identity, weight and class map
            self.data_identity = {"sources": multi.identities}
        if not self.val_sets:  # several sources: each already keeps what `required` needs
            self.train_set = training_view(self.train_set, required, cfg.data.min_epoch_frames)
        # missing/unexpected keys of model.encoder_weights / model.pretrained, and where the
        # initial weights came from; a resumed run takes its checkpoint's
        self.encoder_report: dict[str, list[str]] | None = None
        self.pretrained: str | None = None
        self.encoder_weights_path: str | None = None
        init = initialise_encoders(self.model, cfg.model) if load_pretrained else None
        if init is not None:
            self.encoder_report, self.pretrained = init.report, init.source
            self.encoder_weights_path = init.path
        tasks = list(getattr(self.model, "tasks", cfg.model.tasks))
        # task-transfer nets (METHOD.md B): trained with the student, checkpointed, never exported
        self.transfer: TaskTransfer | None = self._build_transfer(tasks)
        if self.dist.active and cfg.train.sync_batchnorm:  # before the optimiser sees parameters
            distributed.sync_batchnorm(self.model, self.device)
            if self.transfer is not None:
                distributed.sync_batchnorm(self.transfer, self.device)
        if cfg.train.channels_last:
            for module in self.trainable_modules():
                module.to(memory_format=torch.channels_last)
        self.xtc_lambdas = {"seg": cfg.loss.xtc_lambda_seg, "depth": cfg.loss.xtc_lambda_depth}
        self.weighting = build_weighting(cfg.loss, tasks).to(self.device)
        params = list(self.model.parameters()) + list(self.weighting.optimizer_parameters())
        if self.transfer is not None:
            params += list(self.transfer.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.scaler = grad_scaler(self.amp_dtype, self.device)  # fp16 only; else pass-through
        # the forward the step runs: the network (+ transfer nets), DDP-wrapped under torchrun,
        # optionally compiled; checkpoints and evaluation use the plain self.model
        self.net: nn.Module = TrainNet(self.model, self.transfer)
        if self.dist.active:
            self.net = DistributedDataParallel(
                self.net, device_ids=[self.device] if self.device.type == "cuda" else None,
                forward_sync_buffers=not cfg.train.sync_batchnorm)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        # GradNorm's task weights move by their own rule, outside the optimiser: averaged after
        # each step so every rank applies the same weights
        owned = {id(p) for p in self.weighting.optimizer_parameters()}
        self._weighting_own_state = any(id(p) not in owned for p in self.weighting.parameters())
        # the averaged weights (ema.py) that validation, best.pt and export use; None = off
        self.ema = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.tb: TensorBoardLog | None = None
        self.epoch = 0  # completed epochs
        self.step = 0  # optimiser steps
        self.best = -math.inf
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []  # the metrics.jsonl records, committed in last.pt
        # the unfinished epoch: sample order, samples done, running loss sums/counts
        self.partial: dict[str, Any] | None = None
        self.resumed_from: Path | None = None

    def _build_transfer(self, tasks: list[str]) -> TaskTransfer | None:
        loss = self.cfg.loss
        if not loss.xtc:
            return None
        if sorted(tasks) != ["depth", "seg"]:
            raise ConfigError(f"loss.xtc needs a model predicting seg and depth, got tasks {tasks}")
        if loss.xtc_mode not in XTC_MODES:
            raise ConfigError(f"Unknown loss.xtc_mode '{loss.xtc_mode}' "
                              f"(available: {', '.join(XTC_MODES)})")
        for key in ("xtc_lambda_seg", "xtc_lambda_depth"):
            if not 0.0 <= getattr(loss, key) <= 1.0:
                raise ConfigError(f"loss.{key} must be in [0, 1], got {getattr(loss, key)}")
        return TaskTransfer(self.cfg.model.num_classes, self.cfg.model.max_depth,
                            loss.xtc_channels).to(self.device)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.model] + ([self.transfer] if self.transfer is not None else [])

    # -- checkpoints -------------------------------------------------------------------------
    def validated_model(self) -> nn.Module:
        """The weights validation scores and export ships: the average when train.ema_decay."""
        return self.ema.model if self.ema is not None else self.model

    def state(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Everything resume needs; `metrics` are the last completed epoch's validation."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            **({"transfer": self.transfer.state_dict()} if self.transfer is not None else {}),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            # the validated weights: model_from_checkpoint reads these before "model"
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "partial": self.partial,
            "config": self.cfg.to_dict(),
            "info": asdict(self.info),
            "pretrained": self.pretrained,  # provenance of the initial weights (artifact metadata)
            "dataset": self.data_identity,  # the training set's identity (resume compares it)
            "metrics": _plain(metrics),
        }

    def resume(self) -> bool:
        """Load <run>/last.pt (False when there is none), refuse what cannot be continued, apply
        the config's optimiser settings, and reconcile best.pt / metrics.jsonl with it."""
        path = self.run_dir / "last.pt"
        if not path.is_file():
            return False
        ckpt = load_checkpoint(path)
        missing = [k for k in ("optimizer", "scheduler", "weighting", "epoch", "step", "best")
                   if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: not a resumable checkpoint (missing "
                                  f"{', '.join(missing)})")
        self._refuse_changes(path, ckpt)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            # the schedule is a closed form of the epoch (lr_schedule.py): its count is the state,
            # which also reads checkpoints written by the former StepLR
            self.scheduler.last_epoch = int(ckpt["scheduler"]["last_epoch"])
            self.scheduler._step_count = int(ckpt["scheduler"].get("_step_count", 1))
            self.weighting.load_state_dict(ckpt["weighting"])
            if self.transfer is not None:
                self.transfer.load_state_dict(ckpt["transfer"])
            if self.scaler.is_enabled() and "scaler" in ckpt:
                self.scaler.load_state_dict(ckpt["scaler"])
            if self.ema is not None:  # ema_decay newly set: the average starts from the weights
                self.ema.load_state_dict(ckpt.get("ema"))
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: state does not fit this run "
                                  f"({first_sentence(exc)})") from exc
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.pretrained = ckpt.get("pretrained")
        self.history = ckpt.get("history") or self._history_from_metrics_file(self.epoch)
        self.best, self.best_epoch = best_of(self.history, float(ckpt["best"]))
        self.partial = ckpt.get("partial")
        self._apply_optimizer_settings()
        if self.dist.is_main:  # the run directory is rank 0's; every rank loads the same state
            self._reconcile()
        self.resumed_from = path
        where = f", {self.partial['pos']} samples into epoch {self.epoch + 1}" if self.partial \
            else ""
        if self.dist.is_main:
            log.info("resumed %s at epoch %d, step %d%s", path, self.epoch, self.step, where)
        return True

    def _refuse_changes(self, path: Path, ckpt: dict[str, Any]) -> None:
        """One line for a --set that resume could only record, not honour."""
        old = model_config_of(ckpt, path).spec().to_dict()
        new = self.cfg.model.spec().to_dict()
        changed = [k for k in new if old.get(k) != new[k]]
        if changed:
            k = changed[0]
            raise ConfigError(f"{path}: cannot resume with a different architecture (model.{k}: "
                              f"checkpoint {old.get(k)!r}, config {new[k]!r}); keep the run's "
                              "model settings, or start anew with --overwrite or another --out")
        for key in ("encoder_weights", "pretrained", "aux_pretrained"):  # they only initialise
            old_value = ckpt["config"].get("model", {}).get(key, getattr(ModelConfig(), key))
            if old_value != getattr(self.cfg.model, key):
                raise ConfigError(f"{path}: model.{key} cannot change on resume (checkpoint "
                                  f"{old_value!r}, config {getattr(self.cfg.model, key)!r}): the "
                                  "run's weights come from its checkpoint")
        try:
            old_loss = from_dict(type(self.cfg.loss), ckpt["config"].get("loss", {}), "loss")
        except ConfigError as exc:
            raise CheckpointError(f"{path}: loss config unreadable ({exc})") from exc
        frozen = ["xtc", "xtc_channels", "weighting"]
        if self.cfg.loss.weighting == "gradnorm":  # its own Adam (and lr) is in the checkpoint
            frozen.append("gradnorm_lr")
        for k in frozen:
            if getattr(old_loss, k) != getattr(self.cfg.loss, k):
                raise ConfigError(f"{path}: loss.{k} cannot change on resume (checkpoint "
                                  f"{getattr(old_loss, k)!r}, config {getattr(self.cfg.loss, k)!r})"
                                  "; its state is part of the run: start anew with --overwrite")
        old_data, new_data = ckpt.get("dataset"), self.data_identity
        if (isinstance(old_data, dict) and new_data is not None
                and not same_dataset(old_data, new_data)
                and not self.cfg.train.resume_data_changed):
            raise ConfigError(f"{path}: the training set changed since this run started (was "
                              f"{describe_identity(old_data)}, now {describe_identity(new_data)}"
                              "); continue on the new frames with --set "
                              "train.resume_data_changed=true, or start anew with --overwrite "
                              "or another --out")
        t = self.cfg.train
        if t.epochs < int(ckpt["epoch"]):
            raise ConfigError(f"train.epochs: {t.epochs} but {path} has already done "
                              f"{ckpt['epoch']} epochs (raise it to continue)")
        if t.max_steps and t.max_steps < int(ckpt["step"]):
            raise ConfigError(f"train.max_steps: {t.max_steps} but {path} has already done "
                              f"{ckpt['step']} steps (raise it, or 0 to let epochs decide)")

    def _apply_optimizer_settings(self) -> None:
        """The loaded optimiser/scheduler state carries the old lr; the config's wins (the
        schedule's closed form at the scheduler's epoch, `lr_schedule.lr_factor`)."""
        t = self.cfg.train
        self.scheduler.base_lrs = [t.lr for _ in self.optimizer.param_groups]
        lr = t.lr * lr_factor(t, self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"], group["weight_decay"] = t.lr, lr, t.weight_decay

    def _history_from_metrics_file(self, epoch: int) -> list[dict[str, Any]]:
        """A checkpoint written before history lived in it: metrics.jsonl's records up to its
        epoch, one per epoch (the last line written for an epoch wins)."""
        records: dict[int, dict[str, Any]] = {}
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of the old append-only file
            if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) \
                    and 1 <= rec["epoch"] <= epoch:
                records[rec["epoch"]] = rec
        return [records[e] for e in sorted(records)]

    def _reconcile(self) -> None:
        """Bring metrics.jsonl and best.pt in line with last.pt (the protocol's recovery step)."""
        self._write_metrics()
        reconcile_best(self.run_dir, self.best_epoch)

    def _write_metrics(self) -> None:
        text = "".join(json.dumps(r, default=float) + "\n" for r in self.history)
        write_text_atomic(self.run_dir / "metrics.jsonl", text)

    # -- the loop ----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on this rank's batch; {} (and no step) when no rank had a label."""
        inputs = model_inputs(self.model, batch, self.device)
        if self.cfg.train.channels_last:
            inputs = tuple(x.contiguous(memory_format=torch.channels_last)
                           if x.dim() == 4 and x.is_floating_point() else x for x in inputs)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.net(*inputs)
        pred, transferred = out["pred"], out.get("transferred")
        batch_dev = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor)
                     else v for k, v in batch.items()}
        terms = task_losses(pred, batch_dev, self.cfg.data.pseudo_weight,
                            self.cfg.loss.depth_loss)
        extra: dict[str, torch.Tensor] = {}
        if transferred is not None:
            mode = self.cfg.loss.xtc_mode
            cross = cross_task_losses(pred, transferred, batch_dev, mode,
                                      self.cfg.data.pseudo_weight)
            prefix = "xtc" if mode == "consistency" else "align"
            extra = {**{f"sup_{t}": v for t, v in terms.items()},
                     **{f"{prefix}_{t}": v for t, v in cross.items()}}
            terms = task_objectives(terms, cross, self.xtc_lambdas)  # L_t of eq. 11
        tasks = self.weighting.tasks
        # which ranks have a loss at all / each task (one branch for all: collectives must match)
        have_any, *have_task = self.dist.count([bool(terms)] + [t in terms for t in tasks],
                                               self.device)
        if not have_any:
            return {}
        shared = getattr(self.model, "shared_parameters", lambda: None)()
        if shared is not None and not all(n == self.dist.world for n in have_task):
            shared = None  # GradNorm measures only steps where every rank has every task
        touch = None
        if self.dist.active:
            # every output reaches every term (x 0): each backward, GradNorm's per-task ones
            # included, then walks the same graph on every rank, so DDP sees every gradient and
            # the global BatchNorm's backward all-reduces come in the same order everywhere
            touch = 0.0 * sum(v.float().sum() for o in out.values() for v in o.values())
            terms = {t: v + touch for t, v in terms.items()}
        if terms:
            loss = self.weighting.combine(terms, shared)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss at step {self.step}: "
                                         f"{ {k: float(v) for k, v in terms.items()} }")
        else:
            loss = torch.zeros((), device=self.device)
        if touch is not None:
            loss = loss + touch
        self.scaler.scale(loss).backward()
        distributed.average_gradients(self.dist, self.weighting.optimizer_parameters())
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for m in self.trainable_modules() for p in m.parameters()],
                                     self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.weighting.step()  # GradNorm's own update of the task weights; a no-op for others
        if self._weighting_own_state:
            distributed.average_state(self.dist, self.weighting)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        if not terms:
            return {}
        return {"loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in {**terms, **extra}.items()}}

    def _validate(self, dataset: Dataset) -> dict[str, dict[str, Any]]:
        """Metrics of one more source's validation set (several sources, data.sources)."""
        loader = DataLoader(dataset, batch_size=self.cfg.train.batch_size, shuffle=False,
                            collate_fn=collate)
        return evaluate(self.validated_model(), loader, len(self.info.classes),
                        self.info.classes, self.device, dataset.info.max_depth)[0]

    def _epoch_plan(self) -> dict[str, Any]:
        """The current epoch's order and progress: the interrupted one's, or a fresh shuffle
        seeded by (train.seed, epoch) so a resumed run replays the same order."""
        n = getattr(self.train_set, "epoch_frames", len(self.train_set))  # frames per epoch
        p = self.partial
        if p is not None and len(p["order"]) == n:
            return p
        if p is not None:
            log.warning("training split changed from %d to %d frames: epoch %d restarts",
                        len(p["order"]), n, self.epoch + 1)
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + self.epoch)
        draw = getattr(self.train_set, "draw", None)  # several sources: drawn by weight
        order = draw(gen) if draw is not None else torch.randperm(n, generator=gen)
        return {"order": order, "pos": 0, "sums": {}, "counts": {}}

    def fit(self, resume: bool = False, overwrite: bool = False) -> Path:
        """Train into the run directory: new, continued (`resume`) or replaced (`overwrite`)."""
        cfg = self.cfg
        main = self.dist.is_main
        if main:  # rank 0 owns the run directory; the others read last.pt once it is ready
            prepare_run_dir(self.run_dir, resume=resume or self.resumed_from is not None,
                            overwrite=overwrite)
            if overwrite:
                shutil.rmtree(self.run_dir / TB_DIR, ignore_errors=True)
        self.dist.barrier()
        if resume and self.resumed_from is None:
            self.resume()
        if main:
            save_config(cfg, self.run_dir / "config.yaml")
            if self.encoder_report is not None:
                write_text_atomic(self.run_dir / "encoder_weights.json", json.dumps(
                    {"path": self.encoder_weights_path, "source": self.pretrained,
                     **self.encoder_report}, indent=1))
            if cfg.train.tensorboard:  # events a kill left past the resumed step are hidden
                self.tb = TensorBoardLog(self.run_dir, purge_step=self.step + 1)
        try:
            return self._loop()
        finally:
            if self.tb is not None:
                self.tb.close()
                self.tb = None

    def loaders(self) -> tuple[DataLoader, EpochSampler, DataLoader]:
        """(train loader, its sampler, val loader), built once: workers persist across epochs."""
        cfg, t = self.cfg, self.cfg.train
        workers = cfg.data.num_workers
        opts: dict[str, Any] = {"num_workers": workers, "collate_fn": collate,
                                "pin_memory": t.pin_memory and self.device.type == "cuda"}
        if workers > 0:
            opts.update(persistent_workers=t.persistent_workers, prefetch_factor=t.prefetch_factor)
        sampler = EpochSampler()
        train_loader = DataLoader(EpochKeyed(self.train_set), batch_size=t.batch_size,
                                  sampler=sampler,
                                  drop_last=len(self.train_set) > t.batch_size * self.dist.world,
                                  **opts)
        val_loader = DataLoader(self.val_set, batch_size=t.batch_size, shuffle=False, **opts)
        return train_loader, sampler, val_loader

    def _loop(self) -> Path:
        cfg = self.cfg
        main = self.dist.is_main
        loader, sampler, val_loader = self.loaders()
        last_metrics = self.history[-1]["val"] if self.history else {}
        while self.epoch < cfg.train.epochs:
            if cfg.train.max_steps and self.step >= cfg.train.max_steps:
                break
            self.train_set.set_epoch(self.epoch)
            plan = self._epoch_plan()
            order, sums, counts = plan["order"], dict(plan["sums"]), dict(plan["counts"])
            pos = int(plan["pos"])  # global samples done (every rank's)
            sampler.set(self.epoch, self.dist.shard(order[pos:].tolist()))
            for module in self.trainable_modules():
                module.train()
            t0 = time.time()
            bar = tqdm(loader, desc=f"{cfg.train.stage} epoch {self.epoch + 1}/{cfg.train.epochs}",
                       leave=False, dynamic_ncols=True, disable=None if main else True)
            rate_t, rate_step, rate_samples = time.perf_counter(), self.step, 0
            for batch in bar:
                step_before = self.step
                logs = self.train_step(batch)
                done = len(batch["image"]) * self.dist.world
                pos = min(pos + done, len(order))
                rate_samples += done
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                if logs:
                    bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if self.tb is not None and logs and self.step % cfg.train.log_every == 0:
                    now = time.perf_counter()
                    dt = max(now - rate_t, 1e-9)
                    self.tb.step(self.step, logs, self.weighting.weights(),
                                 self.optimizer.param_groups[0]["lr"], rate_samples / dt,
                                 (self.step - rate_step) / dt)
                    rate_t, rate_step, rate_samples = now, self.step, 0
                if cfg.train.max_steps and self.step >= cfg.train.max_steps:
                    break
                every = cfg.train.checkpoint_every
                if self.step != step_before and every and self.step % every == 0 \
                        and pos < len(order) and main:
                    self.partial = {"order": order, "pos": pos, "sums": sums, "counts": counts}
                    save_checkpoint(self.state(last_metrics), self.run_dir / "last.pt")
            bar.close()
            self.partial = None
            if self.dist.active:  # epoch means over every rank's steps (DWA and the record)
                train_means = self.dist.mean_dict(sums, counts, self.dist.union(sums),
                                                  self.device)
            else:
                train_means = {k: sums[k] / counts[k] for k in sums}
            self.weighting.end_epoch({k: v for k, v in train_means.items()
                                      if k in self.weighting.tasks})
            epoch_lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at
            self.scheduler.step()
            self.epoch += 1
            if not main:  # rank 0 validates and commits the epoch; wait for it
                self.dist.barrier()
                continue
            metrics, kept = evaluate(self.validated_model(), val_loader, len(self.info.classes),
                                     self.info.classes, self.device, self.info.max_depth,
                                     keep=cfg.train.montage_frames)
            if self.val_sets:  # one validation per source; their mean chooses best.pt
                metrics = mean_metrics({label: metrics if i == 0 else self._validate(ds)
                                        for i, (label, ds) in enumerate(self.val_sets.items())})
            last_metrics = metrics
            improved = score(metrics) > self.best
            if improved:
                self.best, self.best_epoch = score(metrics), self.epoch
            record = _plain({"epoch": self.epoch, "step": self.step,
                             "time_s": round(time.time() - t0, 2),
                             "lr": epoch_lr, "train": train_means,
                             "val": metrics, "weights": self.weighting.weights(),
                             "best": improved})
            self.history.append(record)
            state = self.state(metrics)
            save_checkpoint(state, self.run_dir / "last.pt")  # (1) the commit
            if improved:
                save_checkpoint(state, self.run_dir / "best.pt")  # (2)
            self._write_metrics()  # (3)
            picture = montage(kept, self.info.palette, self.info.max_depth) if kept else None
            if picture is not None:
                save_rgb_png(self.run_dir / "montage.png", picture)
            if self.tb is not None:
                self.tb.epoch(self.step, record, picture)
            log.info("epoch %d/%d  loss %.4f  %s  (%.1fs)", self.epoch, cfg.train.epochs,
                     train_means.get("loss", float("nan")), summarize(metrics), record["time_s"])
            self.dist.barrier()
        return self.run_dir


def _plain(obj: Any) -> Any:
    """JSON-plain copy (numpy scalars -> float): what metrics.jsonl holds and weights_only loads."""
    return json.loads(json.dumps(obj, default=float))


def summarize(metrics: dict[str, dict[str, Any]]) -> str:
    parts = []
    if "seg" in metrics:
        parts.append(f"mIoU {metrics['seg']['miou']:.3f} pixacc {metrics['seg']['pixel_acc']:.3f}")
    if "depth" in metrics:
        d = metrics["depth"]
        parts.append(f"abs {d['abs_err']:.3f} rel {d['rel_err']:.3f} rmse {d['rmse']:.3f} "
                     f"d1 {d['delta1']:.3f}")
    return "  ".join(parts)


def train(cfg: ExperimentConfig, resume: bool = False, pseudo: Any = None,
          overwrite: bool = False) -> Path:
    """Train the stage described by cfg into cfg.train.out_dir; returns the run directory.

    An existing run is only continued (`resume`) or replaced (`overwrite`); see the module
    docstring for what a kill leaves behind.
    """
    check_run_dir(cfg.train.out_dir, resume, overwrite)  # refuse before building anything
    has_last = (Path(cfg.train.out_dir) / "last.pt").is_file()
    ctx = distributed.from_env()  # torchrun's RANK / WORLD_SIZE / LOCAL_RANK, if any
    owned = distributed.init(ctx, distributed.rank_device(ctx, train_device(cfg)))
    try:
        trainer = Trainer(cfg, pseudo, load_pretrained=not (resume and has_last))
        return trainer.fit(resume=resume, overwrite=overwrite)
    finally:
        distributed.shutdown(owned)


def train_device(cfg: ExperimentConfig) -> torch.device:
    """train.device resolved (auto -> cuda if present); a missing GPU is one line at start, and
    so is train.amp fp16 without one (its loss scaler and its speed are CUDA's; `auto` is off
    on CPU, bf16 autocast runs there)."""
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise ConfigError(f"train.device: {exc}") from exc
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp: fp16 needs a CUDA device, train.device resolves to "
                          f"{device.type} here (use auto, off or bf16)")
    return device
