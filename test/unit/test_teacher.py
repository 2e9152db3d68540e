"""The multi-modal teacher: fusion shapes in both directions, that the auxiliary input matters,
and that training a teacher only uses frames carrying both its input and its target."""

from __future__ import annotations

import pytest
import torch

from mtl_perception.core.models.registry import ModelSpec, build_model
from mtl_perception.core.models.teacher import FusionBlock, MultiModalTeacher
from mtl_training.config import ConfigError, ExperimentConfig, ModelConfig
from mtl_training.data.datasets import collate
from mtl_training.trainer import Trainer

B, C = 2, 5


def _teacher(aux: str) -> MultiModalTeacher:
    torch.manual_seed(0)
    return build_model(ModelSpec(arch="teacher", aux_input=aux, num_classes=C,
                                   decoder_channels=8, decoder_convs=1)).eval()


def _aux(aux: str, h: int, w: int) -> torch.Tensor:
    if aux == "depth":
        d = torch.rand(B, 1, h, w) * 8 + 0.5
        d[:, :, :4, :4] = 0  # a sensor hole
        return d
    seg = torch.randint(0, C, (B, h, w))
    seg[:, :3] = 255  # unlabelled pixels
    return seg


def test_fusion_block_keeps_rgb_shape():
    block = FusionBlock(64, 32)
    out = block(torch.randn(B, 64, 6, 8), torch.randn(B, 32, 6, 8))
    assert out.shape == (B, 64, 6, 8)


@pytest.mark.parametrize(("aux", "target", "channels"), [("depth", "seg", C), ("seg", "depth", 1)])
@pytest.mark.parametrize(("h", "w"), [(48, 64), (40, 52)])  # 40x52 is no multiple of 32
def test_teacher_shapes_both_directions(aux, target, channels, h, w):
    teacher = _teacher(aux)
    assert teacher.aux_input == aux and teacher.tasks == (target,)
    image, a = torch.randn(B, 3, h, w), _aux(aux, h, w)
    feats = teacher.fused_features(image, a)
    assert [f.shape[1] for f in feats] == teacher.encoder.channels
    assert [f.shape[-1] for f in feats] == [-(-w // s) for s in (2, 4, 8, 16, 32)]
    with torch.no_grad():
        out = teacher(image, a)
    assert set(out) == {target}
    assert out[target].shape == (B, channels, h, w)
    if target == "depth":
        assert bool((out["depth"] > 0).all() and (out["depth"] < teacher.max_depth).all())


@pytest.mark.parametrize("aux", ["depth", "seg"])
def test_auxiliary_input_changes_the_prediction(aux):
    teacher = _teacher(aux)
    image = torch.randn(B, 3, 32, 48)
    with torch.no_grad():
        a = teacher(image, _aux(aux, 32, 48))[teacher.target]
        b = teacher(image, torch.zeros_like(_aux(aux, 32, 48)))[teacher.target]
    assert not torch.allclose(a, b)  # the fusion modules really feed the aux branch in


def test_unknown_direction_is_a_config_error():
    with pytest.raises(ConfigError, match="aux_input"):
        ModelConfig(arch="teacher", aux_input="normals").spec()


def test_teacher_trains_only_on_frames_with_both_labels(tmp_path):
    cfg = ExperimentConfig()
    cfg.data.train_frames, cfg.data.val_frames = 10, 2
    cfg.data.render_height, cfg.data.render_width = 24, 32
    cfg.data.height, cfg.data.width = 16, 24
    cfg.data.seg_count, cfg.data.depth_count = 5, 6
    cfg.model = ModelConfig(arch="teacher", aux_input="depth", decoder_channels=8,
                            decoder_convs=1)
    cfg.train.out_dir = str(tmp_path / "teacher")
    cfg.train.batch_size = 4
    cfg.train.device = "cpu"
    trainer = Trainer(cfg)
    base = trainer.train_set.base
    both = int((base.keep_seg & base.keep_depth).sum())
    assert len(trainer.train_set) == both > 0
    batch = collate([trainer.train_set[i] for i in range(both)])
    assert bool(batch["has_seg"].all() and batch["has_depth"].all())
    logs = trainer.train_step(batch)
    assert "seg" in logs and "depth" not in logs  # a depth->seg teacher learns segmentation only
