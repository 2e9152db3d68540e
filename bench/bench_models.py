"""The model table (issue 24): cost and speed of each student architecture at 640x480, one run.

Per architecture (random weights: timing does not depend on weights), all at a 640x480 network
input, the size a VGA camera delivers:
- GFLOP of one forward pass (torch FlopCounterMode: 2 per multiply-add) and parameters;
- bare forward, onnxruntime FP32 (the fixed-size export through `mtl_training.export`) and
  PyTorch eager, on 1 and on 2 threads: rounds interleave every architecture and both backends,
  so load drift on a shared machine hits all alike; medians over rounds;
- node end-to-end: PerceptionClient publishes 640x480 rgb8 into a live perception_node process
  (real DDS, loopback) running the .onnx on 2 threads, and waits for ~/semantic,
  ~/semantic_color and ~/depth at camera size (bench_node_latency's measurement, one frame in
  flight), alternating frame by frame with the same backend's bare forward in this process:
  the ratio end-to-end / bare forward says what pre/postprocessing, messages and DDS add;
- transport floor: the same frames and outputs through bench/echo_node.py (no work), once per
  run, set against the budget the node target leaves (0.15 x the bare forward).

The architecture list is data (`ARCHITECTURES`, ModelSpec fields); an entry whose encoder or
decoder this checkout does not have is skipped with a note. An architecture whose slowest
forward pass exceeds MAX_TIMED_S is counted (GFLOP, parameters) but not timed.

Environment: BENCH_MODELS_ROUNDS (default 5) rounds for fast models (slow ones get fewer, see
_rounds), BENCH_MODELS_NODE_FRAMES (default 30) node frames per fast model,
BENCH_MODELS_ONLY (comma-separated names) limits the architectures (a quick look; the committed
run measures all).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
THREADS = (1, 2)
NODE_THREADS = 2
NODE_OUTPUTS = ("semantic", "semantic_color", "depth")
MAX_TIMED_S = 20.0  # a forward pass slower than this is not timed (a table, not a soak test)
REFERENCE = "demo"  # the architecture the ratios are taken against
TARGETS = {"gflop": 6.5, "ratio_ort_to_reference": 0.10, "fps_2_threads": 15.0,
           "node_over_forward": 1.15}

# What each row is and its ModelSpec fields. An entry with a "config" is that training config's
# model section, field for field (test_bench_models checks it, so the table follows the configs).
ARCHITECTURES: list[dict[str, Any]] = [
    {"name": "demo", "label": "demo student: ResNet-18, U-Net 48 ch x 1",
     "config": "config/train/synthetic_demo.yaml",
     "spec": {"arch": "student", "encoder": "resnet18", "num_classes": 7,
              "decoder_channels": 48, "decoder_convs": 1, "max_depth": 10.0}},
    {"name": "nyuv2", "label": "NYUv2 student: ResNet-34, U-Net 128 ch x 3, 13 classes",
     "config": "config/train/nyuv2.yaml",
     "spec": {"arch": "student", "encoder": "resnet34", "num_classes": 13,
              "decoder_channels": 128, "decoder_convs": 3, "max_depth": 10.0},
     "node": False},  # ~10 s a frame: the node column would measure patience
    {"name": "lean-40",
     "label": "real-time: EfficientNet-Lite0, 9 of 16 blocks + refine 48, 40 classes",
     "config": "config/train/nyuv2_realtime.yaml",
     "spec": {"arch": "student", "encoder": "efficientnet_lite0_lean", "decoder": "refine",
              "decoder_channels": 48, "decoder_convs": 2, "num_classes": 40,
              "max_depth": 10.0}, "realtime": True},
    {"name": "lean-7",
     "label": "real-time: EfficientNet-Lite0, 9 of 16 blocks + refine 48, 7 classes",
     "config": "config/train/rosbag_realtime.yaml",
     "spec": {"arch": "student", "encoder": "efficientnet_lite0_lean", "decoder": "refine",
              "decoder_channels": 48, "decoder_convs": 2, "num_classes": 7,
              "max_depth": 10.0}, "realtime": True},
    {"name": "lite0-40", "label": "EfficientNet-Lite0 + refine 64, 40 classes",
     "spec": {"arch": "student", "encoder": "efficientnet_lite0", "decoder": "refine",
              "decoder_channels": 64, "decoder_convs": 2, "num_classes": 40,
              "max_depth": 10.0}},
    {"name": "lite1-40", "label": "EfficientNet-Lite1 + refine 64, 40 classes",
     "spec": {"arch": "student", "encoder": "efficientnet_lite1", "decoder": "refine",
              "decoder_channels": 64, "decoder_convs": 2, "num_classes": 40,
              "max_depth": 10.0}},
    {"name": "lite2-40", "label": "EfficientNet-Lite2 + refine 64, 40 classes",
     "spec": {"arch": "student", "encoder": "efficientnet_lite2", "decoder": "refine",
              "decoder_channels": 64, "decoder_convs": 2, "num_classes": 40,
              "max_depth": 10.0}},
]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _rounds(forward_s: float) -> int:
    """Rounds for a model whose forward takes `forward_s`: fewer for slow ones (>= 2)."""
    base = _env_int("BENCH_MODELS_ROUNDS", 5)
    if forward_s > 5.0:
        return max(2, base // 2)
    return base


def count_gflops(model: Any, height: int, width: int) -> float:
    """GFLOP of one forward pass (2 per multiply-add): the core's counter when it has one."""
    try:
        from mtl_perception.core.models.flops import count_gflops as core_count
    except ImportError:
        from bench.bench_backends import model_flops

        return model_flops(model, height, width) / 1e9
    return float(core_count(model, height, width))


