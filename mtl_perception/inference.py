"""Predictor: artifact in, numpy out. No ROS here, so tests, replay and benchmarks call it directly.

Preprocess resizes to the network size and normalises with the artifact's statistics; the network
runs under inference_mode (optionally fp16/bf16 autocast on CUDA); postprocess turns logits into
class ids and softmax confidence, and resizes everything back to the input resolution (or keeps the
network resolution, which is cheaper, when asked).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_training.device import resolve_device
from mtl_training.export import ArtifactError, load_artifact

__all__ = ["ALL_OUTPUTS", "ArtifactError", "NonFiniteOutput", "Prediction", "Predictor",
           "resolve_device", "retain_freed_memory"]


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


_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep the memory a frame frees for the next frame instead of handing it back to the kernel.

    A CPU forward pass frees and re-allocates the same activation buffers every frame. glibc
    returns big blocks to the kernel (munmap, and trimming of thread arenas), so the next frame
    faults every page back in, zero-filled: about 4000 minor page faults and 5-13 ms per 640x480
    frame with the default student, about 10 % of its forward pass. Whether a process pays this
    depends on its allocation history (glibc moves its mmap threshold as blocks are freed): the
    same model ran 10 % slower in the node than in a script. Fixed thresholds make every process
    fast. Process-wide, so the process owner calls it (the node's main, benchmarks), never the
    library. Returns False where the C library has no glibc mallopt (then nothing changes).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))


class Predictor:
    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, "
                             f"got '{precision}'")
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
        self._norm_buf: np.ndarray | None = None  # float32 [h, w, 3], reused every frame

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the network predicts ("seg", "depth"); single-task artifacts have one."""
        return tuple(getattr(self.model, "tasks", ("seg", "depth")))

    def resize_input(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [h, w, 3] at the network size (a view when already there)."""
        h, w = self.input_size
        if rgb.shape[:2] == (h, w):
            return rgb
        interp = cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR
        return cv2.resize(rgb, (w, h), interpolation=interp)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [h, w, 3] RGB at the network size -> normalised float [1, 3, h, w] on the device.

        Normalisation writes into one reused buffer (no per-frame allocation).
        """
        if self._bgr_input:
            rgb = rgb[..., ::-1]
        if self._norm_buf is None or self._norm_buf.shape != rgb.shape:
            self._norm_buf = np.empty(rgb.shape, np.float32)
        x = self._norm_buf
        np.subtract(rgb, self._mean, out=x, casting="unsafe")
        np.multiply(x, self._inv_std, out=x)  # [h, w, 3]
        t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)  # [1, 3, h, w] view, no copy
        # One small NCHW copy (3 x h x w floats): the channels-last view would switch every conv
        # to another kernel family and make the outputs non-contiguous.
        return t.to(self.device, non_blocking=True).contiguous()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = _PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            return self.model(x)

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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
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
