"""Experiment configuration: dataclasses filled from YAML and `--set a.b=c` overrides.

The dataclasses are the single source of defaults and types; YAML files and the command line only
fill them. The resolved config is saved with every run and inside every checkpoint and artifact, so
a run can always be rebuilt from what it wrote.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtl_perception.core.models.registry import ModelSpec, ModelSpecError


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


@dataclass
class DataConfig:
    """Where samples come from and which labels each frame keeps."""

    name: str = "synthetic"  # synthetic | folder (a bag extract is a folder dataset)
    root: str | None = None  # dataset folder (data.name=folder)
    seed: int = 0  # synthetic world seed; also drives label subsets
    train_frames: int = 600  # synthetic: frames rendered for training
    val_frames: int = 60  # synthetic: held-out frames (rendered from a disjoint index range)
    height: int = 96  # network input height, pixels
    width: int = 128  # network input width, pixels
    render_height: int = 120  # synthetic: rendered size before resizing to height x width
    render_width: int = 160
    max_depth: float = 10.0  # metres; depth beyond is invalid
    seg_fraction: float = 1.0  # fraction of training frames that keep segmentation labels
    depth_fraction: float = 1.0  # fraction of training frames that keep depth labels
    seg_count: int | None = None  # exact count instead of a fraction (paper split: 250)
    depth_count: int | None = None  # exact count instead of a fraction (paper split: 500)
    seg_frames: list[int] | None = None  # explicit frame indices that keep segmentation
    depth_frames: list[int] | None = None  # explicit frame indices that keep depth
    pseudo_labels: str | None = None  # folder written by `mtl-train pseudo-label`
    pseudo_weight: float = 1.0  # loss weight of pseudo-labelled pixels relative to ground truth
    min_epoch_frames: int = 0  # repeat a small training set (a teacher's) to this many per epoch
    augment: bool = True  # horizontal flip + scale-crop in training
    num_workers: int = 0  # DataLoader workers


@dataclass
class ModelConfig:
    """The network to train: a ModelSpec (`spec()`) plus training-only options."""

    arch: str = "student"  # student | teacher | single_task
    encoder: str = "resnet18"  # resnet18 | resnet34 | resnet50
    encoder_weights: str | None = None  # local torchvision/timm state_dict (no download)
    num_classes: int = 7
    decoder_channels: int = 64  # paper: 128
    decoder_convs: int = 2  # 3x3 conv-BN-ReLU per decoder block (paper: 3)
    tasks: list[str] = field(default_factory=lambda: ["seg", "depth"])
    max_depth: float = 10.0  # metres; upper bound of the depth head
    aux_input: str = "depth"  # teacher: depth (-> seg) | seg (-> depth)

    def spec(self) -> ModelSpec:
        """The model's own description (what checkpoints rebuild and artifacts store)."""
        try:
            return ModelSpec(self.arch, self.encoder, self.num_classes, self.decoder_channels,
                             self.decoder_convs, tuple(self.tasks), self.max_depth,
                             self.aux_input)
        except ModelSpecError as exc:
            raise ConfigError(str(exc)) from exc


@dataclass
class LossConfig:
    """How per-task losses are formed and combined."""

    depth_weight: float = 1.0  # alpha in CE + alpha * depth loss
    weighting: str = "equal"  # equal | uncertainty | gradnorm | dwa
    gradnorm_alpha: float = 1.5  # GradNorm restoring-force strength (Chen et al.: 0.5..3)
    gradnorm_lr: float = 0.025  # Adam learning rate of GradNorm's own task-weight update
    dwa_temperature: float = 2.0  # DWA softmax temperature (Liu et al.: 2)
    xtc: bool = False  # cross-task consistency through task-transfer networks
    xtc_lambda_seg: float = 0.01  # lambda_t of eq. 11 for seg (paper: 0.01 Cityscapes, 1e-4 NYU)
    xtc_lambda_depth: float = 0.01  # lambda_t of eq. 11 for depth
    xtc_mode: str = "consistency"  # consistency (target: detached direct prediction, label-free)
    #                                | alignment (target: ground truth, labelled frames only)
    xtc_channels: int = 64  # width of the task-transfer U-Nets' first level (paper: 64/128/256)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    stage: str = "student"  # teacher | student
    out_dir: str = "runs/student"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step_epochs: int = 0  # halve the learning rate every N epochs; 0 = constant
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | off | bf16 | fp16
    seed: int = 0
    num_threads: int = 0  # CPU threads; 0 = torch default
    max_steps: int = 0  # stop after this many optimiser steps; 0 = epochs decide
    log_every: int = 20  # steps between log lines
    montage_frames: int = 4  # validation frames in the per-epoch montage PNG