def build_spec(values: dict[str, Any]) -> Any:
    """ModelSpec from an entry's fields; ModelSpecError when this checkout lacks a part."""
    from mtl_perception.core.models.registry import ModelSpec

    return ModelSpec.from_dict(dict(values), where=f"bench_models {values.get('encoder')}")


def _palette(n: int) -> list[list[int]]:
    rng = np.random.default_rng(n)
    return [[int(v) for v in rng.integers(0, 256, 3)] for _ in range(n)]


def write_student(spec: Any, path: Path) -> tuple[Path, Any]:
    """Random-weight artifact at a 640x480 network input; -> (path, model)."""
    import torch

    from mtl_perception.core.artifact import ArtifactMeta, write_artifact
    from mtl_perception.core.models.registry import build_model
    from mtl_perception.core.preprocess import PreprocessSpec

    torch.manual_seed(0)
    model = build_model(spec).eval()
    n = spec.num_classes
    meta = ArtifactMeta(spec, [f"class_{i}" for i in range(n)], _palette(n),
                        PreprocessSpec(HEIGHT, WIDTH), spec.max_depth,
                        training={"dataset": "random weights (benchmark only)"})
    return write_artifact(model, meta, path), model


def _prepare(entries: list[dict[str, Any]], work: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Build, count and export each architecture this checkout has; notes for the rest."""
    from mtl_perception.core.models.registry import ModelSpecError
    from mtl_training.export import export_onnx

    ready, skipped = [], []
    for entry in entries:
        try:
            spec = build_spec(entry["spec"])
        except ModelSpecError as exc:
            skipped.append(f"{entry['name']} not measured: {exc}")
            continue
        art, model = write_student(spec, work / f"{entry['name']}.safetensors")
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        gflop = count_gflops(model, HEIGHT, WIDTH)
        count_s = time.perf_counter() - t0
        del model
        t0 = time.perf_counter()
        check = export_onnx(art, work / f"{entry['name']}.onnx")
        print(f"[bench models] {entry['name']}: {gflop:.1f} GFLOP, {params / 1e6:.2f} M "
              f"parameters, export {time.perf_counter() - t0:.0f} s", flush=True)
        ready.append({**entry, "spec": spec.to_dict(), "artifact": art, "onnx": check.path,
                      "gflop": gflop, "params_m": params / 1e6, "flop_count_s": count_s,
                      "export": {"max_abs_diff": check.max_abs_diff,
                                 "seconds": time.perf_counter() - t0}})
    return ready, skipped


def _time_forwards(models: list[dict[str, Any]]) -> None:
    """Bare forwards, interleaved: per thread count, every round runs every model's torch and
    onnxruntime forward back to back. Results go into each entry's "forward"."""
    import torch

    from mtl_perception.runtime.backend import OnnxRuntimeBackend, TorchBackend

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, HEIGHT, WIDTH, generator=gen)
    for m in models:
        m["forward"] = {}
    for threads in THREADS:
        torch.set_num_threads(threads)
        live = []
        for m in models:
            if m.get("not_timed"):
                continue
            tb = TorchBackend(m["artifact"], "cpu", "fp32", threads)
            ob = OnnxRuntimeBackend(m["onnx"], "cpu", "fp32", threads)
            t0 = time.perf_counter()  # warm-up: allocator, kernel selection, first-run costs
            tb.forward(x)
            slowest = time.perf_counter() - t0
            if threads == THREADS[0] and slowest > MAX_TIMED_S:
                m["not_timed"] = (f"one PyTorch forward on {threads} thread(s) took "
                                  f"{slowest:.0f} s (> {MAX_TIMED_S:.0f} s): counted, not timed")
                continue
            ob.forward(x)
            ob.forward(x)
            tb.forward(x)
            m["forward"][threads] = {"torch": [], "onnxruntime": []}
            live.append((m, tb, ob, _rounds(slowest)))
        for r in range(max((n for *_, n in live), default=0)):
            for m, tb, ob, n in live:
                if r >= n:
                    continue
                t = time.perf_counter()
                tb.forward(x)
                m["forward"][threads]["torch"].append(time.perf_counter() - t)
                t = time.perf_counter()
                ob.forward(x)
                m["forward"][threads]["onnxruntime"].append(time.perf_counter() - t)
        del live


