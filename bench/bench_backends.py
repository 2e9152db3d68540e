"""Forward pass per backend (PyTorch eager, onnxruntime CPU) against the machine's own limit.

The network is the default student (the demo architecture, random weights: timing does not
depend on weights), exported once per input size through the real export path
(`mtl_training.export.export_onnx`, fixed size, checked against PyTorch). For each network input
(128x96, 320x240, 640x480) and each thread count (1, 2), rounds alternate one PyTorch forward,
one onnxruntime forward and one float32 GEMM (1024^3, through torch.mm and through onnxruntime's
MatMul, the faster of the two counting), so background load on a shared machine hits all alike.
Reported per cell: medians, the ratio onnxruntime / PyTorch, the model's FLOPs
(torch.utils.flop_counter: 2 per multiply-add of convolutions and matmuls) and the "limit"
FLOPs / GEMM rate, i.e. how long the forward pass would take if every FLOP ran at this machine's
measured GEMM speed; forward / limit is how far a backend is from it.

Environment: BENCH_BACKEND_ROUNDS scales the rounds (default 1.0), BENCH_BACKEND_SIZES limits the
sizes ("128x96,320x240").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = ((96, 128), (240, 320), (480, 640))  # (height, width)
THREADS = (1, 2)
BASE_ROUNDS = {(96, 128): 15, (240, 320): 5, (480, 640): 3}
GEMM_N = 1024
TARGET_RATIO = 0.6  # onnxruntime / PyTorch eager (issue 12)
TARGET_LIMIT = 1.3  # onnxruntime / (FLOPs / GEMM rate)


def _sizes() -> tuple[tuple[int, int], ...]:
    text = os.environ.get("BENCH_BACKEND_SIZES")
    if not text:
        return SIZES
    out = []
    for item in text.split(","):
        w, h = (int(v) for v in item.lower().split("x"))
        out.append((h, w))
    return tuple(out)


def _rounds(size: tuple[int, int]) -> int:
    scale = float(os.environ.get("BENCH_BACKEND_ROUNDS", "1.0"))
    return max(2, round(BASE_ROUNDS.get(size, 3) * scale))


def model_flops(model: Any, height: int, width: int) -> float:
    """FLOPs of one forward pass at this input size (2 per multiply-add)."""
    import torch  # lazy: benchmark-only imports stay out of `python -m bench --help`
    from torch.utils.flop_counter import FlopCounterMode  # lazy: as above

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    return float(counter.get_total_flops())


def _gemm_seconds(a: Any, b: Any, out: Any) -> float:
    import torch  # lazy: as above

    t0 = time.perf_counter()
    torch.mm(a, b, out=out)
    return time.perf_counter() - t0


def _ort_gemm(threads: int) -> Any:
    """A session that runs one float32 MatMul (onnxruntime's own GEMM) on `threads` threads.

    The limit is this machine's GEMM rate, not one library's: on the dev machine torch.mm and
    onnxruntime's MatMul differ by up to 10 % from run to run, in either direction.
    """
    import onnxruntime as ort  # lazy: as above
    from onnx import TensorProto, helper  # lazy: as above

    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [GEMM_N, GEMM_N])
            for n in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No spinning, as in OnnxRuntimeBackend: a spinning pool would take the next forward's core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _ort_gemm_seconds(session: Any, feeds: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - t0


def run(results_dir: Path) -> dict[str, Any]:
    import torch  # lazy: as above

    from bench.bench_node_latency import default_student
    from mtl_perception.core.artifact import load_artifact
    from mtl_perception.runtime.backend import OnnxRuntimeBackend, TorchBackend
    from mtl_perception.runtime.memory import retain_freed_memory
    from mtl_training.export import export_onnx

    retain_freed_memory()  # as perception_node does: no page faults per forward pass
    work = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    rows, cells, checks = [], [], {}
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(GEMM_N, GEMM_N, generator=gen)
    b = torch.randn(GEMM_N, GEMM_N, generator=gen)
    c = torch.empty(GEMM_N, GEMM_N)
    feeds = {"a": a.numpy(), "b": b.numpy()}
    gemm_flops = 2.0 * GEMM_N ** 3
    try:
        for h, w in _sizes():
            art = default_student(work / f"student_{w}x{h}.safetensors", (h, w))
            onnx_path = work / f"student_{w}x{h}.onnx"
            t0 = time.perf_counter()
            check = export_onnx(art, onnx_path)
            checks[f"{w}x{h}"] = {"max_abs_diff": check.max_abs_diff,
                                  "export_s": time.perf_counter() - t0}
            flops = model_flops(load_artifact(art).model, h, w)
            x = torch.randn(1, 3, h, w, generator=gen)
            for threads in THREADS:
                torch_b = TorchBackend(art, "cpu", "fp32", threads)
                ort_b = OnnxRuntimeBackend(onnx_path, "cpu", "fp32", threads)
                gemm = _ort_gemm(threads)
                for _ in range(2):  # warm-up: allocator, kernel selection, first-run costs
                    torch_b.forward(x)
                    ort_b.forward(x)
                    _gemm_seconds(a, b, c)
                    _ort_gemm_seconds(gemm, feeds)
                t_torch, t_ort, t_gemm, t_gemm_ort = [], [], [], []
                for _ in range(_rounds((h, w))):
                    torch.set_num_threads(threads)
                    t = time.perf_counter()
                    torch_b.forward(x)
                    t_torch.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    ort_b.forward(x)
                    t_ort.append(time.perf_counter() - t)
                    t_gemm.append(min(_gemm_seconds(a, b, c) for _ in range(3)))
                    t_gemm_ort.append(min(_ort_gemm_seconds(gemm, feeds) for _ in range(3)))
                torch_ms = 1000 * float(np.median(t_torch))
                ort_ms = 1000 * float(np.median(t_ort))
                rates = {"torch": gemm_flops / float(np.median(t_gemm)),
                         "onnxruntime": gemm_flops / float(np.median(t_gemm_ort))}
                rate = max(rates.values())  # FLOP/s: the machine's, whichever library reaches it
                limit_ms = 1000 * flops / rate
                cell = {"input": f"{w}x{h}", "threads": threads, "gflop": flops / 1e9,
                        "torch_ms": torch_ms, "onnxruntime_ms": ort_ms,
                        "ratio_ort_torch": ort_ms / torch_ms,
                        "gemm_gflops": rate / 1e9, "limit_ms": limit_ms,
                        "ratio_ort_limit": ort_ms / limit_ms,
                        "ratio_torch_limit": torch_ms / limit_ms, "rounds": len(t_torch),
                        "gemm_gflops_by_library": {k: v / 1e9 for k, v in rates.items()},
                        "raw_ms": {"torch": [1000 * v for v in t_torch],
                                   "onnxruntime": [1000 * v for v in t_ort],
                                   "gemm": [1000 * v for v in t_gemm],
                                   "gemm_onnxruntime": [1000 * v for v in t_gemm_ort]},
                        "providers": ort_b.settings()["providers"]}
                cells.append(cell)
                rows.append({k: cell[k] for k in (
                    "input", "threads", "gflop", "torch_ms", "onnxruntime_ms",
                    "ratio_ort_torch", "gemm_gflops", "limit_ms", "ratio_ort_limit",
                    "ratio_torch_limit")})
                del torch_b, ort_b, gemm
    finally:
        shutil.rmtree(work, ignore_errors=True)

    worst_ratio = max(c["ratio_ort_torch"] for c in cells)
    worst_limit = max(c["ratio_ort_limit"] for c in cells)
    worst = max(cells, key=lambda c: c["ratio_ort_torch"])
    # What the ratio target asks of onnxruntime in the worst cell, in units of the GEMM limit:
    # above 1 it asks for more FLOP/s than this machine's GEMM reaches.
    needed = TARGET_RATIO * worst["torch_ms"] / worst["limit_ms"]
    needed_gflops = worst["gflop"] / (TARGET_RATIO * worst["torch_ms"] / 1000)
    return {
        "title": ("Default student (demo architecture, random weights) forward pass, CPU, "
                  "float32; medians in ms; PyTorch eager vs onnxruntime (CPUExecutionProvider) "
                  "vs the FLOPs / measured GEMM limit."),
        "table": rows,
        "notes": [
            f"targets: onnxruntime / PyTorch <= {TARGET_RATIO} at every size (worst here "
            f"{worst_ratio:.2f}: {'met' if worst_ratio <= TARGET_RATIO else 'NOT met'}); "
            f"onnxruntime / limit <= {TARGET_LIMIT} (worst {worst_limit:.2f}: "
            f"{'met' if worst_limit <= TARGET_LIMIT else 'NOT met'}).",
            f"worst cell {worst['input']}, {worst['threads']} thread(s): PyTorch runs at "
            f"{worst['ratio_torch_limit']:.2f}x the limit and onnxruntime at "
            f"{worst['ratio_ort_limit']:.2f}x; {TARGET_RATIO}x PyTorch there would be "
            f"{needed:.2f}x the limit, i.e. {needed_gflops:.0f} GFLOP/s against a measured "
            f"GEMM rate of {worst['gemm_gflops']:.0f}.",
            "limit_ms = model FLOPs / GEMM rate: the forward pass if every FLOP ran at the "
            f"speed of a {GEMM_N}^3 float32 GEMM on the same threads (the faster of torch.mm "
            "and onnxruntime's MatMul), measured in the same rounds (best of 3 per round, "
            "median over rounds).",
            "each round runs PyTorch, onnxruntime and the GEMM back to back, so load drift on a "
            "shared machine hits all three; the onnxruntime model is the fixed-size export of "
            "the same weights (export check max abs difference in `export_checks`).",
        ],
        "cells": cells,
        "export_checks": checks,
        "targets": {"ratio_ort_torch": TARGET_RATIO, "ratio_ort_limit": TARGET_LIMIT},
        "worst_ratio_ort_torch": worst_ratio,
        "worst_ratio_ort_limit": worst_limit,
        "target_in_limits_at_worst": needed,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
