"""Task-transfer networks (TTNets, METHOD.md B): seg prediction -> depth and depth -> seg.

They exist only to shape the student's training signal: the cross-task consistency loss compares a
task's transferred prediction with the other task's (detached) direct prediction. They are trained
jointly with the student, saved in training checkpoints, and never exported: the deployed artifact
holds the student alone (export rebuilds it from `model` config, which knows nothing of these).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_perception.core.models.student import depth_activation


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + ReLU, as in the paper's TTNet (no batch norm)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class TransferNet(nn.Module):
    """Small U-Net: 3 contracting blocks (c, 2c, 4c; paper c = 64), 3 expanding blocks, 1x1 head.

    Each contracting block is 2 x (3x3 conv, ReLU) followed by 2x2 max-pooling; each expanding
    block is 2 x (3x3 conv, ReLU) followed by upsampling to the matching skip's size (so any input
    size works, not only multiples of 8) and concatenation with it.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64) -> None:
        super().__init__()
        c1, c2, c3 = channels, 2 * channels, 4 * channels
        self.down = nn.ModuleList([_double_conv(in_channels, c1), _double_conv(c1, c2),
                                   _double_conv(c2, c3)])
        self.up = nn.ModuleList([_double_conv(c3, c3), _double_conv(c3 + c3, c2),
                                 _double_conv(c2 + c2, c1)])
        self.head = nn.Conv2d(c1 + c1, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)  # [B, c_i, H / 2^i, W / 2^i]
            x = F.max_pool2d(x, 2, ceil_mode=True)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return self.head(x)  # [B, out_channels, H, W]


class TaskTransfer(nn.Module):
    """The pair of TTNets for the seg/depth student.

    Inputs are the student's direct predictions in a scale-free form: class probabilities (softmax
    of the logits) for seg, depth / max_depth for depth. Outputs match the student's heads: seg
    logits [B, C, H, W] and depth in metres [B, 1, H, W], bounded like the student's depth head.
    """

    def __init__(self, num_classes: int, max_depth: float = 10.0, channels: int = 64) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.seg_to_depth = TransferNet(num_classes, 1, channels)
        self.depth_to_seg = TransferNet(1, num_classes, channels)

    def forward(self, pred: dict[str, Tensor]) -> dict[str, Tensor]:
        """{"seg": logits, "depth": metres} -> transferred predictions keyed by TARGET task.

        out["depth"] = seg -> depth (compared with the direct depth), out["seg"] = depth -> seg.
        Gradients flow back into the direct predictions used as inputs: that is how one task's
        decoder learns from the other task's signal.
        """
        probs = torch.softmax(pred["seg"].float(), dim=1)  # [B, C, H, W]
        depth_in = pred["depth"].float() / self.max_depth  # [B, 1, H, W], 0..1
        return {
            "depth": depth_activation(self.seg_to_depth(probs), self.max_depth),
            "seg": self.depth_to_seg(depth_in),
        }