def _runs_node(m: dict[str, Any]) -> bool:
    """Whether a model gets the node measurement: not switched off, and timed."""
    return m.get("node", True) is not False and not m.get("not_timed")


def _node(models: list[dict[str, Any]], work: Path) -> dict[str, Any] | None:
    """Node end-to-end per model (onnxruntime, NODE_THREADS), bench_node_latency's way, and
    the transport floor under it: the same frames and outputs through an echo node that does
    no work (-> its result, None when no model runs the node)."""
    from bench.bench_node_latency import DDS_PROFILE, _echo_floor, _measure, frames

    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    imgs = frames()
    if not any(_runs_node(m) for m in models):
        return None
    print("[bench models] transport floor: echo node", flush=True)
    floor = _echo_floor(imgs, work, NODE_OUTPUTS, "/bench_models_echo")
    per_model = _env_int("BENCH_MODELS_NODE_FRAMES", 30)
    for m in models:
        if not _runs_node(m):
            continue
        fwd = m["forward"].get(NODE_THREADS, {}).get("onnxruntime") or [1.0]
        # about 20 s of frames for a slow model, per_model for a fast one, never under 10
        n = int(min(per_model, max(10, 20.0 / (2 * float(np.median(fwd))))))
        print(f"[bench models] node {m['name']}: {n} frames", flush=True)
        m["node_result"] = _measure("onnxruntime", m["onnx"], work, imgs,
                                    f"/bench_models_{m['name'].replace('-', '_')}", n,
                                    threads=NODE_THREADS, outputs=NODE_OUTPUTS)
    return floor


def _ms(values: list[float]) -> float:
    return 1000.0 * float(np.median(values)) if values else float("nan")


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """One model's medians, frames/s and node figures (JSON, and the table's source)."""
    s: dict[str, Any] = {"gflop": m["gflop"], "params_m": m["params_m"]}
    for threads, per in m.get("forward", {}).items():
        for backend, vals in per.items():
            s[f"{backend}_{threads}t_ms"] = _ms(vals)
            s[f"{backend}_{threads}t_fps"] = 1000.0 / _ms(vals)
    node = m.get("node_result")
    if node:
        s["node_e2e_ms"] = node["end_to_end_ms"]["p50"]
        s["node_fps"] = 1000.0 / node["end_to_end_ms"]["p50"]
        s["node_stream_fps"] = node["throughput"].get("output_hz", float("nan"))
        s["node_forward_ms"] = node["bare_forward_ms"]["p50"]
        s["node_over_forward"] = node["ratio_end_to_end_over_forward"]
        s["node_over_forward_neighbours"] = node["ratio_per_frame_over_forward_p50"]
    return s


