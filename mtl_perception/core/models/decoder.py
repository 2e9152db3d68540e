"""U-Net style task decoder (METHOD.md B): one per task, skips from the shared encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate it, then n x (3x3 conv, BN, ReLU)."""

    def __init__(self, cin: int, cskip: int, cout: int, convs: int) -> None:
        super().__init__()
        layers = [conv_bn_relu(cin + cskip, cout)]
        layers += [conv_bn_relu(cout, cout) for _ in range(convs - 1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetDecoder(nn.Module):
    """Five blocks from stride 32 back to full resolution, then a 1x1 output convolution.

    Interpolating to each skip's exact size (rather than a fixed x2) lets the network take any input
    size, which matters for camera resolutions that are not multiples of 32.
    """

    def __init__(self, encoder_channels: list[int], out_channels: int, channels: int = 64,
                 convs: int = 2) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = encoder_channels
        self.blocks = nn.ModuleList([
            DecoderBlock(c5, c4, channels, convs),  # -> stride 16
            DecoderBlock(channels, c3, channels, convs),  # -> stride 8
            DecoderBlock(channels, c2, channels, convs),  # -> stride 4
            DecoderBlock(channels, c1, channels, convs),  # -> stride 2
            DecoderBlock(channels, 0, channels, convs),  # -> stride 1
        ])
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        c1, c2, c3, c4, c5 = feats
        x = c5
        for block, skip in zip(self.blocks[:4], (c4, c3, c2, c1), strict=True):
            x = block(x, skip, skip.shape[-2:])
        x = self.blocks[4](x, None, size)
        return self.head(x)  # [B, out_channels, H, W]
