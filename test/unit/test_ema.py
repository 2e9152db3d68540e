"""train.ema_decay: the moving average is what is validated, checkpointed, resumed and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mtl_training.checkpoint import load_checkpoint, model_from_checkpoint
from mtl_training.config import load_config
from mtl_training.ema import WeightAverage
from mtl_training.trainer import Trainer, train

TINY = {
    "data": {"train_frames": 8, "val_frames": 2, "render_height": 30, "render_width": 40,
             "height": 32, "width": 48},
    "model": {"decoder_channels": 4, "decoder_convs": 1},
    "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "num_threads": 1,
              "montage_frames": 0, "seed": 3, "tensorboard": False},
}


def _cfg(tmp_path: Path, run: str = "run", **train_keys: object):
    values = json.loads(json.dumps(TINY))
    values["train"].update(train_keys)
    path = tmp_path / f"{run}.yaml"
    path.write_text(json.dumps(values))
    cfg = load_config(path)
    cfg.train.out_dir = str(tmp_path / run)
    return cfg


def test_average_follows_the_closed_form_and_copies_integer_buffers():
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(0.0)
    ema = WeightAverage(net, decay=0.5)
    expected = 0.0
    for n, value in enumerate((1.0, 2.0, 4.0), start=1):
        with torch.no_grad():
            net[0].weight.fill_(value)
        net[1].num_batches_tracked.fill_(7 * n)
        ema.update()
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert ema.model[0].weight[0, 0].item() == pytest.approx(expected)
        assert int(ema.model[1].num_batches_tracked) == 7 * n
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match=r"train\.ema_decay"):
        WeightAverage(net, decay=1.0)


def test_a_run_validates_checkpoints_resumes_and_exports_the_average(tmp_path):
    cfg = _cfg(tmp_path, ema_decay=0.9)
    run = train(cfg)
    last = load_checkpoint(run / "last.pt")
    assert last["ema"]["updates"] == last["step"] > 0
    raw, avg = last["model"], last["ema"]["model"]
    moved = [k for k in raw if raw[k].dtype.is_floating_point and not torch.equal(raw[k], avg[k])]
    assert moved  # the average is not the trained weights
    model, _ = model_from_checkpoint(run / "last.pt")  # what export and pseudo-label read
    for k, v in model.state_dict().items():
        assert torch.equal(v, avg[k]), k

    # resumed: the average continues (one update per step), it does not restart
    more = _cfg(tmp_path, ema_decay=0.9, epochs=3)
    trainer = Trainer(more, load_pretrained=False)
    assert trainer.resume()
    assert trainer.ema is not None and trainer.ema.updates == last["step"]
    assert all(torch.equal(v, avg[k]) for k, v in trainer.ema.model.state_dict().items())
    trainer.fit(resume=True)
    after = load_checkpoint(run / "last.pt")
    assert after["ema"]["updates"] == after["step"] > last["step"]


def test_switching_the_average_on_at_resume_starts_it_from_the_weights(tmp_path):
    run = train(_cfg(tmp_path))
    last = load_checkpoint(run / "last.pt")
    assert "ema" not in last
    trainer = Trainer(_cfg(tmp_path, ema_decay=0.9, epochs=3), load_pretrained=False)
    assert trainer.resume()
    assert trainer.ema.updates == 0
    assert all(torch.equal(v, last["model"][k])
               for k, v in trainer.ema.model.state_dict().items())