def _cell(s: dict[str, Any], key: str) -> Any:
    v = s.get(key)
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def _row(m: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {"model": m["label"] + (f" ({Path(m['config']).name})" if m.get("config") else ""),
            "GFLOP": s["gflop"], "params M": s["params_m"],
            "ort 1t ms": _cell(s, "onnxruntime_1t_ms"),
            "ort 1t fps": _cell(s, "onnxruntime_1t_fps"),
            "ort 2t ms": _cell(s, "onnxruntime_2t_ms"),
            "ort 2t fps": _cell(s, "onnxruntime_2t_fps"),
            "torch 1t ms": _cell(s, "torch_1t_ms"), "torch 2t ms": _cell(s, "torch_2t_ms"),
            "node fps (ort 2t)": _cell(s, "node_fps"),
            "node / forward": _cell(s, "node_over_forward")}


def _paired_ratio(m: dict[str, Any], ref: dict[str, Any], threads: int, backend: str) -> float:
    """Median over rounds of model / reference, round by round (same load in each pair)."""
    a = m["forward"].get(threads, {}).get(backend, [])
    b = ref["forward"].get(threads, {}).get(backend, [])
    pairs = [x / y for x, y in zip(a, b, strict=False)]
    return float(np.median(pairs)) if pairs else float("nan")


def _verdicts(models: list[dict[str, Any]], summaries: dict[str, dict[str, Any]],
              floor_ms: float | None = None) -> tuple[list[str], dict[str, Any]]:
    ref = next((m for m in models if m["name"] == REFERENCE), None)
    notes, out = [], {}
    for m in models:
        if not m.get("realtime") or m.get("not_timed"):
            continue
        s, name = summaries[m["name"]], m["name"]
        v: dict[str, Any] = {"gflop": s["gflop"], "gflop_met": s["gflop"] <= TARGETS["gflop"]}
        parts = [f"{s['gflop']:.2f} GFLOP (target <= {TARGETS['gflop']}: "
                 f"{'met' if v['gflop_met'] else 'NOT met'})"]
        if ref is not None:
            for threads in THREADS:
                r = s.get(f"onnxruntime_{threads}t_ms", np.nan) / summaries[REFERENCE].get(
                    f"onnxruntime_{threads}t_ms", np.nan)
                paired = _paired_ratio(m, ref, threads, "onnxruntime")
                v[f"ratio_ort_{threads}t"] = r
                v[f"ratio_ort_{threads}t_paired"] = paired
                parts.append(f"onnxruntime {threads} thread(s) {r:.3f}x the demo student "
                             f"(per-round pairs {paired:.3f}; target <= "
                             f"{TARGETS['ratio_ort_to_reference']}: "
                             f"{'met' if r <= TARGETS['ratio_ort_to_reference'] else 'NOT met'})")
        fps = s.get("onnxruntime_2t_fps", np.nan)
        v["fps_2t"] = fps
        parts.append(f"{fps:.1f} frames/s on 2 threads (moonshot >= {TARGETS['fps_2_threads']:g}:"
                     f" {'met' if fps >= TARGETS['fps_2_threads'] else 'NOT met'})")
        if "node_over_forward" in s:
            r = s["node_over_forward"]
            v["node_over_forward"] = r
            text = (f"node end-to-end {s['node_e2e_ms']:.1f} ms = {r:.3f}x the bare forward "
                    f"(target <= {TARGETS['node_over_forward']}: "
                    f"{'met' if r <= TARGETS['node_over_forward'] else 'NOT met'}")
            if floor_ms is not None:
                budget = (TARGETS["node_over_forward"] - 1.0) * s["node_forward_ms"]
                v["transport_floor_ms"], v["node_budget_ms"] = floor_ms, budget
                text += (f"; the target leaves {budget:.1f} ms for all the node adds, and the "
                         f"transport floor alone is {floor_ms:.1f} ms")
            parts.append(text + ")")
        out[name] = v
        notes.append(f"targets, {name}: " + "; ".join(parts) + ".")
    return notes, out


def _stage_notes(models: list[dict[str, Any]]) -> list[str]:
    notes = []
    for m in models:
        node = m.get("node_result")
        if not node:
            continue
        st = node["stages_ms"]
        notes.append(f"node stages, {m['name']} (ms, mean over the measured frames): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
                     + f"; end-to-end p50 {node['end_to_end_ms']['p50']:.1f}, bare forward p50 "
                     f"{node['bare_forward_ms']['p50']:.1f}.")
    return notes


def run(results_dir: Path) -> dict[str, Any]:
    import onnxruntime
    import torch

    from bench.host import describe, one_line
    from mtl_perception.runtime.memory import retain_freed_memory

    host = describe()

    load_start = os.getloadavg()
    retain_freed_memory()  # as perception_node does: no page faults per forward pass
    only = [n.strip() for n in os.environ.get("BENCH_MODELS_ONLY", "").split(",") if n.strip()]
    entries = [e for e in ARCHITECTURES if not only or e["name"] in only]
    work = Path(tempfile.mkdtemp(prefix="bench_models_"))
    try:
        models, skipped = _prepare(entries, work)
        _time_forwards(models)
        floor = _node(models, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    summaries = {m["name"]: _summary(m) for m in models}
    floor_ms = floor["end_to_end_ms"]["p50"] if floor else None
    verdict_notes, verdicts = _verdicts(models, summaries, floor_ms)
    not_timed = [f"{m['name']}: {m['not_timed']}" for m in models if m.get("not_timed")]
    notes = [
        *verdict_notes,
        "all at a 640x480 network input (the real-time artifact's input size, so no resize "
        "before the network); random weights; medians over rounds that interleave every "
        "model and both backends; fps = 1000 / median ms.",
        f"ort = onnxruntime {onnxruntime.__version__} CPUExecutionProvider, FP32, fixed-size "
        f"export; torch = PyTorch {torch.__version__} eager; 1t / 2t = intra-op threads.",
        "node fps = 1000 / median end-to-end: PerceptionClient publishes 640x480 rgb8 -> live "
        "perception_node (onnxruntime, 2 threads, real DDS on loopback) -> ~/semantic, "
        "~/semantic_color and ~/depth at 640x480 received, one frame in flight; node / forward "
        "= that end-to-end over the same backend's bare forward, measured alternately in the "
        "same run.",
        *_stage_notes(models),
        *([f"transport floor: the same 640x480 rgb8 frames through bench/echo_node.py, which "
           f"answers at once with preallocated {', '.join(NODE_OUTPUTS)} images of the frame's "
           f"size (no decoding, inference or postprocessing; rclpy and DDS as the node uses "
           f"them): end-to-end p50 {floor_ms:.2f} ms (p90 {floor['end_to_end_ms']['p90']:.2f},"
           f" n {floor['end_to_end_ms']['n']}), of which the client's publish() call "
           f"{floor['publish_call_ms']['p50']:.2f} ms."] if floor else []),
        *not_timed,
        *skipped,
        f"load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; CPU: "
        f"{one_line(host)}.",
    ]
    for m in models:  # JSON-friendly
        m["artifact"], m["onnx"] = str(m["artifact"].name), str(Path(m["onnx"]).name)
        m["forward_raw_ms"] = {str(t): {b: [1000 * v for v in vals] for b, vals in per.items()}
                               for t, per in m.pop("forward", {}).items()}
    return {
        "title": (f"Student architectures at {WIDTH}x{HEIGHT} on this CPU, one run: cost, bare "
                  "forward per backend and threads (ms, frames/s), and the perception node "
                  "end-to-end (rgb8 in; semantic, colour and depth out at camera size)."),
        "table": [_row(m, summaries[m["name"]]) for m in models],
        "notes": notes,
        "summaries": summaries,
        "verdicts": verdicts,
        "targets": TARGETS,
        "architectures": models,
        "transport_floor": floor,
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "cpu_count": os.cpu_count(),
        "host": host,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
