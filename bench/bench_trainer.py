"""Trainer step throughput vs a minimal hand-written loop: same model, batches, optimiser, CPU.

Both sides train a fresh ResNet-18 student (same seed, same spec) with Adam at the same lr on the
same batches of 8 synthetic frames held in memory (collated once, so no data loading is timed).
The minimal loop is nanoGPT's shape and nothing else: forward -> the same task losses summed
(mtl_training.losses.task_losses, equal weights) -> backward -> clip -> step -> zero_grad. The
Trainer side calls `Trainer.train_step`, i.e. everything the Trainer does per step (autocast
plumbing, weighting, the distributed bookkeeping, the grad scaler, the logged floats). Rounds
alternate the two so background load hits both alike; the headline is the ratio of medians.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from mtl_perception.core.models.registry import build_model
from mtl_training.config import ExperimentConfig
from mtl_training.data.datasets import collate
from mtl_training.evaluate import model_inputs
from mtl_training.losses import task_losses
from mtl_training.trainer import Trainer

HEIGHT, WIDTH = (int(v) for v in os.environ.get("BENCH_TRAINER_SIZE", "64x96").split("x"))
BATCH = 8
STEPS = int(os.environ.get("BENCH_TRAINER_STEPS", "4"))  # timed steps per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _config() -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames = BATCH * 2, 1
    d.height, d.width, d.render_height, d.render_width = HEIGHT, WIDTH, HEIGHT, WIDTH
    cfg.model.decoder_channels = 32
    t = cfg.train
    t.device, t.num_threads, t.seed, t.lr, t.tensorboard = "cpu", THREADS, 0, 1e-3, False
    t.out_dir = "/nonexistent/bench_trainer"  # train_step writes nothing
    return cfg


class MinimalLoop:
    """The reference: what a person writes by hand for this model and these losses."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model.spec())
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.clip = cfg.train.grad_clip

    def step(self, batch: dict) -> float:
        pred = self.model(batch["image"])
        loss = sum(task_losses(pred, batch).values())
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def _time(step, batches: list[dict]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return len(batches) / (time.perf_counter() - t0)


def run(results_dir: Path) -> dict:
    cfg = _config()
    trainer = Trainer(cfg)
    loop = MinimalLoop(cfg)
    samples = [trainer.train_set[i] for i in range(BATCH * 2)]
    batches = [collate(samples[:BATCH]), collate(samples[BATCH:])]
    batches = (batches * STEPS)[:STEPS]
    assert model_inputs(trainer.model, batches[0], trainer.device)[0].shape == (BATCH, 3, HEIGHT,
                                                                               WIDTH)
    for m in (trainer.model, loop.model):
        m.train()
    trainer.train_step(batches[0])  # warm-up (allocator, first-call paths)
    loop.step(batches[0])
    ours, ref = [], []
    for _ in range(ROUNDS):
        ref.append(_time(loop.step, batches))
        ours.append(_time(trainer.train_step, batches))
    ours_s, ref_s = statistics.median(ours), statistics.median(ref)
    ratio = ours_s / ref_s
    return {
        "title": f"ResNet-18 student (decoder 32), {HEIGHT}x{WIDTH}, batch {BATCH}, Adam, CPU "
                 f"({THREADS} threads), {STEPS} steps x {ROUNDS} alternating rounds",
        "table": [
            {"loop": "minimal hand-written", "steps_per_s": ref_s,
             "samples_per_s": ref_s * BATCH},
            {"loop": "Trainer.train_step", "steps_per_s": ours_s,
             "samples_per_s": ours_s * BATCH},
        ],
        "trainer_steps_per_s": ours_s,
        "minimal_steps_per_s": ref_s,
        "ratio_trainer_to_minimal": ratio,
        "target": ">= 0.9",
        "notes": [f"ratio Trainer / minimal = {ratio:.3f} (target >= 0.9; same run, same "
                  "batches)",
                  "per-round steps/s, Trainer: " + ", ".join(f"{v:.2f}" for v in ours)
                  + "; minimal: " + ", ".join(f"{v:.2f}" for v in ref)],
    }
