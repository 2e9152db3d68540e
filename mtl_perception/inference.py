"""Predictor: artifact in, numpy out. No ROS here, so tests, replay and benchmarks call it directly.

Preprocess resizes to the network size and normalises with the artifact's statistics; the network
runs under inference_mode (optionally fp16/bf16 autocast on CUDA); postprocess turns logits into
class ids and softmax confidence, and resizes everything back to the input resolution (or keeps the
network resolution, which is cheaper, when asked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_training.device import resolve_device
from mtl_training.export import ArtifactError, load_artifact

__all__ = ["ArtifactError", "Prediction", "Predictor", "resolve_device"]


@dataclass
class Prediction:
    labels: np.ndarray  # uint8 [H, W] (uint16 above 255 classes)
    confidence: np.ndarray  # float32 [H, W] in [0, 1]
    depth: np.ndarray  # float32 [H, W] metres
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class Predictor:
    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got '{precision}'")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision} needs a CUDA device (device is {self.device})")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.artifact = load_artifact(model_path, self.device)
        self.model = self.artifact.model
        self.precision = precision
        self.meta = self.artifact.meta
        self.classes = self.artifact.classes
        self.palette = self.artifact.palette
        self.input_size = self.artifact.input_size  # (H, W)
        inp = self.meta["input"]
        self._mean = np.asarray(inp["mean"], np.float32) * 255.0
        self._inv_std = 1.0 / (np.asarray(inp["std"], np.float32) * 255.0)
        self._bgr_input = inp.get("channel_order", "rgb") == "bgr"
        self.max_depth = float(self.meta["depth"]["max"])

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] RGB -> float [1, 3, h, w] on the device."""
        h, w = self.input_size
        if rgb.shape[:2] != (h, w):
            interp = cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (w, h), interpolation=interp)
        if self._bgr_input:
            rgb = rgb[..., ::-1]
        x = (rgb.astype(np.float32) - self._mean) * self._inv_std  # [h, w, 3]
        t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)  # [1, 3, h, w] view, no copy
        return t.to(self.device, non_blocking=True).contiguous()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = _PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            return self.model(x)

    @torch.inference_mode()
    def postprocess(self, out: dict[str, torch.Tensor], size: tuple[int, int] | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> labels, confidence, depth at `size` (H, W) or at the network size if None."""
        prob = torch.softmax(out["seg"][0].float(), dim=0)  # [C, h, w]
        conf_t, labels_t = prob.max(dim=0)
        dtype = np.uint8 if len(self.classes) <= 256 else np.uint16
        labels = labels_t.cpu().numpy().astype(dtype)
        conf = conf_t.cpu().numpy()
        depth = out["depth"][0, 0].float().cpu().numpy()
        if size is not None and size != labels.shape:
            w, h = size[1], size[0]
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
        return labels, conf, depth

    def predict(self, rgb: np.ndarray, output_resolution: str = "input") -> Prediction:
        """One RGB frame -> Prediction, with per-stage timings for benchmarks and diagnostics."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}")
        t0 = time.perf_counter()
        x = self.preprocess(rgb)
        t1 = time.perf_counter()
        out = self.forward(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        size = rgb.shape[:2] if output_resolution == "input" else None
        labels, conf, depth = self.postprocess(out, size)
        t3 = time.perf_counter()
        return Prediction(labels, conf, depth,
                          {"preprocess": t1 - t0, "forward": t2 - t1, "postprocess": t3 - t2})

    def warmup(self, runs: int = 2) -> None:
        """First calls pay for allocator and kernel selection; do it before the first frame."""
        h, w = self.input_size
        dummy = np.zeros((h, w, 3), np.uint8)
        for _ in range(runs):
            self.predict(dummy, output_resolution="network")
