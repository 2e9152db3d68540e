"""The cost of one forward pass, counted the way the model table and the real-time budget quote it.

Convention: `torch.utils.flop_counter.FlopCounterMode`'s count, which counts a multiply-add as
2 FLOPs (convolutions and matrix products; element-wise ops, pooling and interpolation are not
counted), divided by 1e9 = GFLOP. Half of it is the multiply-add count (GMACs), the unit many
papers quote as "FLOPs".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, height: int, width: int, *inputs: torch.Tensor) -> int:
    """FLOPs (FlopCounterMode's count) of one eval-mode forward of a [1, 3, height, width] image.

    Extra inputs (a teacher's auxiliary modality) are passed after the image. The model's
    training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        image = torch.zeros(1, 3, height, width, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(image, *inputs)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def count_gflops(model: nn.Module, height: int, width: int, *inputs: torch.Tensor) -> float:
    """GFLOP of one forward at height x width: `count_flops` / 1e9 (GMACs are half of it)."""
    return count_flops(model, height, width, *inputs) / 1e9


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as batch-norm statistics not included)."""
    return sum(p.numel() for p in model.parameters())
