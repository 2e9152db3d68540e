"""The Trainer's input pipeline: loaders built once, persistent workers, per-epoch augmentation.

Workers hold their own copy of the dataset, so an epoch set in the main process never reaches
them; the sample's epoch travels with its index instead (trainer.EpochSampler / EpochKeyed). The
check: a run with 2 persistent workers trains exactly the run with none.
"""

from __future__ import annotations

import torch
from test_train import tiny_config

from mtl_training.checkpoint import load_checkpoint
from mtl_training.trainer import Trainer, train


def test_persistent_workers_train_the_same_run_as_the_main_process(tmp_path):
    runs = {}
    for workers in (0, 2):
        cfg = tiny_config(tmp_path / f"w{workers}")
        cfg.data.num_workers, cfg.train.persistent_workers = workers, True
        cfg.train.epochs, cfg.train.tensorboard = 3, False
        runs[workers] = load_checkpoint(train(cfg) / "last.pt")["model"]
    for k, v in runs[0].items():
        assert torch.equal(v, runs[2][k]), k


def test_loaders_follow_the_config(tmp_path):
    cfg = tiny_config(tmp_path / "run")
    cfg.data.num_workers, cfg.train.prefetch_factor = 1, 3
    train_loader, sampler, _ = Trainer(cfg).loaders()
    assert train_loader.persistent_workers and train_loader.prefetch_factor == 3
    assert not train_loader.pin_memory  # CPU: pinning buys nothing
    sampler.set(5, [3, 1, 6, 0])
    assert list(sampler)[:2] == [(5, 3), (5, 1)] and len(sampler) == 4
    batch = next(iter(train_loader))  # one batch of 4, in the order set
    assert [m["index"] for m in batch["meta"]] == [3, 1, 6, 0]
