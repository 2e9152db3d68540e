"""Which torch device to run on: one rule for training, the Predictor and the node."""

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

