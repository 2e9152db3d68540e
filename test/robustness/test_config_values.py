"""Every config key with a range or a choice refuses a bad value at load, in one line naming it.

The corpus is the issue's (batch_size=0, lr=-1/nan, fractions outside [0, 1], height 0/-96, ...)
plus one out-of-range value per remaining rule. Each goes in through `--set` and through a YAML
file (which adds the file name); a few go through `mtl-train` itself (one line, exit 2). Values
only a started run can judge (CUDA present, the encoder_weights file, label counts against the
split's length, num_classes against the dataset) are checked at Trainer start.
"""

from __future__ import annotations

import pytest
import torch

from mtl_training.apps.train_cli import main
from mtl_training.config import (
    LOSS_WEIGHTINGS,
    RULES,
    ConfigError,
    ExperimentConfig,
    load_config,
    load_packaged_config,
)
from mtl_training.data import build_datasets
from mtl_training.trainer import Trainer
from mtl_training.weighting import available_weightings

# (override, the key its error must name)
BAD_VALUES = [
    ("train.prefetch_factor=0", "train.prefetch_factor"),
    ("data.classes=0", "data.classes"), ("data.depth_target=disparity", "data.depth_target"),
    ("data.val_fraction=0.95", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"), ("data.train_count=0", "data.train_count"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-3", "train.batch_size"),
    ("train.lr=-1", "train.lr"), ("train.lr=0", "train.lr"), ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"), ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.epochs=-1", "train.epochs"), ("train.epochs=0", "train.epochs"),
    ("train.grad_clip=-1", "train.grad_clip"), ("train.num_threads=-4", "train.num_threads"),
    ("train.max_steps=-1", "train.max_steps"), ("train.lr_step_epochs=-2", "train.lr_step_epochs"),
    ("train.device=tpu", "train.device"), ("train.device=cuda:x", "train.device"),
    ("train.device=''", "train.device"), ("train.amp=fp8", "train.amp"),
    ("train.stage=pupil", "train.stage"), ("train.seed=-1", "train.seed"),
    ("train.log_every=0", "train.log_every"), ("train.montage_frames=-1", "train.montage_frames"),
    ("train.checkpoint_every=-5", "train.checkpoint_every"), ("train.out_dir=''", "train.out_dir"),
    ("data.seg_fraction=-0.5", "data.seg_fraction"), ("data.seg_fraction=2", "data.seg_fraction"),
    ("data.depth_fraction=1.01", "data.depth_fraction"),
    ("data.train_frames=-5", "data.train_frames"), ("data.train_frames=0", "data.train_frames"),
    ("data.val_frames=-1", "data.val_frames"), ("data.height=0", "data.height"),
    ("data.height=-96", "data.height"), ("data.width=4", "data.width"),
    ("data.width=100000", "data.width"), ("data.render_height=0", "data.render_height"),
    ("data.render_width=-1", "data.render_width"), ("data.depth_frames=[-5]", "data.depth_frames"),
    ("data.max_depth=-10", "data.max_depth"), ("data.max_depth=0", "data.max_depth"),
    ("data.seg_count=-1", "data.seg_count"), ("data.depth_count=-2", "data.depth_count"),
    ("data.seg_frames=[-1, 2]", "data.seg_frames"), ("data.seed=-3", "data.seed"),
    ("data.pseudo_weight=-1", "data.pseudo_weight"), ("data.num_workers=-1", "data.num_workers"),
    ("data.min_epoch_frames=-1", "data.min_epoch_frames"), ("data.style=sunny", "data.style"),
    ("data.colour_jitter=1.5", "data.colour_jitter"),
    ("model.num_classes=0", "model.num_classes"), ("model.num_classes=100000", "model.num_classes"),
    ("model.decoder_channels=0", "model.decoder_channels"),
    ("model.decoder_channels=100000", "model.decoder_channels"),
    ("model.decoder_convs=0", "model.decoder_convs"),
    ("model.decoder_convs=10000", "model.decoder_convs"),
    ("model.max_depth=-10", "model.max_depth"), ("model.arch=vit", "model.arch"),
    ("model.encoder=resnet7", "model.encoder"), ("model.tasks=[seg, normals]", "model.tasks"),
    ("model.aux_input=lidar", "model.aux_input"),
    ("model.pretrained=imagenet21k", "model.pretrained"), ("model.decoder=fpn", "model.decoder"),
    ("model.encoder=efficientnet_b0", "model.encoder"),
    ("loss.weighting=magic", "loss.weighting"), ("loss.depth_weight=-1", "loss.depth_weight"),
    ("loss.depth_loss=l2", "loss.depth_loss"), ("train.lr_schedule=poly", "train.lr_schedule"),
    ("train.ema_decay=1", "train.ema_decay"),
    ("loss.gradnorm_lr=0", "loss.gradnorm_lr"), ("loss.gradnorm_alpha=-1", "loss.gradnorm_alpha"),
    ("loss.dwa_temperature=0", "loss.dwa_temperature"),
    ("loss.xtc_lambda_seg=1.5", "loss.xtc_lambda_seg"),
    ("loss.xtc_lambda_depth=-0.1", "loss.xtc_lambda_depth"),
    ("loss.xtc_mode=both", "loss.xtc_mode"), ("loss.xtc_channels=0", "loss.xtc_channels"),
    ("pseudo.tau=0", "pseudo.tau"), ("pseudo.tau=1.5", "pseudo.tau"),
    ("pseudo.mode=local", "pseudo.mode"),
    ("pseudo.per_class_quantile=2", "pseudo.per_class_quantile"),
    ("pseudo.depth_rel_tol=-1", "pseudo.depth_rel_tol"),
    ("pseudo.depth_filter=median", "pseudo.depth_filter"),
    ("pseudo.depth_max_rel_err=0", "pseudo.depth_max_rel_err"),
    ("pseudo.calibrate=target", "pseudo.calibrate"),
    ("pseudo.target_precision=0", "pseudo.target_precision"),
    ("pseudo.batch_size=0", "pseudo.batch_size"),
    ("bag.val_every=-3", "bag.val_every"), ("bag.depth_scale=-1", "bag.depth_scale"),
    ("bag.depth_scale=0", "bag.depth_scale"), ("bag.sync_tolerance=-0.1", "bag.sync_tolerance"),
    ("bag.min_gap=-1", "bag.min_gap"), ("bag.stride=0", "bag.stride"),
    ("bag.extrinsic=[0, 0, 0]", "bag.extrinsic"),
    ("bag.extrinsic=[0, 0, 0, 0, 0, 0, 0]", "bag.extrinsic"),
    ("bag.extrinsic=[0, 0, .nan, 0, 0, 0, 1]", "bag.extrinsic"),
    ("bag.classes=[]", "bag.classes"), ("bag.classes=[a, a]", "bag.classes"),
    ("stages={pupil: {train: {epochs: 2}}}", "stages.pupil"),
]

