"""Predictor: artifact in, numpy out. No ROS here, so tests, replay and benchmarks call it directly.

Preprocess resizes to the network size and normalises with the artifact's PreprocessSpec (the same
functions training uses); a backend (runtime.backend) runs the network; postprocess turns logits
into class ids and softmax confidence, and resizes everything back to the input resolution (or
keeps the network resolution, which is cheaper, when asked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_perception.runtime.backend import Backend, open_backend

__all__ = ["ALL_OUTPUTS", "NonFiniteOutput", "Prediction", "Predictor"]


@dataclass
class Prediction:
    """Network outputs as numpy; a field is None when it was not asked for or the model lacks it."""

    labels: np.ndarray | None  # uint8 [H, W]; uint16 above 255 classes (255 = ignore)
    confidence: np.ndarray | None  # float32 [H, W] in [0, 1]
    depth: np.ndarray | None  # float32 [H, W] metres
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    network_rgb: np.ndarray | None = None  # uint8 [h, w, 3] the resized input, for colouring points


class NonFiniteOutput(ValueError):
    """The network produced NaN/inf for this frame (corrupt input or weights): drop the frame."""


ALL_OUTPUTS = frozenset({"labels", "confidence", "depth"})


class Predictor:
    """One artifact behind one backend; `predict` is the whole frame path."""

    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0, backend: str = "torch") -> None:
        self.backend: Backend = open_backend(model_path, backend, device, precision,
                                             num_threads)
        self.device = self.backend.device
        self.precision = precision
        self.meta = self.backend.meta
        self.spec = self.meta.preprocess
        self.classes = list(self.meta.classes)
        self.palette = [list(c) for c in self.meta.palette]
        self.input_size = self.spec.size  # (H, W)
        self.max_depth = self.meta.max_depth
        self._norm_buf: np.ndarray | None = None  # float32 [h, w, 3], reused every frame

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the network predicts ("seg", "depth"); single-task artifacts have one."""
        return self.backend.tasks

    def resize_input(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [h, w, 3] at the network size (a view when already there)."""
        return self.spec.resize(rgb)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [h, w, 3] RGB at the network size -> normalised float [1, 3, h, w] (CPU).

        Normalisation writes into one reused buffer (no per-frame allocation).
        """
        if self._norm_buf is None or self._norm_buf.shape != rgb.shape:
            self._norm_buf = np.empty(rgb.shape, np.float32)
        x = self.spec.normalize(rgb, out=self._norm_buf)  # [h, w, 3]
        t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)  # [1, 3, h, w] view, no copy
        # One small NCHW copy (3 x h x w floats): the channels-last view would switch every conv
        # to another kernel family and make the outputs non-contiguous.
        return t.contiguous()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised input -> {task: tensor} through the backend."""
        return self.backend.forward(x)

    @torch.inference_mode()
    def postprocess(self, out: dict[str, torch.Tensor], size: tuple[int, int] | None,
                    want: frozenset[str] | set[str] = ALL_OUTPUTS,
                    dst: dict[str, np.ndarray] | None = None,
                    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """-> labels, confidence, depth at `size` (H, W), or at the network size if None.

        `dst` may hold preallocated arrays of the final shape ("labels", "confidence", "depth"),
        e.g. views of outgoing message buffers: results are written there, with no extra copy.

        Only the outputs in `want` are computed (nobody subscribed to the rest). Confidence is the
        top softmax probability, 1 / sum(exp(logit - max)), without materialising the softmax.
        Non-finite network output raises NonFiniteOutput so the caller drops the frame.
        """
        labels = conf = depth = None
        if "seg" in out and want & {"labels", "confidence"}:
            logits = out["seg"][0].float()  # [C, h, w]
            top, labels_t = logits.max(dim=0)  # [h, w]
            if not bool(torch.isfinite(top).all()):
                raise NonFiniteOutput("segmentation logits contain NaN/inf")
            if "labels" in want:
                labels = labels_t.to(torch.uint8 if len(self.classes) <= 255 else torch.int32)
                labels = labels.cpu().numpy()
                if labels.dtype != np.uint8:
                    labels = labels.astype(np.uint16)
            if "confidence" in want:
                conf = (1.0 / torch.exp(logits - top).sum(dim=0)).cpu().numpy()
        if "depth" in out and "depth" in want:
            depth = out["depth"][0, 0].float().cpu().numpy()  # [h, w] metres
            if not np.isfinite(depth).all():
                raise NonFiniteOutput("depth contains NaN/inf")
        resize = size is not None and size != self.input_size
        dst = dst or {}
        results = []
        for name, arr, interp in (("labels", labels, cv2.INTER_NEAREST),
                                  ("confidence", conf, cv2.INTER_LINEAR),
                                  ("depth", depth, cv2.INTER_LINEAR)):
            target = dst.get(name)
            if arr is None:
                results.append(None)
            elif resize:
                dsize = (size[1], size[0])
                if target is not None:
                    results.append(cv2.resize(arr, dsize, dst=target, interpolation=interp))
                else:
                    results.append(cv2.resize(arr, dsize, interpolation=interp))
            elif target is not None:
                np.copyto(target, arr)
                results.append(target)
            else:
                results.append(arr)
        return results[0], results[1], results[2]

    def predict(self, rgb: np.ndarray, output_resolution: str = "input",
                want: frozenset[str] | set[str] = ALL_OUTPUTS,
                dst: dict[str, np.ndarray] | None = None) -> Prediction:
        """One RGB frame -> Prediction, with per-stage timings for benchmarks and diagnostics.

        `want` limits the outputs computed; `dst` receives them in place (see postprocess).
        Raises ValueError for a wrong array and NonFiniteOutput when the network yields NaN/inf.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}")
        if output_resolution not in ("input", "network"):
            raise ValueError(f"output_resolution must be input or network, got "
                             f"'{output_resolution}'")
        t0 = time.perf_counter()
        small = self.resize_input(rgb)
        x = self.preprocess(small)
        t1 = time.perf_counter()
        out = self.forward(x)
        t2 = time.perf_counter()
        size = rgb.shape[:2] if output_resolution == "input" else None
        labels, conf, depth = self.postprocess(out, size, want, dst)
        t3 = time.perf_counter()
        return Prediction(labels, conf, depth,
                          {"preprocess": t1 - t0, "forward": t2 - t1, "postprocess": t3 - t2},
                          network_rgb=small)

    def warmup(self, runs: int = 2) -> None:
        """First calls pay for allocator and kernel selection; do it before the first frame."""
        h, w = self.input_size
        dummy = np.zeros((h, w, 3), np.uint8)
        for _ in range(runs):
            self.predict(dummy, output_resolution="network")
