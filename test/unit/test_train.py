"""A tiny end-to-end training run on the synthetic world: real steps, checkpoints, resume, export.

Sized for a shared CPU (a few seconds): 8 frames of 32x48, ResNet-18 with an 8-channel decoder.
"""

import json

import pytest
import torch

from mtl_perception.core.artifact import load_artifact
from mtl_perception.core.models.backbones import build_encoder
from mtl_perception.core.models.registry import build_model
from mtl_training.checkpoint import load_checkpoint, model_config_of
from mtl_training.config import ConfigError, ExperimentConfig
from mtl_training.export import export_run
from mtl_training.trainer import Trainer, train


def tiny_config(out_dir, **loss) -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames = 8, 4
    d.render_height, d.render_width, d.height, d.width = 30, 40, 32, 48
    m = cfg.model
    m.decoder_channels, m.decoder_convs = 8, 1
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.lr = str(out_dir), 2, 4, 1e-3
    t.device, t.num_threads, t.montage_frames, t.seed = "cpu", 1, 2, 3
    cfg.loss.xtc_channels = 4
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_xtc_gradnorm_run_checkpoints_resumes_and_exports_the_student_only(tmp_path):
    run = train(tiny_config(tmp_path / "run", xtc=True, weighting="gradnorm"))
    assert {"last.pt", "best.pt", "config.yaml", "metrics.jsonl", "montage.png"} <= {
        p.name for p in run.iterdir()}
    recs = _records(run)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert {"loss", "seg", "depth", "sup_seg", "sup_depth", "xtc_seg", "xtc_depth"} <= set(
        recs[0]["train"])
    assert set(recs[-1]["val"]) == {"seg", "depth"}
    assert recs[-1]["weights"] != {"seg": 1.0, "depth": 1.0}  # GradNorm moved them
    ckpt = load_checkpoint(run / "last.pt")
    assert "transfer" in ckpt and any(k.startswith("seg_to_depth.") for k in ckpt["transfer"])

    # resume: a third epoch continues the same run with the same weights state
    cfg = tiny_config(tmp_path / "run", xtc=True, weighting="gradnorm")
    cfg.train.epochs = 3
    trainer = Trainer(cfg)
    assert trainer.resume() and trainer.epoch == 2
    assert trainer.weighting.weights() == pytest.approx(recs[-1]["weights"])
    trainer.fit(resume=True)
    assert [r["epoch"] for r in _records(run)] == [1, 2, 3]

    # export ships exactly the student: the transfer nets stay behind
    art = load_artifact(export_run(run, tmp_path / "student.safetensors", "last"))
    student_keys = set(build_model(model_config_of(ckpt).spec()).state_dict())
    assert set(art.model.state_dict()) == student_keys
    assert not any("seg_to_depth" in k or "depth_to_seg" in k for k in student_keys)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = tiny_config(tmp_path / "a", xtc=True, weighting="dwa")
    straight.train.epochs = 3
    Trainer(straight).fit()
    first = tiny_config(tmp_path / "b", xtc=True, weighting="dwa")
    Trainer(first).fit()
    second = tiny_config(tmp_path / "b", xtc=True, weighting="dwa")
    second.train.epochs = 3
    train(second, resume=True)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-5), k
    assert _records(tmp_path / "a")[-1]["weights"] == pytest.approx(
        _records(tmp_path / "b")[-1]["weights"])


def test_pretrained_encoder_loads_reports_and_is_not_needed_by_the_artifact(tmp_path):
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in build_encoder("resnet18").state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    weights = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, weights)
    cfg = tiny_config(tmp_path / "run", weighting="uncertainty")
    cfg.model.encoder_weights = str(weights)
    cfg.train.epochs, cfg.train.max_steps, cfg.train.lr = 1, 1, 1e-9
    trainer = Trainer(cfg)
    assert trainer.encoder_report == {"missing": [], "unexpected": ["fc.bias", "fc.weight"]}
    assert torch.equal(trainer.model.encoder.conv1.weight, state["conv1.weight"])
    run = trainer.fit()
    report = json.loads((run / "encoder_weights.json").read_text())
    assert report["missing"] == [] and report["path"] == str(weights)
    weights.unlink()  # the artifact carries the trained weights; the ImageNet file is not needed
    art = load_artifact(export_run(run, tmp_path / "s.safetensors"))
    assert torch.allclose(art.model.encoder.conv1.weight, state["conv1.weight"], atol=1e-4)


def test_xtc_needs_both_tasks_and_single_task_baseline_trains(tmp_path):
    cfg = tiny_config(tmp_path / "st", xtc=True)
    cfg.model.arch, cfg.model.tasks = "single_task", ["depth"]
    with pytest.raises(ConfigError, match=r"loss\.xtc needs a model predicting seg and depth"):
        Trainer(cfg)
    cfg.loss.xtc = False
    cfg.train.epochs = 1
    run = train(cfg)
    assert set(_records(run)[0]["val"]) == {"depth"}


class FixedPseudoLabels:
    """A pseudo-label source in the dataset's protocol (`get(frame_id)` -> class map or None):
    every frame gets the same map, half of it marked not-confident (255)."""

    task = "seg"

    def get(self, frame_id: str):
        import numpy as np

        labels = np.full((30, 40), 255, np.uint8)
        labels[15:] = 0  # "floor" in the lower half
        return labels


@pytest.mark.parametrize("mode", ["consistency", "alignment"])
def test_xtc_composes_with_pseudo_labels(tmp_path, mode):
    cfg = tiny_config(tmp_path / mode, xtc=True, xtc_mode=mode)
    cfg.data.seg_fraction, cfg.data.pseudo_weight = 0.25, 0.5
    cfg.train.epochs = 1
    trainer = Trainer(cfg, pseudo=FixedPseudoLabels())
    sources = [trainer.train_set[i]["seg_source"] for i in range(len(trainer.train_set))]
    assert sources.count("gt") == 2 and sources.count("pseudo") == 6
    run = trainer.fit()
    train_terms = _records(run)[0]["train"]
    prefix = "xtc" if mode == "consistency" else "align"
    assert {f"{prefix}_seg", f"{prefix}_depth", "sup_seg"} <= set(train_terms)
