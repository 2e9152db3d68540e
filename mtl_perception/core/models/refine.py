"""A light decoder for real time, after Light-Weight RefineNet (Nekrasov et al., BMVC 2018) and its
multi-task use (Nekrasov et al., ICRA 2019).

The U-Net decoders (decoder.py) spend most of a frame's cost: one per task, 3x3 convolutions up to
full resolution. Here the pyramid is refined once for all tasks and only at 1/4 resolution:

- a 1x1 convolution reduces each tap (strides 4, 8, 16, 32) to `channels`;
- top-down, each level adds the upsampled coarser result and refines it with chained residual
  pooling (CRP: max-pool 5x5, 1x1 conv, added back; `stages` times), which widens the context
  at the price of 1x1 convolutions;
- every task shares this down to stride 4, then owns a small head (3x3 depthwise, 1x1, 1x1 to its
  outputs), and the prediction is upsampled bilinearly to the input size at the very end.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class ChainedResidualPooling(nn.Module):
    """x + sum_i conv_i(pool(... conv_1(pool(x)))): context from ever wider windows, 1x1 convs only.

    The convolutions carry no batch norm (as Light-Weight RefineNet): each link starts as a small
    addition to the identity.
    """

    def __init__(self, channels: int, stages: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False)
                                   for _ in range(stages))

    def forward(self, x: Tensor) -> Tensor:
        top = x
        for conv in self.convs:
            top = conv(F.max_pool2d(top, 5, stride=1, padding=2))
            x = x + top
        return x


class TaskHead(nn.Module):
    """3x3 depthwise + 1x1 (a separable conv with its own features), then 1x1 to the outputs."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


class RefineDecoder(nn.Module):
    """Encoder taps (strides 2..32; the stride-2 tap is not used) -> {task: [B, out, H, W]}.

    `outputs` maps each task to its output channels; the refinement is shared by all of them.
    """

    def __init__(self, encoder_channels: list[int], outputs: dict[str, int],
                 channels: int = 64, stages: int = 2) -> None:
        super().__init__()
        taps = encoder_channels[1:]  # strides 4, 8, 16, 32
        self.lateral = nn.ModuleList(conv1x1_bn(c, channels) for c in taps)
        self.refine = nn.ModuleList(ChainedResidualPooling(channels, stages) for _ in taps)
        self.act = nn.ReLU(inplace=True)
        self.heads = nn.ModuleDict({t: TaskHead(channels, n) for t, n in outputs.items()})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The stride-4 refinement: the last layer every task shares (GradNorm's choice)."""
        return list(self.refine[0].parameters())

    def shared(self, feats: list[Tensor]) -> Tensor:
        """The refined stride-4 features every task reads: [B, channels, H/4, W/4]."""
        x: Tensor | None = None
        for i in reversed(range(len(self.lateral))):  # stride 32 first
            lat = self.lateral[i](feats[i + 1])
            if x is not None:
                lat = lat + F.interpolate(x, size=lat.shape[-2:], mode="bilinear",
                                          align_corners=False)
            x = self.refine[i](self.act(lat))
        assert x is not None
        return x

    def forward(self, feats: list[Tensor], size: tuple[int, int] | None) -> dict[str, Tensor]:
        """size None: the heads' stride-4 outputs [B, out_t, H/4, W/4] (the deployed ONNX form:
        the runtime brings them to camera size far cheaper than the graph upsamples 40 logit
        channels); otherwise bilinear to `size`: [B, out_t, H, W]."""
        x = self.shared(feats)
        if size is None:
            return {t: head(x) for t, head in self.heads.items()}
        return {t: F.interpolate(head(x), size=size, mode="bilinear", align_corners=False)
                for t, head in self.heads.items()}
