"""Input pipeline vs the training step: does the loader keep the step fed? (288x384, batch 8)

- folder dataset (what `mtl-train synth` and `bag extract` write): samples/s through the
  Trainer's DataLoader settings (collate, augmentation on, prefetch 2, persistent workers) with
  0, 1 and 2 workers, over a whole second epoch (worker start-up is paid once per run);
- the procedural world rendered on the fly (data.name=synthetic): frames/s with 0, 1, 2 workers
  over its first epoch, worker start-up included (it caches what it rendered);
- the training step: `Trainer.train_step` samples/s on the same device at the same size/batch.
The headline ratio is the best loader rate over the step's consumption (target >= 1.5). On this
CPU-only, shared host the step runs on the same cores as the workers, so the figures are the
CPU ones; the docs explain reading them for a GPU step.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mtl_training.config import ExperimentConfig
from mtl_training.data import build_datasets
from mtl_training.data.datasets import collate
from mtl_training.data.sources.synthetic import write_synthetic_folder
from mtl_training.trainer import Trainer

HEIGHT, WIDTH, BATCH = 288, 384, 8
FRAMES = int(os.environ.get("BENCH_LOADER_FRAMES", "40"))
WORKERS = [int(w) for w in os.environ.get("BENCH_LOADER_WORKERS", "0,1,2").split(",")]
STEPS = int(os.environ.get("BENCH_LOADER_STEPS", "1"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _config(root: Path | None) -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames = FRAMES, 1
    d.height, d.width, d.render_height, d.render_width = HEIGHT, WIDTH, HEIGHT, WIDTH
    if root is not None:
        d.name, d.root = "folder", str(root)
    t = cfg.train
    t.device, t.num_threads, t.tensorboard, t.batch_size = "cpu", THREADS, False, BATCH
    t.out_dir = "/nonexistent/bench_data_loader"
    return cfg


def _loader_rate(dataset, workers: int, warm: bool = True) -> float:
    """Samples/s of a whole second epoch of a persistent-worker loader (what the Trainer keeps):
    worker start-up is paid in the first epoch, prefetching inside the timed one. `warm` False
    times the first epoch instead (the synthetic world caches what it rendered)."""
    opts = {"prefetch_factor": 2, "persistent_workers": True} if workers else {}
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=collate, drop_last=True, **opts)
    if warm:
        for _ in loader:  # epoch 1: start the workers
            pass
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["image"])
    return n / (time.perf_counter() - t0)


def run(results_dir: Path) -> dict:
    torch.set_num_threads(THREADS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = Path(tmp) / "folder"
        t0 = time.perf_counter()
        write_synthetic_folder(root, _config(None).data)
        write_fps = (FRAMES + 1) / (time.perf_counter() - t0)
        folder_train, _ = build_datasets(_config(root).data)
        for w in WORKERS:
            rows.append({"pipeline": "folder dataset", "workers": w,
                         "samples_per_s": _loader_rate(folder_train, w)})
        for w in WORKERS:
            synth_train, _ = build_datasets(_config(None).data)  # fresh: nothing cached
            rows.append({"pipeline": "synthetic world (rendered)", "workers": w,
                         "samples_per_s": _loader_rate(synth_train, w, warm=False)})
        trainer = Trainer(_config(root))
        batch = collate([trainer.train_set[i] for i in range(BATCH)])
        trainer.train_step(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(STEPS):
            trainer.train_step(batch)
        step_rate = STEPS * BATCH / (time.perf_counter() - t0)
    rows.append({"pipeline": "Trainer.train_step (consumes)", "workers": "-",
                 "samples_per_s": step_rate})
    best_folder = max(r["samples_per_s"] for r in rows if r["pipeline"] == "folder dataset")
    best_synth = max(r["samples_per_s"] for r in rows
                     if r["pipeline"].startswith("synthetic"))
    ratio = best_folder / step_rate
    return {
        "title": f"{HEIGHT}x{WIDTH}, batch {BATCH}, {FRAMES} frames, CPU ({THREADS} threads "
                 "for the step), augmentation on",
        "table": rows,
        "folder_samples_per_s": best_folder,
        "synthetic_frames_per_s": best_synth,
        "train_step_samples_per_s": step_rate,
        "ratio_loader_to_step": ratio,
        "target": ">= 1.5",
        "notes": [f"ratio best folder loader / training step = {ratio:.2f} (target >= 1.5)",
                  f"writing the {FRAMES + 1}-frame folder ran at {write_fps:.1f} frames/s "
                  "(synthetic render + PNG encode, one process)",
                  "workers and the step share this host's cores; on a GPU the step's rate is "
                  "the GPU's and the loader keeps every core"],
    }
