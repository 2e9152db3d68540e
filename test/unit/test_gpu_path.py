"""The GPU path, on a GPU (opt in: `pytest -m gpu`; skipped without CUDA).

bf16 and fp16 autocast (fp16 with the grad scaler, whose state is checkpointed), channels_last,
pinned memory with persistent, prefetching DataLoader workers, and torch.compile: each trains a
tiny run end to end, finite, and its checkpoint rebuilds the network.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_train import tiny_config

from mtl_training.amp import grad_scaler
from mtl_training.checkpoint import load_checkpoint, model_from_checkpoint
from mtl_training.trainer import Trainer, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _gpu_config(out_dir, **train_opts):
    cfg = tiny_config(out_dir, xtc=True, weighting="uncertainty")
    cfg.train.device = "cuda"
    for k, v in train_opts.items():
        setattr(cfg.train, k, v)
    return cfg


def _finite_run(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for r in recs for v in r["train"].values())
    model, _ = model_from_checkpoint(run / "best.pt", "cuda")
    assert next(model.parameters()).is_cuda
    return recs


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_and_fp16_checkpoints_its_scaler(tmp_path, amp):
    run = train(_gpu_config(tmp_path / amp, amp=amp))
    _finite_run(run)
    ckpt = load_checkpoint(run / "last.pt")
    assert ("scaler" in ckpt) == (amp == "fp16")
    if amp == "fp16":
        assert ckpt["scaler"]["scale"] > 0
        trainer = Trainer(_gpu_config(tmp_path / amp, amp=amp, epochs=3))
        assert trainer.resume() and trainer.scaler.get_scale() == ckpt["scaler"]["scale"]


def test_grad_scaler_is_on_for_fp16_only():
    cuda = torch.device("cuda")
    assert grad_scaler(torch.float16, cuda).is_enabled()
    assert not grad_scaler(torch.bfloat16, cuda).is_enabled()
    assert not grad_scaler(None, cuda).is_enabled()


def test_channels_last_pinned_persistent_workers(tmp_path):
    cfg = _gpu_config(tmp_path / "cl", amp="bf16", channels_last=True, pin_memory=True,
                      persistent_workers=True, prefetch_factor=2)
    cfg.data.num_workers = 2
    trainer = Trainer(cfg)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    loader, _, _ = trainer.loaders()
    assert loader.pin_memory and loader.persistent_workers and loader.prefetch_factor == 2
    _finite_run(trainer.fit())


def test_compiled_forward_trains(tmp_path):
    run = train(_gpu_config(tmp_path / "compiled", amp="bf16", compile=True))
    _finite_run(run)