# on the boundary of a rule: must still load
GOOD_VALUES = ["data.seg_fraction=0", "data.seg_fraction=1", "data.val_frames=0", "pseudo.tau=1",
               "train.grad_clip=0", "train.max_steps=0", "train.checkpoint_every=0",
               "train.device=cuda:1", "bag.depth_scale=null", "bag.val_every=0",
               "loss.xtc_lambda_seg=0", "loss.xtc_lambda_depth=1", "data.height=8",
               "train.weight_decay=0", "data.seg_frames=[0, 3]", "data.seg_count=0",
               "data.val_fraction=0", "data.max_depth=null", "data.classes=40",
               "data.depth_target=inverse", "data.style=robot"]


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize(("override", "key"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in _one_line(err.value)


@pytest.mark.parametrize(("override", "key"), BAD_VALUES[::7], ids=[o for o, _ in BAD_VALUES[::7]])
def test_bad_value_in_a_yaml_file_names_the_file_and_the_key(tmp_path, override, key):
    dotted, raw = override.split("=", 1)
    section, leaf = dotted.split(".", 1) if "." in dotted else (dotted, None)
    f = tmp_path / "bad.yaml"
    f.write_text(f"{section}:\n  {leaf}: {raw}\n" if leaf else f"{section}: {raw}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = _one_line(err.value)
    assert msg.startswith(f"{f}: ") and key in msg


@pytest.mark.parametrize("override", GOOD_VALUES)
def test_boundary_values_load(override):
    load_config(None, [override])


def test_every_rule_is_exercised_by_the_corpus():
    keys = {key for _, key in BAD_VALUES}
    ruled = {f"{sec}.{name}" for cls, rules in RULES.items() for name in rules
             for sec in [{"DataConfig": "data", "ModelConfig": "model", "LossConfig": "loss",
                          "TrainConfig": "train", "PseudoLabelConfig": "pseudo",
                          "BagConfig": "bag"}[cls.__name__]]}
    assert ruled <= keys, sorted(ruled - keys)


def test_stage_overrides_are_checked_when_merged():
    cfg = load_config(None, ["stages={teacher: {train: {epochs: 0}}}"])
    with pytest.raises(ConfigError, match=r"stages\.teacher\.train\.epochs"):
        cfg.for_stage("teacher")


def test_cross_key_rules_wait_for_the_last_override():
    cfg = load_config(None, ["model.arch=single_task", "model.tasks=[depth]"])
    assert cfg.model.tasks == ["depth"]
    with pytest.raises(ConfigError, match=r"single_task"):
        load_config(None, ["model.arch=single_task"])


@pytest.mark.parametrize("name", ["synthetic_demo", "synthetic_imbalanced", "synthetic_consistency",
                                  "rosbag", "scarce_demo", "nyuv2", "nyuv2_imbalanced",
                                  "xtasc_nyuv2", "cityscapes", "cityscapes_300",
                                  "xtasc_cityscapes"])
def test_shipped_configs_pass_every_rule(name):
    cfg = load_packaged_config(name)
    for stage in ("teacher", "student"):
        cfg.for_stage(stage)


def test_weighting_choices_match_the_registered_methods():
    assert sorted(LOSS_WEIGHTINGS) == available_weightings()


# -- through mtl-train: one line on stderr, exit status 2 -----------------------------------------
@pytest.mark.parametrize(("override", "key"), [
    ("train.epochs=-1", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.lr=nan", "train.lr"), ("data.height=-96", "data.height"),
    ("model.decoder_channels=0", "model.decoder_channels"), ("train.device=tpu", "train.device"),
    ("bag.depth_scale=-1", "bag.depth_scale"),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, override, key):
    rc = main(["train", "--out", str(tmp_path / "run"), "--set", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("mtl-train train: error: ") and key in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _tiny(tmp_path) -> ExperimentConfig:
    return load_config(None, [
        "data.train_frames=8", "data.val_frames=2", "data.render_height=30",
        "data.render_width=40", "data.height=32", "data.width=48", "model.decoder_channels=4",
        "model.decoder_convs=1", "train.device=cpu", "train.num_threads=1",
        f"train.out_dir={tmp_path / 'run'}"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line_at_start(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path / "run"), "--set", "train.device=cuda",
               "--set", "data.train_frames=4", "--set", "data.val_frames=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "train.device" in err and "CUDA" in err


def test_missing_encoder_weights_file_is_one_line(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.model.encoder_weights = str(tmp_path / "nope.pth")
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    assert "model.encoder_weights" in _one_line(err.value) and "nope.pth" in str(err.value)


def test_garbage_encoder_weights_file_is_one_line(tmp_path):
    cfg = _tiny(tmp_path)
    weights = tmp_path / "junk.pth"
    weights.write_bytes(b"\x00not a state dict" * 50)
    cfg.model.encoder_weights = str(weights)
    with pytest.raises(ConfigError, match=r"model\.encoder_weights") as err:
        Trainer(cfg)
    _one_line(err.value)


@pytest.mark.parametrize(("field", "value"), [
    ("seg_count", 9), ("depth_count", 100), ("seg_frames", [0, 8]), ("depth_frames", [50]),
])
def test_label_counts_beyond_the_split_name_the_key(tmp_path, field, value):
    cfg = _tiny(tmp_path)
    setattr(cfg.data, field, value)
    cfg.validate()  # fine at load: the split's length is not known until it is opened
    with pytest.raises(ConfigError) as err:
        build_datasets(cfg.data)
    assert f"data.{field}" in _one_line(err.value) and "8 frames" in str(err.value)


def test_num_classes_against_the_dataset_is_one_line(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.model.num_classes = 3
    with pytest.raises(ConfigError, match=r"model\.num_classes") as err:
        Trainer(cfg)
    _one_line(err.value)


def test_a_config_built_in_python_is_checked_by_the_trainer(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.train.epochs = -1  # never went through load_config
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        Trainer(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fp16_without_cuda_is_one_line_at_start(tmp_path, capsys):
    """fp16 autocast is a CUDA feature here (its loss scaler, its speed): on a CPU-only machine it
    is refused before anything is built, naming train.amp; `auto` stays fine (no autocast)."""
    cfg = _tiny(tmp_path)
    cfg.train.amp = "fp16"
    with pytest.raises(ConfigError, match=r"train\.amp") as err:
        Trainer(cfg)
    assert "fp16" in _one_line(err.value) and "cpu" in str(err.value)
    rc = main(["train", "--out", str(tmp_path / "run"), "--set", "train.amp=fp16",
               "--set", "data.train_frames=4", "--set", "data.val_frames=1"])
    err_line = capsys.readouterr().err.strip()
    assert rc == 2 and len(err_line.splitlines()) == 1 and "train.amp" in err_line
    assert not (tmp_path / "run").exists()
    cfg.train.amp = "auto"
    assert Trainer(cfg).amp_dtype is None


@pytest.mark.parametrize(("side", "value", "aligned"), [("height", 50, "32 or 64"),
                                                         ("width", 100, "96 or 128")])
def test_a_side_off_the_encoder_stride_warns_once_with_the_consequence(tmp_path, caplog, side,
                                                                       value, aligned):
    """A side that is no multiple of 32 (the encoders' output stride) trains and exports (the
    decoder interpolates to each skip's size), but its skips no longer line up: one warning
    that says so and names the aligned sizes; an aligned size says nothing."""
    cfg = _tiny(tmp_path)
    cfg.data.height, cfg.data.width = 64, 64
    with caplog.at_level("WARNING"):
        Trainer(cfg)
    assert not [r for r in caplog.records if "multiple of 32" in r.getMessage()]
    setattr(cfg.data, side, value)
    with caplog.at_level("WARNING"):
        Trainer(cfg)
    lines = [r.getMessage() for r in caplog.records if "multiple of 32" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"data.{side}: {value} ") and aligned in lines[0]
