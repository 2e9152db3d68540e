"""`build_model(spec)`: the one way to make a network, used by training, export and the node.

A ModelSpec is the network's own description, owned by the model code and versioned with the
artifact (not the training config: renaming a training option must not break exported models).
The artifact stores it as JSON; the node rebuilds the network from it through this table and
loads weights, so no code ever travels inside a model file.

Adding an architecture: write its module under models/, add one builder to `_BUILDERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from mtl_perception.core.contracts import TASKS
from mtl_perception.core.models.backbones import available_encoders
from mtl_perception.core.models.student import DECODERS, MultiTaskNet
from mtl_perception.core.models.teacher import AUX_TARGET, MultiModalTeacher

# Bounds that keep a hostile or mistyped spec from allocating without limit before anything is
# checked: beyond any network this package trains (LVIS has 1203 classes; the papers' decoders use
# 128 channels and 3 convs), far below what would exhaust a robot (the largest spec allowed,
# resnet50 + 512-channel decoders with 4 convs, is ~120 M parameters, 0.5 GB).
MAX_CLASSES = 2048
MAX_DECODER_CHANNELS = 512
MAX_DECODER_CONVS = 4
MAX_DEPTH_M = 10000.0


class ModelSpecError(ValueError):
    """A model description is invalid; the message names the field and what is allowed."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything `build_model` needs to rebuild a network."""

    arch: str = "student"  # student | single_task | teacher
    encoder: str = "resnet18"  # resnet18..50 | efficientnet_lite0..2 | efficientnet_lite0_lean
    num_classes: int = 7
    decoder_channels: int = 64
    decoder_convs: int = 2
    tasks: tuple[str, ...] = ("seg", "depth")
    max_depth: float = 10.0  # metres; upper bound of the depth head
    aux_input: str = "depth"  # teacher only: depth (-> seg) | seg (-> depth)
    # unet: one U-Net per task (the papers'); refine: one light refinement shared by the tasks
    # at stride 4, a small head each (real time; decoder_convs = pooling links per level).
    # Artifacts written before this field existed hold U-Nets: the default keeps them loading.
    decoder: str = "unet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        self.validate()

    def validate(self) -> None:
        """Raise ModelSpecError naming the first field out of bounds."""
        if self.arch not in _BUILDERS:
            raise ModelSpecError(f"Unknown model.arch '{self.arch}' "
                                 f"(available: {', '.join(sorted(_BUILDERS))})")
        if self.encoder not in available_encoders():
            raise ModelSpecError(f"Unknown model.encoder '{self.encoder}' "
                                 f"(available: {', '.join(available_encoders())})")
        _int_in("num_classes", self.num_classes, 1, MAX_CLASSES)
        _int_in("decoder_channels", self.decoder_channels, 1, MAX_DECODER_CHANNELS)
        _int_in("decoder_convs", self.decoder_convs, 1, MAX_DECODER_CONVS)
        if (not isinstance(self.max_depth, (int, float)) or isinstance(self.max_depth, bool)
                or not math.isfinite(self.max_depth) or not 0 < self.max_depth <= MAX_DEPTH_M):
            raise ModelSpecError(f"model.max_depth must be a number in (0, {MAX_DEPTH_M:g}] m, "
                                 f"got {self.max_depth!r}")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or \
                len(set(self.tasks)) != len(self.tasks):
            raise ModelSpecError(f"model.tasks must be distinct values of {', '.join(TASKS)}, "
                                 f"got {list(self.tasks)}")
        if self.arch == "single_task" and len(self.tasks) != 1:
            raise ModelSpecError(f"model.arch single_task needs exactly one task, got "
                                 f"{list(self.tasks)}")
        if self.aux_input not in AUX_TARGET:
            raise ModelSpecError(f"Unknown model.aux_input '{self.aux_input}' "
                                 f"(available: {', '.join(AUX_TARGET)})")
        if self.decoder not in DECODERS:
            raise ModelSpecError(f"Unknown model.decoder '{self.decoder}' "
                                 f"(available: {', '.join(DECODERS)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, values: Any, where: str = "architecture") -> ModelSpec:
        """A mapping (e.g. the artifact's `architecture`) -> spec; unknown keys are refused."""
        if not isinstance(values, dict):
            raise ModelSpecError(f"{where} must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelSpecError(f"{where} has unknown field '{unknown[0]}' "
                                 f"(known: {', '.join(sorted(known))})")
        for key, kind in (("arch", str), ("encoder", str), ("aux_input", str), ("decoder", str)):
            if key in values and not isinstance(values[key], kind):
                raise ModelSpecError(f"{where}.{key} must be a string, got {values[key]!r}")
        tasks = values.get("tasks", cls.tasks)
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
            raise ModelSpecError(f"{where}.tasks must be a list of task names, got {tasks!r}")
        try:
            return cls(**{**values, "tasks": tuple(tasks)})
        except ModelSpecError as exc:  # name the field as this document calls it
            raise ModelSpecError(str(exc).replace("model.", f"{where}.", 1)) from None


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ModelSpecError(f"model.{name} must be an integer in [{low}, {high}], got {value!r}")


def _student(spec: ModelSpec) -> nn.Module:
    return MultiTaskNet(spec.encoder, spec.num_classes, spec.tasks, spec.decoder_channels,
                        spec.decoder_convs, spec.max_depth, decoder=spec.decoder)


def _teacher(spec: ModelSpec) -> nn.Module:
    return MultiModalTeacher(spec.encoder, spec.num_classes, spec.aux_input,
                             spec.decoder_channels, spec.decoder_convs, spec.max_depth,
                             spec.decoder)


_BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "student": _student,
    "single_task": _student,  # the same network with one task: the Delta_m reference
    "teacher": _teacher,
}
DEPLOYABLE_ARCHS = ("student", "single_task")  # RGB in only: what an artifact may hold


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network `spec` describes (validated when the spec was made)."""
    return _BUILDERS[spec.arch](spec)
