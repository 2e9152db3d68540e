"""The multi-modal teacher (METHOD.md A): RGB plus a label modality in, the other task out.

Two encoders, one per modality. After every encoder stage a small fusion module adds what the
auxiliary branch sees to the RGB features, and the fused features both feed the next RGB stage
and serve as the decoder's skip connections, so the auxiliary modality informs every scale of the
pyramid (the paper fuses HRNet features at 1/4..1/32; here encoder stages at 1/2..1/32, any
encoder of the table: ResNet or EfficientNet-Lite, through their common `stages()`). The decoder is
a U-Net (`unet`) or the light shared refinement (`refine`) with one head for the target.

Direction `aux_input="depth"` (default, MMMT-D): RGB + measured depth -> segmentation logits.
Direction `aux_input="seg"` (reverse, MMMT-S): RGB + one-hot segmentation -> depth in metres.
The teacher is used only in training and pseudo-labelling; the robot runs the RGB-only student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_perception.core.contracts import IGNORE_INDEX
from mtl_perception.core.models.backbones import Encoder, build_encoder
from mtl_perception.core.models.decoder import UNetDecoder
from mtl_perception.core.models.refine import RefineDecoder
from mtl_perception.core.models.student import DECODERS, depth_activation

AUX_TARGET: dict[str, str] = {"depth": "seg", "seg": "depth"}  # auxiliary input -> target task


class FusionBlock(nn.Module):
    """rgb + ReLU(BN(1x1 conv([rgb, aux]))): a residual that starts near zero-impact.

    The residual form keeps the RGB path intact, so early in training (or where the auxiliary
    input is uninformative, e.g. a depth hole) the teacher degrades to an RGB network rather than
    to noise.
    """

    def __init__(self, rgb_channels: int, aux_channels: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv2d(rgb_channels + aux_channels, rgb_channels, 1, bias=False),
            nn.BatchNorm2d(rgb_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, rgb: Tensor, aux: Tensor) -> Tensor:
        # rgb [B, Cr, h, w], aux [B, Ca, h, w] -> [B, Cr, h, w]
        return rgb + self.mix(torch.cat([rgb, aux], dim=1))


# what a training frame must carry for a teacher to learn from it: its input and its target
REQUIRED_LABELS: tuple[str, ...] = ("seg", "depth")


class MultiModalTeacher(nn.Module):
    """forward(image, aux) -> {target: prediction}; `aux_input` tells the trainer what to pass.

    aux "depth": [B, 1, H, W] metres (0 = invalid) -> {"seg": logits [B, C, H, W]}.
    aux "seg": [B, H, W] class ids (255 = ignore) -> {"depth": metres [B, 1, H, W]}.
    """

    def __init__(self, encoder: str = "resnet18", num_classes: int = 7, aux_input: str = "depth",
                 decoder_channels: int = 64, decoder_convs: int = 2,
                 max_depth: float = 10.0, decoder: str = "unet") -> None:
        super().__init__()
        if aux_input not in AUX_TARGET:
            raise ValueError(f"Unknown teacher aux_input '{aux_input}' "
                             f"(available: {', '.join(AUX_TARGET)})")
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder '{decoder}' (available: {', '.join(DECODERS)})")
        self.aux_input = aux_input
        self.target = AUX_TARGET[aux_input]
        self.tasks = (self.target,)
        # frames it can learn from must carry its input and its target
        self.required_labels: tuple[str, ...] = REQUIRED_LABELS
        self.num_classes = num_classes
        self.max_depth = max_depth
        # depth in: normalised depth + validity mask (a hole is "unknown", not "at 0 m")
        aux_channels = 2 if aux_input == "depth" else num_classes
        self.encoder: Encoder = build_encoder(encoder, 3)
        self.aux_encoder: Encoder = build_encoder(encoder, aux_channels)
        self.fusions = nn.ModuleList(
            FusionBlock(c, c) for c in self.encoder.channels  # same trunk: equal widths
        )
        out_channels = num_classes if self.target == "seg" else 1
        self.decoder: UNetDecoder | RefineDecoder = (
            UNetDecoder(self.encoder.channels, out_channels, decoder_channels, decoder_convs)
            if decoder == "unet" else
            RefineDecoder(self.encoder.channels, {self.target: out_channels}, decoder_channels,
                          decoder_convs))

    def encode_aux(self, aux: Tensor) -> Tensor:
        """The label modality as network input channels."""
        if self.aux_input == "depth":
            d = aux.float()  # [B, 1, H, W]
            return torch.cat([(d / self.max_depth).clamp(0, 1), (d > 0).float()], dim=1)
        seg = aux.long()  # [B, H, W]
        valid = seg != IGNORE_INDEX
        onehot = F.one_hot(torch.where(valid, seg, 0).clamp(0, self.num_classes - 1),
                           self.num_classes)  # [B, H, W, C]
        return (onehot * valid.unsqueeze(-1)).permute(0, 3, 1, 2).float()  # [B, C, H, W]

    def fused_features(self, image: Tensor, aux: Tensor) -> list[Tensor]:
        """The fused pyramid at strides 2, 4, 8, 16, 32."""
        a = self.aux_encoder(self.encode_aux(aux).to(image.dtype))  # 5 x [B, C_i, h_i, w_i]
        x, feats = image, []
        for fusion, stage, aux_feat in zip(self.fusions, self.encoder.stages(), a, strict=True):
            x = fusion(stage(x), aux_feat)  # [B, C_i, H / 2^(i+1), W / 2^(i+1)]
            feats.append(x)
        return feats

    def forward(self, image: Tensor, aux: Tensor) -> dict[str, Tensor]:
        size = (image.shape[-2], image.shape[-1])
        decoded = self.decoder(self.fused_features(image, aux), size)
        out = decoded[self.target] if isinstance(decoded, dict) else decoded
        if self.target == "depth":
            out = depth_activation(out, self.max_depth)
        return {self.target: out}

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.encoder.last_stage_parameters()
