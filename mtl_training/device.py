"""Device and precision choices shared by training and the node."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """auto -> cuda if present else cpu; an unavailable cuda request is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available")
    return dev


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision for training: bf16 on CUDA by default, none on CPU (it is slower there)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"Unknown train.amp '{amp}' (available: auto, off, bf16, fp16)")
