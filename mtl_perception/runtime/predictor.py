"""Predictor: artifact in, numpy out. No ROS here, so tests, replay and benchmarks call it directly.

Preprocess resizes to the network size and normalises with the artifact's PreprocessSpec (the same
functions training uses); a backend (runtime.backend) runs the network; postprocess turns logits
into class ids and softmax confidence, and resizes everything back to the input resolution (or
keeps the network resolution, which is cheaper, when asked).

A network may answer at a stride of its input (an export that leaves out the decoder's final
bilinear upsampling: [C, h/s, w/s] logits). Then the class ids are computed where they are cheap:
argmax at the stride, and the exact argmax of the bilinearly upsampled logits only in the cells
whose corners disagree (`upsample_labels`); depth and confidence are resized bilinearly. At
640x480 with 40 classes that is ~1 ms against ~15 ms for the argmax over full-size logits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mtl_perception.core.preprocess import PreprocessSpec
from mtl_perception.runtime.backend import Backend, open_backend

__all__ = ["ALL_OUTPUTS", "NonFiniteOutput", "Prediction", "Predictor", "upsample_labels"]


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
        self._planes: list[np.ndarray] = []  # uint8 [h, w] per RGB channel, reused

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
            self._planes = [np.empty((h, w), np.uint8) for _ in range(3)]
        out = self._input_buf.numpy()  # [1, 3, h, w] view
        # cv2's split + LUT: 0.15 ms at 640x480 against 0.8 ms for np.take on strided channels
        cv2.split(np.ascontiguousarray(rgb), self._planes)
        for c, src in enumerate(self._norm_src):
            cv2.LUT(self._planes[src], self._norm_lut[c], dst=out[0, c])
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
        stride = self._stride(out)
        net_h, net_w = self.input_size
        if seg is not None and seg.device.type == "cpu" and want & {"labels", "confidence"}:
            logits_np = seg[0].float().numpy()  # [C, h, w], a view
            top_np, ids = _argmax_channels(logits_np, np.uint8 if len(self.classes) <= 255
                                           else np.uint16)
            if not bool(np.isfinite(top_np).all()):
                raise NonFiniteOutput("segmentation logits contain NaN/inf")
            if "labels" in want:
                labels = ids if stride == 1 else upsample_labels(logits_np, ids, stride)
            if "confidence" in want:
                conf = _top_probability(logits_np, top_np)
                if stride > 1 and size is None:  # else the resize below goes to `size`
                    conf = cv2.resize(conf, (net_w, net_h), interpolation=cv2.INTER_LINEAR)
        elif seg is not None and want & {"labels", "confidence"}:  # on the GPU: stay there
            logits = seg[0].float()  # [C, h, w]
            if stride > 1:  # upsampling is cheap there: the full-size logits, as trained
                logits = F.interpolate(logits[None], size=(net_h, net_w), mode="bilinear",
                                       align_corners=False)[0]
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
            if stride > 1 and size is None:  # else the resize below goes straight to `size`
                depth = cv2.resize(depth, (net_w, net_h), interpolation=cv2.INTER_LINEAR)
        dst = dst or {}
        results = []
        for name, arr, interp in (("labels", labels, cv2.INTER_NEAREST),
                                  ("confidence", conf, cv2.INTER_LINEAR),
                                  ("depth", depth, cv2.INTER_LINEAR)):
            target = dst.get(name)
            if arr is None:
                results.append(None)
            elif size is not None and arr.shape[:2] != tuple(size):
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

    def _stride(self, out: dict[str, torch.Tensor]) -> int:
        """How many input pixels one output pixel spans: s when the outputs are the input size
        divided by an integer s > 1, else 1 (outputs used at their own size, as always)."""
        t = out.get("seg", out.get("depth"))
        if t is None:
            return 1
        h, w = self.input_size
        oh, ow = int(t.shape[-2]), int(t.shape[-1])
        if oh <= 0 or ow <= 0 or h % oh or w % ow or h // oh != w // ow:
            return 1
        return h // oh

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


def upsample_labels(logits: np.ndarray, ids: np.ndarray, stride: int) -> np.ndarray:
    """[C, h, w] logits and their argmax ids -> ids [h * stride, w * stride]: the argmax of the
    logits upsampled bilinearly (half-pixel centres, as torch's align_corners=False and ONNX
    Resize), without upsampling them.

    Every output pixel lies in a cell of 2 x 2 input samples (edge samples repeated) and its
    logits are a convex blend of the cell's four corner vectors, so when the four corners share
    their argmax the blend has it too: those cells are a nearest upsample of the corner ids. Only
    the cells whose corners disagree (object boundaries, a few percent of a scene) get the blend
    computed, stride x stride pixels each. Equal to the full computation except where two classes
    tie within float rounding.
    """
    s = stride
    c, h, w = logits.shape
    pad = cv2.copyMakeBorder(ids, 1, 1, 1, 1, cv2.BORDER_REPLICATE)  # [h + 2, w + 2]
    corner = pad[:-1, :-1]  # [h + 1, w + 1]: each cell's top-left sample
    mixed = (corner != pad[:-1, 1:]) | (corner != pad[1:, :-1]) | (corner != pad[1:, 1:])
    canvas = cv2.resize(corner, ((w + 1) * s, (h + 1) * s), interpolation=cv2.INTER_NEAREST)
    offset = (s + 1) // 2  # output pixel o lies in cell (o + offset) // s of the padded grid
    ys, xs = np.nonzero(mixed)
    if ys.size > mixed.size // 3:  # boundaries everywhere (noise): the plain way is cheaper
        full = F.interpolate(torch.from_numpy(logits)[None], scale_factor=s, mode="bilinear",
                             align_corners=False)[0]
        return _argmax_channels(full.numpy(), ids.dtype.type)[1]
    if ys.size:
        flat = logits.reshape(c, h * w)
        y0, y1 = np.clip(ys - 1, 0, h - 1) * w, np.minimum(ys, h - 1) * w  # padded -> rows
        x0, x1 = np.clip(xs - 1, 0, w - 1), np.minimum(xs, w - 1)
        c00, c01 = np.take(flat, y0 + x0, axis=1), np.take(flat, y0 + x1, axis=1)  # [C, K]
        c10, c11 = np.take(flat, y1 + x0, axis=1), np.take(flat, y1 + x1, axis=1)
        # Only classes that can win in a cell are blended there: the winner's blend is at
        # least the best corner-minimum of any class, and a class's blend is at most its
        # corner-maximum (a convex blend), so a class whose corner-maximum is below that bound
        # never wins (a small margin covers float rounding). Usually 2-3 classes of C remain.
        lo = np.minimum(np.minimum(c00, c01), np.minimum(c10, c11))
        hi = np.maximum(np.maximum(c00, c01), np.maximum(c10, c11))
        bound = lo.max(axis=0)  # [K]
        keep = hi >= bound - 1e-4 * (1.0 + np.abs(bound))  # [C, K]
        cell, cls = np.nonzero(np.ascontiguousarray(keep.T))  # pairs, grouped by cell
        v00, v01, v10, v11 = (a[cls, cell][:, None] for a in (c00, c01, c10, c11))  # [M, 1]
        f = (np.arange(s, dtype=np.float32) - offset + 0.5) / s + 0.5  # weight of the far side
        g = np.float32(1.0) - f
        top = v00 * g + v01 * f  # [M, s]: along x first, then along y (torch's order)
        bottom = v10 * g + v11 * f
        blend = top[:, None, :] * g[:, None] + bottom[:, None, :] * f[:, None]  # [M, s, s]
        new_cell = np.r_[True, cell[1:] != cell[:-1]]
        seg = np.cumsum(new_cell) - 1  # [M]: index of the pair's cell among the K
        rank = np.arange(cell.size) - np.flatnonzero(new_cell)[seg]  # its place in the cell
        best_value = np.full((ys.size, s, s), -np.inf, np.float32)
        best = np.zeros((ys.size, s, s), ids.dtype)
        for r in range(int(rank.max()) + 1):  # a few rounds: classes in a cell, ascending
            sel = np.flatnonzero(rank == r)
            k, v = seg[sel], blend[sel]
            better = v > best_value[k]  # strictly: the first class keeps a tie, as argmax
            best_value[k] = np.where(better, v, best_value[k])
            best[k] = np.where(better, cls[sel, None, None].astype(ids.dtype), best[k])
        cells = canvas.reshape(h + 1, s, w + 1, s)
        cells[ys, :, xs, :] = best  # the first class at the top, per pixel
    return canvas[offset:offset + h * s, offset:offset + w * s]


def _argmax_channels(logits: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """float32 [C, h, w] -> (max [h, w], first index of the max [h, w] as `dtype`).

    One vectorised pass per class over network-size maps, single-threaded on purpose: torch's
    reductions fan these small tensors out to its thread pool, and measured on the 2-core machine
    (demo student, 7 x 96 x 128) that cost 7.8 ms a frame with 2 torch threads against 0.5 ms
    with 1; the model's own threads are the backend's business. NaN propagates into the max.
    The class ids are written through cv2's masked add (a branch-free SIMD pass): numpy's
    boolean-mask assignment took 1.35 ms per class at 640x480 against 0.03 ms for the compare
    and the max, i.e. 19 ms of a 40-class frame.
    """
    top = logits[0].copy()
    ids = np.zeros(top.shape, dtype)
    zeros = np.zeros(top.shape, dtype)
    mask = np.empty(top.shape, bool)
    mask_u8 = mask.view(np.uint8)  # 0/1: cv2 writes where non-zero
    for c in range(1, logits.shape[0]):
        np.greater(logits[c], top, out=mask)
        np.maximum(top, logits[c], out=top)  # numpy's maximum keeps NaN from either side
        cv2.add(zeros, c, dst=ids, mask=mask_u8)  # ids = c where mask
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
    """float32 [3, 1, 256] table (network channel, uint8 value) -> normalised value, and the RGB
    channel each network channel reads (reversed for bgr networks)."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # [1, 256, 3]
    lut = np.ascontiguousarray(spec.normalize(ramp)[0].T)  # [3, 256]: same arithmetic as training
    lut = lut.reshape(3, 1, 256)  # each row a 1 x 256 table, as cv2.LUT takes it
    src = (2, 1, 0) if spec.channel_order == "bgr" else (0, 1, 2)
    return lut, src
