"""The RGB-only multi-task student: a shared encoder, then one U-Net decoder per task (`unet`, the
papers' configuration) or one light refinement shared by the tasks with a small head each
(`refine`, real time: refine.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl_perception.core.contracts import TASKS
from mtl_perception.core.models.backbones import build_encoder
from mtl_perception.core.models.decoder import UNetDecoder
from mtl_perception.core.models.refine import RefineDecoder

DECODERS = ("unet", "refine")


def depth_activation(x: Tensor, max_depth: float) -> Tensor:
    """Bounded positive depth in metres: (0, max_depth). Sigmoid keeps early training stable."""
    return torch.sigmoid(x) * max_depth


class MultiTaskNet(nn.Module):
    """Shared encoder + decoders dict; forward returns {task: prediction}.

    seg: logits [B, C, H, W]; depth: metres [B, 1, H, W]. With one task it is the single-task
    baseline of the same architecture (the Delta_m reference).
    """

    def __init__(self, encoder: str = "resnet18", num_classes: int = 7,
                 tasks: tuple[str, ...] = ("seg", "depth"), decoder_channels: int = 64,
                 decoder_convs: int = 2, max_depth: float = 10.0, in_channels: int = 3,
                 decoder: str = "unet") -> None:
        super().__init__()
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f"Unknown tasks {sorted(unknown)} (available: seg, depth)")
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder '{decoder}' (available: {', '.join(DECODERS)})")
        self.tasks = tuple(tasks)
        self.max_depth = max_depth
        self.encoder = build_encoder(encoder, in_channels)
        out = {"seg": num_classes, "depth": 1}
        self.decoders: nn.ModuleDict | None = None
        self.decoder: RefineDecoder | None = None
        if decoder == "unet":
            self.decoders = nn.ModuleDict({
                t: UNetDecoder(self.encoder.channels, out[t], decoder_channels, decoder_convs)
                for t in self.tasks
            })
        else:  # decoder_convs: the chained residual pooling links per level
            self.decoder = RefineDecoder(self.encoder.channels, {t: out[t] for t in self.tasks},
                                         decoder_channels, decoder_convs)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer, where GradNorm measures per-task gradient norms: the encoder's
        last stage under per-task U-Nets, the shared stride-4 refinement under `refine`."""
        if self.decoder is not None:
            return self.decoder.shared_parameters()
        return self.encoder.last_stage_parameters()

    def forward(self, x: Tensor, full_size: bool = True) -> dict[str, Tensor]:
        """full_size False (refine decoder only): outputs at stride 4, for deployment."""
        size = (x.shape[-2], x.shape[-1])
        feats = self.encoder(x)
        if self.decoder is not None:
            out = self.decoder(feats, size if full_size else None)
        else:
            assert self.decoders is not None
            out = {t: self.decoders[t](feats, size) for t in self.tasks}
        if "depth" in out:
            out["depth"] = depth_activation(out["depth"], self.max_depth)
        return out
