"""One training loop for teacher and student (nanoGPT-shaped: short, linear, resumable).

step: autocast forward -> named loss terms -> weighting -> backward -> clip -> step -> zero_grad.
Around it: per-epoch validation, metrics.jsonl, montage PNG, atomic last.pt / best.pt holding the
resolved config (so a checkpoint rebuilds its own model), and `--resume` from last.pt.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mtl_perception.core.contracts import DatasetInfo
from mtl_perception.core.device import resolve_device
from mtl_perception.core.models.backbones import load_encoder_weights
from mtl_perception.core.models.registry import build_model
from mtl_perception.core.models.transfer import TaskTransfer
from mtl_training.amp import autocast_dtype
from mtl_training.checkpoint import load_checkpoint, save_checkpoint
from mtl_training.config import ConfigError, ExperimentConfig, save_config
from mtl_training.data import build_datasets
from mtl_training.data.datasets import MultiTaskDataset, collate, training_view
from mtl_training.evaluate import evaluate, model_inputs
from mtl_training.losses import XTC_MODES, cross_task_losses, task_losses, task_objectives
from mtl_training.report import montage, save_rgb_png
from mtl_training.weighting import build_weighting

log = logging.getLogger("mtl_training.trainer")


class NonFiniteLossError(RuntimeError):
    """Training diverged; stopping beats writing NaN weights over a good checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def score(metrics: dict[str, dict[str, Any]]) -> float:
    """Higher is better: mIoU when segmentation is evaluated, else negative abs error."""
    if "seg" in metrics:
        return float(metrics["seg"]["miou"])
    if "depth" in metrics:
        return -float(metrics["depth"]["abs_err"])
    return -math.inf


