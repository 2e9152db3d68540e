"""Mixed precision for training: the autocast dtype of `train.amp`, and the loss scaler fp16 needs.

bf16 keeps fp32's exponent range, so its gradients need no scaling; fp16 underflows small
gradients to zero, so its loss is scaled up before backward and the gradients unscaled before
clipping and the step (torch.amp.GradScaler, which also skips steps whose gradients overflowed).
"""

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


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is enabled for fp16 only (disabled, its calls pass straight through:
    scale(loss) is loss, step(opt) is opt.step(), so the train step has one shape)."""
    enabled = dtype == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)
