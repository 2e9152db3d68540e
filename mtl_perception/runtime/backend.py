"""Inference backends: what runs the network, behind one small interface.

The Predictor does the same pre- and postprocessing whatever runs the network; a backend only
turns a normalised input into the network's outputs. Adding one (ONNX Runtime, TensorRT) means a
class here with `forward`, `device`, `describe` and an entry in BACKENDS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from mtl_perception.core.artifact import ArtifactMeta, load_artifact
from mtl_perception.core.device import resolve_device

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16,
                                             "bf16": torch.bfloat16}


class Backend(Protocol):
    """Runs one network: normalised input [1, 3, h, w] in, {task: tensor} out."""

    meta: ArtifactMeta
    device: torch.device
    tasks: tuple[str, ...]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def describe(self) -> str: ...


class TorchBackend:
    """PyTorch eager, CPU or CUDA; fp16/bf16 autocast on CUDA."""

    name = "torch"

    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got '{precision}'")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision} needs a CUDA device (device is {self.device})")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        artifact = load_artifact(model_path, self.device)
        self.path = artifact.path
        self.model = artifact.model
        self.meta = artifact.meta
        self.precision = precision
        self._dtype = PRECISIONS[precision]
        self.tasks: tuple[str, ...] = tuple(getattr(self.model, "tasks", ("seg", "depth")))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self._dtype or torch.float32,
                            enabled=self._dtype is not None):
            out = self.model(x.to(self.device, non_blocking=True))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out

    def describe(self) -> str:
        threads = torch.get_num_threads() if self.device.type == "cpu" else None
        return (f"backend torch on {self.device} ({self.precision}"
                + (f", {threads} threads" if threads else "") + ")")


BACKENDS = {"torch": TorchBackend}


def open_backend(model_path: str | Path, backend: str = "torch", device: str = "auto",
                 precision: str = "fp32", num_threads: int = 0) -> Backend:
    """The named backend for an artifact; ValueError names the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    return BACKENDS[backend](model_path, device, precision, num_threads)
