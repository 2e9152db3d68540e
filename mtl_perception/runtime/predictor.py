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

from mtl_perception.core.preprocess import PreprocessSpec
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
    network_labels: np.ndarray | None = None  # [h, w] class ids before the resize to [H, W]


class NonFiniteOutput(ValueError):
    """The network produced NaN/inf for this frame (corrupt input or weights): drop the frame."""


ALL_OUTPUTS = frozenset({"labels", "confidence", "depth"})


class Predictor:
    """One artifact behind one backend; `predict` is the whole frame path."""

    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0, backend: str = "auto") -> None:
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
        self._norm_lut, self._norm_src = _normalize_lut(self.spec)
        self._input_buf: torch.Tensor | None = None  # float32 [1, 3, h, w], reused every frame

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the network predicts ("seg", "depth"); single-task artifacts have one."""
        return self.backend.tasks

    def resize_input(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [h, w, 3] at the network size (a view when already there)."""
        return self.spec.resize(rgb)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [h, w, 3] RGB at the network size -> normalised float [1, 3, h, w] (CPU).

        A uint8 pixel has 256 values, so normalisation is a table lookup per channel, straight
        into the NCHW input (no float pass over the frame, no transpose copy). The table is the
        spec's own `normalize` applied to 0..255, so the values are bit-identical to training's
        (test_preprocess_parity). The returned tensor is reused by the next call.
        """
        h, w = rgb.shape[:2]
        if self._input_buf is None or self._input_buf.shape[2:] != (h, w):
            self._input_buf = torch.empty((1, 3, h, w), dtype=torch.float32)
        out = self._input_buf.numpy()  # [1, 3, h, w] view
        for c, src in enumerate(self._norm_src):
            np.take(self._norm_lut[c], rgb[:, :, src], out=out[0, c])
        return self._input_buf

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
        return self._postprocess(out, size, want, dst)[:3]

    def _postprocess(self, out: dict[str, torch.Tensor], size: tuple[int, int] | None,
                     want: frozenset[str] | set[str], dst: dict[str, np.ndarray] | None,
                     ) -> tuple[np.ndarray | None, ...]:
        """postprocess + the labels at the network size (before any resize)."""
        labels = conf = depth = None
        seg = out.get("seg")
        if seg is not None and seg.device.type == "cpu" and want & {"labels", "confidence"}:
            logits_np = seg[0].float().numpy()  # [C, h, w], a view
            top_np, ids = _argmax_channels(logits_np, np.uint8 if len(self.classes) <= 255
                                           else np.uint16)
            if not bool(np.isfinite(top_np).all()):
                raise NonFiniteOutput("segmentation logits contain NaN/inf")
            labels = ids if "labels" in want else None
            if "confidence" in want:
                conf = _top_probability(logits_np, top_np)
        elif seg is not None and want & {"labels", "confidence"}:  # on the GPU: stay there
            logits = seg[0].float()  # [C, h, w]
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
        return results[0], results[1], results[2], labels

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
        labels, conf, depth, net_labels = self._postprocess(out, size, want, dst)
        t3 = time.perf_counter()
        return Prediction(labels, conf, depth,
                          {"preprocess": t1 - t0, "forward": t2 - t1, "postprocess": t3 - t2},
                          network_rgb=small, network_labels=net_labels)

    def warmup(self, runs: int = 2) -> None:
        """First calls pay for allocator and kernel selection; do it before the first frame."""
        h, w = self.input_size
        dummy = np.zeros((h, w, 3), np.uint8)
        for _ in range(runs):
            self.predict(dummy, output_resolution="network")


def _argmax_channels(logits: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """float32 [C, h, w] -> (max [h, w], first index of the max [h, w] as `dtype`).

    One vectorised pass per class over network-size maps, single-threaded on purpose: torch's
    reductions fan these small tensors out to its thread pool, and measured on the 2-core machine
    (demo student, 7 x 96 x 128) that cost 7.8 ms a frame with 2 torch threads against 0.5 ms
    with 1; the model's own threads are the backend's business. NaN propagates into the max.
    """
    top = logits[0].copy()
    ids = np.zeros(top.shape, dtype)
    mask = np.empty(top.shape, bool)
    for c in range(1, logits.shape[0]):
        np.greater(logits[c], top, out=mask)
        np.maximum(top, logits[c], out=top)
        ids[mask] = c
    return top, ids


def _top_probability(logits: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Top softmax probability 1 / sum_c exp(logit_c - max), without the softmax tensor."""
    acc = np.zeros(top.shape, np.float32)
    tmp = np.empty(top.shape, np.float32)
    for c in range(logits.shape[0]):
        np.subtract(logits[c], top, out=tmp)
        np.exp(tmp, out=tmp)
        acc += tmp
    return np.reciprocal(acc, out=acc)


def _normalize_lut(spec: PreprocessSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """float32 [3, 256] table (network channel, uint8 value) -> normalised value, and the RGB
    channel each network channel reads (reversed for bgr networks)."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # [1, 256, 3]
    lut = np.ascontiguousarray(spec.normalize(ramp)[0].T)  # [3, 256]: same arithmetic as training
    src = (2, 1, 0) if spec.channel_order == "bgr" else (0, 1, 2)
    return lut, src