@dataclass
class PseudoLabelConfig:
    """Teacher pseudo-labelling (METHOD.md A)."""

    tau: float = 0.9  # keep a pixel where the softmax confidence >= tau
    mode: str = "global"  # global | per_class
    per_class_quantile: float = 0.5  # per_class mode: class threshold = min(tau, this quantile)
    depth_rel_tol: float = 0.05  # pseudo-depth: keep a pixel where |d - d_flipped| <= tol * d
    batch_size: int = 8


@dataclass
class BagConfig:
    """Reading robot recordings (`mtl-train bag index|extract`, `mtl-replay`)."""

    rgb_topic: str | None = None  # colour Image or CompressedImage topic; None = suggested by index
    depth_topic: str | None = None  # depth Image (16UC1/mono16 mm, 32FC1 m); None = suggested
    rgb_info_topic: str | None = None  # CameraInfo of the colour camera; None = matched by name
    depth_info_topic: str | None = None  # CameraInfo of the depth camera; None = matched by name
    label_topic: str | None = None  # optional Image of class ids used as segmentation ground truth
    sync_tolerance: float = 0.15  # seconds: max |colour stamp - depth stamp| for a pair
    min_gap: float = 0.0  # seconds between kept colour frames (0 = keep every paired frame)
    stride: int = 1  # keep every N-th paired frame (applied after min_gap)
    extrinsic: list[float] | None = None  # depth->colour [tx, ty, tz, qx, qy, qz, qw]:
    #                                       p_colour = R p_depth + t; None = /tf_static or vendor tf
    depth_scale: float | None = None  # metres per unit of 16-bit depth; None = 0.001 (REP 118)
    classes: list[str] | None = None  # class names of the extracted dataset; None = synthetic world
    val_every: int = 10  # every N-th extracted frame goes to the val split (0 = no val split)


@dataclass
class ExperimentConfig:
    """The whole experiment: one file, one object, saved with every run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    bag: BagConfig = field(default_factory=BagConfig)  # recorded rosbags
    # Optional per-stage overrides (e.g. {"teacher": {"train": {"out_dir": ...}}}): applied by
    # `for_stage` so one YAML file can drive the teacher, pseudo-label and student steps.
    stages: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_stage(self, stage: str) -> ExperimentConfig:
        """The config with `stages.<stage>` merged in (and train.stage set)."""
        merged = from_dict(ExperimentConfig, self.to_dict())
        if stage in self.stages:
            _merge_into(merged, self.stages[stage], prefix=f"stages.{stage}")
        merged.train.stage = stage
        return merged


T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from exc
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (partial) mapping, rejecting unknown keys by name."""
    hints = _field_types(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def _merge_into(obj: Any, values: dict[str, Any], prefix: str) -> None:
    hints = _field_types(type(obj))
    for name, value in values.items():
        if name not in hints:
            raise ConfigError(f"unknown config key '{prefix}.{name}'")
        current = getattr(obj, name)
        if is_dataclass(current) and isinstance(value, dict):
            _merge_into(current, value, f"{prefix}.{name}")
        else:
            setattr(obj, name, _coerce(value, hints[name], f"{prefix}.{name}"))


def apply_override(cfg: ExperimentConfig, assignment: str) -> None:
    """Apply one `a.b=c` override in place; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    target: Any = cfg
    for part in parts[:-1]:
        if part == "stages" or isinstance(target, dict):
            target = target.setdefault(part, {}) if isinstance(target, dict) else target.stages
            continue
        if not is_dataclass(target) or not hasattr(target, part):
            raise ConfigError(f"unknown config key '{key}'")
        target = getattr(target, part)
    value = yaml.safe_load(raw) if raw.strip() else None
    leaf = parts[-1]
    if isinstance(target, dict):
        target[leaf] = value
        return
    hints = _field_types(type(target))
    if leaf not in hints:
        raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(hints))})")
    setattr(target, leaf, _coerce(value, hints[leaf], key))


def load_config(path: str | Path | None = None,
                overrides: list[str] | None = None) -> ExperimentConfig:
    """Defaults, then the YAML file, then `--set` overrides, in that order."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        values = loaded or {}
    try:
        cfg = from_dict(ExperimentConfig, values)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from exc
    for assignment in overrides or []:
        apply_override(cfg, assignment)
    return cfg


def load_packaged_config(name: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A committed experiment YAML by name (`synthetic_demo`, ...), read from the installed
    package (mtl_training/configs, which `config/train` in the repository links to), so
    experiments run the same from a checkout, a wheel or a colcon install space."""
    ref = resources.files("mtl_training") / "configs" / f"{name}.yaml"
    with resources.as_file(ref) as path:
        return load_config(path, overrides)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

