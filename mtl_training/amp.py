"""Mixed precision for training: which autocast dtype a device and a `train.amp` value mean."""

from __future__ import annotations

import torch


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision for training: bf16 on CUDA by default, none on CPU (it is slower there)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"Unknown train.amp '{amp}' (available: auto, off, bf16, fp16)")