def load_pretrained_encoder(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Initialise the model's encoder from a local ImageNet state_dict and log what matched.

    Training-time only: the artifact carries the trained weights, so neither export nor the node
    ever needs this file. A model may define `load_encoder_weights(path)` (e.g. a teacher with two
    encoders); otherwise its `encoder` attribute is loaded.
    """
    if hasattr(model, "load_encoder_weights"):
        report = model.load_encoder_weights(path)
    elif isinstance(getattr(model, "encoder", None), nn.Module):
        report = load_encoder_weights(model.encoder, path)
    else:
        raise ConfigError(f"model.encoder_weights is set but {type(model).__name__} has no encoder "
                          "to load it into")
    log.info("encoder weights %s: %d missing keys%s, %d unexpected keys%s", path,
             len(report["missing"]), _preview(report["missing"]), len(report["unexpected"]),
             _preview(report["unexpected"]))
    return report


def _preview(keys: list[str], n: int = 6) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
    return " (" + ", ".join(keys[:n]) + more + ")"


class Trainer:
    def __init__(self, cfg: ExperimentConfig, pseudo=None,
                 datasets: tuple[MultiTaskDataset, MultiTaskDataset] | None = None,
                 load_pretrained: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.train.out_dir)
        self.device = resolve_device(cfg.train.device)
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed)
        self.train_set, self.val_set = datasets or build_datasets(cfg.data, pseudo)
        self.info: DatasetInfo = self.train_set.info
        if cfg.model.num_classes != len(self.info.classes):
            raise ValueError(f"model.num_classes={cfg.model.num_classes} but dataset "
                             f"'{self.info.name}' has {len(self.info.classes)} classes")
        self.model: nn.Module = build_model(cfg.model.spec()).to(self.device)
        # a teacher learns only from frames carrying its input and its target (METHOD.md A)
        self.train_set = training_view(self.train_set, getattr(self.model, "required_labels", ()),
                                       cfg.data.min_epoch_frames)
        # missing/unexpected keys of model.encoder_weights; a resumed run takes its checkpoint's
        self.encoder_report: dict[str, list[str]] | None = None
        if cfg.model.encoder_weights and load_pretrained:
            self.encoder_report = load_pretrained_encoder(self.model, cfg.model.encoder_weights)
        tasks = list(getattr(self.model, "tasks", cfg.model.tasks))
        # task-transfer nets (METHOD.md B): trained with the student, checkpointed, never exported
        self.transfer: TaskTransfer | None = self._build_transfer(tasks)
        self.xtc_lambdas = {"seg": cfg.loss.xtc_lambda_seg, "depth": cfg.loss.xtc_lambda_depth}
        self.weighting = build_weighting(cfg.loss, tasks).to(self.device)
        params = list(self.model.parameters()) + list(self.weighting.optimizer_parameters())
        if self.transfer is not None:
            params += list(self.transfer.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        step = cfg.train.lr_step_epochs
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step or 10**9, 0.5)
        self.epoch = 0
        self.step = 0
        self.best = -math.inf

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
    def state(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            **({"transfer": self.transfer.state_dict()} if self.transfer is not None else {}),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "config": self.cfg.to_dict(),
            "info": asdict(self.info),
            "metrics": json.loads(json.dumps(metrics, default=float)),
        }

    def resume(self) -> bool:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            return False
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.weighting.load_state_dict(ckpt["weighting"])
        if self.transfer is not None:
            if "transfer" not in ckpt:
                raise ConfigError(f"{path} was trained without loss.xtc; resume it with "
                                  "loss.xtc=false or start a new run directory")
            self.transfer.load_state_dict(ckpt["transfer"])
        self.epoch, self.step, self.best = ckpt["epoch"], ckpt["step"], ckpt["best"]
        log.info("resumed %s at epoch %d, step %d", path, self.epoch, self.step)
        return True

    # -- the loop ----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            pred = self.model(*model_inputs(self.model, batch, self.device))
            transferred = self.transfer(pred) if self.transfer is not None else None
        batch_dev = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
        terms = task_losses(pred, batch_dev, self.cfg.data.pseudo_weight)
        extra: dict[str, torch.Tensor] = {}
        if transferred is not None:
            mode = self.cfg.loss.xtc_mode
            cross = cross_task_losses(pred, transferred, batch_dev, mode,
                                      self.cfg.data.pseudo_weight)
            prefix = "xtc" if mode == "consistency" else "align"
            extra = {**{f"sup_{t}": v for t, v in terms.items()},
                     **{f"{prefix}_{t}": v for t, v in cross.items()}}
            terms = task_objectives(terms, cross, self.xtc_lambdas)  # L_t of eq. 11
        if not terms:
            return {}
        shared = getattr(self.model, "shared_parameters", lambda: None)()
        loss = self.weighting.combine(terms, shared)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss at step {self.step}: "
                                     f"{ {k: float(v) for k, v in terms.items()} }")
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for m in self.trainable_modules() for p in m.parameters()],
                                     self.cfg.train.grad_clip)
        self.optimizer.step()
        self.weighting.step()  # GradNorm's own update of the task weights; a no-op for others
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in {**terms, **extra}.items()}}

    def fit(self, resume: bool = False) -> Path:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        save_config(cfg, self.run_dir / "config.yaml")
        if self.encoder_report is not None:
            (self.run_dir / "encoder_weights.json").write_text(json.dumps(
                {"path": cfg.model.encoder_weights, **self.encoder_report}, indent=1))
        loader_gen = torch.Generator().manual_seed(cfg.train.seed)
        val_loader = DataLoader(self.val_set, batch_size=cfg.train.batch_size, shuffle=False,
                                num_workers=cfg.data.num_workers, collate_fn=collate)
        metrics_path = self.run_dir / "metrics.jsonl"
        while self.epoch < cfg.train.epochs:
            if cfg.train.max_steps and self.step >= cfg.train.max_steps:
                break
            self.train_set.set_epoch(self.epoch)
            loader_gen.manual_seed(cfg.train.seed * 1000 + self.epoch)
            loader = DataLoader(self.train_set, batch_size=cfg.train.batch_size, shuffle=True,
                                drop_last=len(self.train_set) > cfg.train.batch_size,
                                num_workers=cfg.data.num_workers, collate_fn=collate,
                                generator=loader_gen)
            for module in self.trainable_modules():
                module.train()
            t0 = time.time()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            bar = tqdm(loader, desc=f"{cfg.train.stage} epoch {self.epoch + 1}/{cfg.train.epochs}",
                       leave=False, dynamic_ncols=True, disable=None)
            for batch in bar:
                logs = self.train_step(batch)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                if logs:
                    bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if cfg.train.max_steps and self.step >= cfg.train.max_steps:
                    break
            bar.close()
            train_means = {k: sums[k] / counts[k] for k in sums}
            self.weighting.end_epoch({k: v for k, v in train_means.items()
                                      if k in self.weighting.tasks})
            self.scheduler.step()
            self.epoch += 1
            metrics, kept = evaluate(self.model, val_loader, len(self.info.classes),
                                     self.info.classes, self.device, self.info.max_depth,
                                     keep=cfg.train.montage_frames)
            improved = score(metrics) > self.best
            if improved:
                self.best = score(metrics)
            state = self.state(metrics)
            save_checkpoint(state, self.run_dir / "last.pt")
            if improved:
                save_checkpoint(state, self.run_dir / "best.pt")
            if kept:
                save_rgb_png(self.run_dir / "montage.png",
                             montage(kept, self.info.palette, self.info.max_depth))
            record = {"epoch": self.epoch, "step": self.step, "time_s": round(time.time() - t0, 2),
                      "lr": self.optimizer.param_groups[0]["lr"], "train": train_means,
                      "val": metrics, "weights": self.weighting.weights(), "best": improved}
            with metrics_path.open("a") as f:
                f.write(json.dumps(record, default=float) + "\n")
            log.info("epoch %d/%d  loss %.4f  %s  (%.1fs)", self.epoch, cfg.train.epochs,
                     train_means.get("loss", float("nan")), summarize(metrics), record["time_s"])
        return self.run_dir


def summarize(metrics: dict[str, dict[str, Any]]) -> str:
    parts = []
    if "seg" in metrics:
        parts.append(f"mIoU {metrics['seg']['miou']:.3f} pixacc {metrics['seg']['pixel_acc']:.3f}")
    if "depth" in metrics:
        d = metrics["depth"]
        parts.append(f"abs {d['abs_err']:.3f} rel {d['rel_err']:.3f} rmse {d['rmse']:.3f} "
                     f"d1 {d['delta1']:.3f}")
    return "  ".join(parts)


def train(cfg: ExperimentConfig, resume: bool = False, pseudo=None) -> Path:
    """Train the stage described by cfg into cfg.train.out_dir; returns the run directory."""
    has_last = (Path(cfg.train.out_dir) / "last.pt").is_file()
    return Trainer(cfg, pseudo, load_pretrained=not (resume and has_last)).fit(resume=resume)
