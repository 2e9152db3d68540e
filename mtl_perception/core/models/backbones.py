"""The encoder table (ResNets defined here, EfficientNet-Lite in efficientnet.py).

Every encoder returns the feature pyramid at strides 2, 4, 8, 16, 32, lists the taps' widths in
`channels`, exposes `stages()` (callables input -> tap 0, tap i-1 -> tap i, which the teacher fuses
between) and `last_stage_parameters()`, and has its input normalisation in `ENCODER_INPUT_STATS`.

ResNets with torchvision's parameter names:

There is no torchvision here, and robots should not need it: these modules are written from the
ResNet paper, but every parameter keeps torchvision's name (conv1, bn1, layer1.0.conv1, ...), so an
ImageNet state_dict saved by torchvision or timm loads with
`mtl_training.pretrained.load_encoder_weights` from a local
file.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mtl_perception.core.models.efficientnet import LITE_VARIANTS, EfficientNetLite
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats, PreprocessSpec


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk returning the feature pyramid at strides 2, 4, 8, 16, 32 (no classifier).

    `in_channels` != 3 builds the same trunk for another modality (the teacher's depth branch).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int],
                 in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        e = block.expansion
        self.channels: list[int] = [64, 64 * e, 128 * e, 256 * e, 512 * e]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """Five callables: the input -> tap 0, then tap i-1 -> tap i (strides 2..32)."""
        return [self.stem, lambda x: self.layer1(self.maxpool(x)), self.layer2, self.layer3,
                self.layer4]

    def last_stage_parameters(self) -> list[nn.Parameter]:
        """layer4: the encoder's last layer (GradNorm's choice)."""
        return list(self.layer4.parameters())

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.stem(x)  # [B, 64, H/2, W/2]
        c2 = self.layer1(self.maxpool(c1))  # [B, 64e, H/4, W/4]
        c3 = self.layer2(c2)  # [B, 128e, H/8, W/8]
        c4 = self.layer3(c3)  # [B, 256e, H/16, W/16]
        c5 = self.layer4(c4)  # [B, 512e, H/32, W/32]
        return [c1, c2, c3, c4, c5]


Encoder = ResNet | EfficientNetLite

_ENCODERS: dict[str, Callable[[int], Encoder]] = {
    "resnet18": lambda c: ResNet(BasicBlock, [2, 2, 2, 2], c),
    "resnet34": lambda c: ResNet(BasicBlock, [3, 4, 6, 3], c),
    "resnet50": lambda c: ResNet(Bottleneck, [3, 4, 6, 3], c),
    **{name: (lambda c, n=name: EfficientNetLite(n, c)) for name in LITE_VARIANTS},
}

# The input normalisation (per-channel mean, std on 0..1 values) each encoder family expects:
# what its ImageNet weights were trained with, so the same numbers go into training samples and
# into the artifact's PreprocessSpec. EfficientNet-Lite's TensorFlow training maps pixels to
# (x - 127) / 128, i.e. [-1, 1]: with it the packaged weights' stem batch-norm statistics fit
# natural images best (test_efficientnet). ResNets keep torchvision's ImageNet statistics.
SYMMETRIC_MEAN: tuple[float, float, float] = (127 / 255,) * 3
SYMMETRIC_STD: tuple[float, float, float] = (128 / 255,) * 3
ENCODER_INPUT_STATS: dict[str, InputStats] = {
    **{name: IMAGENET_STATS for name in ("resnet18", "resnet34", "resnet50")},
    **{name: (SYMMETRIC_MEAN, SYMMETRIC_STD) for name in LITE_VARIANTS},
}


def build_encoder(name: str, in_channels: int = 3) -> Encoder:
    if name not in _ENCODERS:
        raise ValueError(f"Unknown encoder '{name}' (available: {', '.join(sorted(_ENCODERS))})")
    return _ENCODERS[name](in_channels)


def available_encoders() -> list[str]:
    return sorted(_ENCODERS)


def encoder_input_stats(name: str) -> InputStats:
    """(mean, std) the encoder `name` expects; an unknown name gets the ImageNet statistics (the
    ModelSpec refuses unknown encoders before anything is built)."""
    return ENCODER_INPUT_STATS.get(name, IMAGENET_STATS)


def encoder_preprocess(name: str, height: int, width: int) -> PreprocessSpec:
    """The network input `name` expects at height x width (its family's normalisation)."""
    mean, std = encoder_input_stats(name)
    return PreprocessSpec(height, width, mean, std)
