"""Node latency vs the bare Predictor, per backend, at 640x480 input with the default student.

The default student is the demo config's architecture (config/train/synthetic_demo.yaml, model
section: ResNet-18 encoder, 7 classes, 96x128 network input) exported with RANDOM weights: the
timing of a network does not depend on its weights. Frames are 640x480 rgb8; the network runs at
its native 128x96 and outputs are resized back to 640x480 (output_resolution: input).

Measured, all on one clock (time.perf_counter in this process):
- bare: Predictor.predict(frame) in this process (resize + normalise + forward + argmax/softmax +
  resize back), and its forward pass alone;
- node end-to-end: PerceptionClient publishes an Image into a live `perception_node` process
  (started with config/perception.yaml, as the launch file does) and waits until ~/semantic and
  ~/depth have both arrived; one frame in flight at a time;
- throughput: a 30 Hz stream for a few seconds, answered frames per second;
- per-stage breakdown: the node's own /diagnostics (decode, preprocess, forward, postprocess,
  publish) averaged over the measured frames.
Bare and node frames alternate one by one, so background load on a shared machine hits both
alike; both processes run with the same allocator setting (inference.retain_freed_memory).
Each backend (BENCH_BACKENDS, default "torch,onnxruntime"; onnxruntime when installed) gets its
own node and its own bare Predictor: torch with the .safetensors artifact, onnxruntime with its
.onnx export (`mtl_training.export.export_onnx`). The issue-12 target is end-to-end <= 1.05x the
bare forward pass of the same backend.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "train" / "synthetic_demo.yaml"
DDS_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_loopback.xml"
WIDTH, HEIGHT = 640, 480
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
PER_ROUND = int(os.environ.get("BENCH_FRAMES", "10"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
STREAM_SECONDS = float(os.environ.get("BENCH_STREAM_SECONDS", "6"))
# Network input sizes (width x height): the demo's 128x96, and 320x240, where a network does
# robot-sized work; larger sizes get fewer frames (same total pixels, at least MIN_FRAMES).
SIZES = os.environ.get("BENCH_NODE_SIZES", "128x96,320x240")
MIN_FRAMES = 30
ECHO_FRAMES = 60
TARGET = 1.05  # node end-to-end / bare forward of the same backend (issue 12)


def default_student(path: Path, size: tuple[int, int] | None = None) -> Path:
    """The demo architecture with random weights, exported through the real artifact writer.

    `size` (height, width) overrides the demo's network input size (bench_backends)."""
    import torch

    from mtl_perception.core.artifact import ArtifactMeta, write_artifact
    from mtl_perception.core.models.registry import build_model
    from mtl_perception.core.preprocess import PreprocessSpec
    from mtl_training.config import load_config
    from mtl_training.data.sources.synthetic import CLASSES, PALETTE

    cfg = load_config(DEMO_CONFIG)
    torch.manual_seed(0)
    spec = cfg.model.spec()
    model = build_model(spec).eval()
    n = cfg.model.num_classes
    h, w = size or (cfg.data.height, cfg.data.width)
    meta = ArtifactMeta(spec, list(CLASSES)[:n], [list(c) for c in PALETTE][:n],
                        PreprocessSpec(h, w), cfg.data.max_depth,
                        training={"dataset": "random weights (benchmark only)"})
    return write_artifact(model, meta, path)


def frames(n: int = 4) -> list[np.ndarray]:
    """Smooth random 640x480 RGB frames (blocky, like real images compress)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
        out.append(np.ascontiguousarray(np.repeat(np.repeat(small, 16, 0), 16, 1)))
    return out


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50": float(np.median(a)), "mean": float(a.mean()), "p90": float(np.percentile(a, 90)),
            "n": int(a.size)}


def _sizes() -> list[tuple[int, int]]:
    """BENCH_NODE_SIZES as (height, width) pairs."""
    out = []
    for item in SIZES.split(","):
        w, h = (int(v) for v in item.strip().lower().split("x"))
        out.append((h, w))
    return out


def _frame_count(h: int, w: int) -> int:
    """Frames measured at one network size: ROUNDS x PER_ROUND at 128x96, fewer when larger."""
    return max(MIN_FRAMES, round(ROUNDS * PER_ROUND * (96 * 128) / (h * w)))


def _echo_floor(imgs: list[np.ndarray], work: Path,
                outputs: tuple[str, ...] = ("semantic", "depth"),
                ns: str = "/bench_echo") -> dict[str, Any]:
    """End-to-end time through bench/echo_node.py: DDS + rclpy, no work (the floor).

    The echo node answers with `outputs` at the frame's size; the client waits for all."""
    import subprocess
    import sys

    from mtl_perception.ros.client import PerceptionClient
    from mtl_perception.ros.process import stop_node

    log = open(work / f"echo{ns.replace('/', '_')}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "bench.echo_node", ns, ",".join(outputs)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ.copy())
    e2e, publish = [], []
    try:
        with PerceptionClient(node_name=f"{ns}/mtl_perception",
                              image_topic=f"{ns}/camera/image_raw",
                              outputs=outputs, queue_depth=1) as client:
            client.wait_until_connected(timeout=60)
            stamp = 1_000_000_000
            for i in range(5 + ECHO_FRAMES):
                stamp += 1_000_000
                t0 = time.perf_counter()
                client.publish_rgb(imgs[i % len(imgs)], stamp, "camera_optical")
                t1 = time.perf_counter()
                rec = client.wait_for(stamp, timeout=10)
                if rec is not None and i >= 5:  # 5 warm-up frames
                    e2e.append(max(rec.received_at.values()) - rec.sent_at)
                    publish.append(t1 - t0)
                time.sleep(0.01)
    finally:
        stop_node(proc)
        log.close()
    return {"end_to_end_ms": _ms(e2e), "publish_call_ms": _ms(publish),
            "frames_lost": ECHO_FRAMES - len(e2e), "outputs": list(outputs)}


def _measure(backend: str, model: Path, work: Path, imgs: list[np.ndarray],
             ns: str, n_frames: int, threads: int = THREADS,
             outputs: tuple[str, ...] = ("semantic", "depth")) -> dict[str, Any]:
    """One backend: bare Predictor frames alternating with node frames, then a 30 Hz stream.

    `outputs` are the node topics subscribed to (and waited for); the bare Predictor computes
    what they need and no more (bench_models asks for semantic + semantic_color + depth).
    """
    from mtl_perception.ros.client import NodeDiagnostics, PerceptionClient
    from mtl_perception.ros.pipeline import needed_predictions
    from mtl_perception.ros.process import start_node, stop_node
    from mtl_perception.runtime.predictor import Predictor

    want = needed_predictions(dict.fromkeys(outputs, True))
    predictor = Predictor(model, device="cpu", num_threads=threads, backend=backend)
    predictor.warmup(5)
    log = work / f"node{ns.replace('/', '_')}.log"
    proc = start_node(model, params={"device": "cpu", "num_threads": threads,
                                     "warmup_runs": 5, "backend": backend},
                      params_file=REPO / "config" / "perception.yaml",
                      remaps={"__ns": ns, "image": f"{ns}/camera/image_raw",
                              "camera_info": f"{ns}/camera/camera_info"}, log_path=log)
    bare_total, bare_forward, e2e, pairs, lost = [], [], [], [], 0
    stream: dict[str, float] = {}
    try:
        with PerceptionClient(node_name=f"{ns}/mtl_perception",
                              image_topic=f"{ns}/camera/image_raw",
                              outputs=outputs, queue_depth=1) as client:
            diag = NodeDiagnostics(client, f"{ns}/mtl_perception")
            client.wait_until_connected(timeout=120)
            stamp = 1_000_000_000
            for _ in range(5):  # DDS discovery/first-message warm-up, not measured
                stamp += 1_000_000
                client.publish_rgb(imgs[0], stamp, "camera_optical")
                client.wait_for(stamp, timeout=10)
            diag_start = len(diag.snapshot())
            for i in range(n_frames):  # alternate: one bare frame, one node frame
                img = imgs[i % len(imgs)]
                pred = predictor.predict(img, want=want)
                bare_total.append(sum(pred.timings.values()))
                bare_forward.append(pred.timings["forward"])
                stamp += 1_000_000
                client.publish_rgb(img, stamp, "camera_optical")
                rec = client.wait_for(stamp, timeout=10)
                if rec is None:
                    lost += 1
                    continue
                e2e.append(max(rec.received_at.values()) - rec.sent_at)
                pairs.append((len(bare_total) - 1, e2e[-1]))  # (index of the bare frame, e2e)
            time.sleep(1.5)  # let the last diagnostics window close
            windows = [d for d in diag.snapshot()[diag_start:]
                       if float(d.get("output_rate_hz", 0)) > 0]
            stages = {}
            for key in ("queue", "subscribers", "decode", "preprocess", "forward", "postprocess",
                        "publish"):
                vals = [float(d[f"{key}_ms"]) for d in windows if f"{key}_ms" in d]
                weights = [float(d["output_rate_hz"]) for d in windows if f"{key}_ms" in d]
                stages[key] = float(np.average(vals, weights=weights)) if vals else float("nan")
            node_internal = [float(d["latency_mean_ms"]) for d in windows]
            providers = windows[-1].get("providers", "") if windows else ""

            # Throughput: a 30 Hz camera for STREAM_SECONDS; count answered frames.
            period = 1.0 / 30.0
            first = stamp + 1_000_000
            n_sent = int(STREAM_SECONDS * 30)
            t0 = time.perf_counter()
            for k in range(n_sent):
                stamp += 1_000_000
                client.publish_rgb(imgs[k % len(imgs)], stamp, "camera_optical")
                next_t = t0 + (k + 1) * period
                time.sleep(max(0.0, next_t - time.perf_counter()))
            time.sleep(1.0)
            with client.lock:
                answered = [s for s, rec in client.frames.items()
                            if s >= first and all(o in rec.outputs for o in outputs)]
            stream = {"sent": n_sent, "answered": len(answered),
                      "input_hz": n_sent / (time.perf_counter() - 1.0 - t0),
                      "output_hz": len(answered) / STREAM_SECONDS}
    finally:
        code = stop_node(proc)
    if not e2e:
        raise RuntimeError(f"{backend}: node answered no frame (exit {code}); see {log}")

    # Each node frame against the mean of the bare frames measured just before and just after it:
    # background load drifts, and neighbours in time see the same load.
    neighbour = [t / (0.5 * (bare_total[i] + bare_total[i + 1]))
                 for i, t in pairs if i + 1 < len(bare_total)]
    neighbour_fwd = [t / (0.5 * (bare_forward[i] + bare_forward[i + 1]))
                     for i, t in pairs if i + 1 < len(bare_forward)]
    bare, fwd, node = _ms(bare_total), _ms(bare_forward), _ms(e2e)
    h, w = predictor.input_size
    return {
        "backend": backend, "providers": providers or predictor.backend.settings()["providers"],
        "network_input": f"{w}x{h}",
        "bare_predict_ms": bare, "bare_forward_ms": fwd, "end_to_end_ms": node,
        "node_internal_ms": float(np.median(node_internal)) if node_internal else float("nan"),
        "node_windows": len(node_internal),
        "ratio_end_to_end_over_bare_predict": node["p50"] / bare["p50"],
        "ratio_end_to_end_over_forward": node["p50"] / fwd["p50"],
        "ratio_per_frame_neighbours_p50": float(np.median(neighbour)),
        "ratio_per_frame_neighbours_p90": float(np.percentile(neighbour, 90)),
        "ratio_per_frame_over_forward_p50": float(np.median(neighbour_fwd)),
        "neighbour_pairs": len(neighbour),
        "raw_ms": {"bare_predict": [1000 * t for t in bare_total],
                   "bare_forward": [1000 * t for t in bare_forward],
                   "end_to_end": [1000 * t for t in e2e]},
        "stages_ms": stages, "throughput": stream, "frames_lost": lost,
    }


def _rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    b = f"{r['backend']} {r['network_input']}"
    bare, fwd, node = r["bare_predict_ms"], r["bare_forward_ms"], r["end_to_end_ms"]
    stream = r["throughput"]
    return [
        {"backend, network input": b,
         "measure": "bare Predictor.predict (640x480 -> outputs at 640x480)",
         "p50": bare["p50"], "p90": bare["p90"], "n": bare["n"]},
        {"backend, network input": b, "measure": "  of which model forward",
         "p50": fwd["p50"], "p90": fwd["p90"], "n": fwd["n"]},
        {"backend, network input": b,
         "measure": "node end-to-end (publish -> ~/semantic + ~/depth received)",
         "p50": node["p50"], "p90": node["p90"], "n": node["n"]},
        {"backend, network input": b,
         "measure": "node internal (DDS reception -> last publish), 1 s diagnostics windows",
         "p50": r["node_internal_ms"], "p90": "", "n": r["node_windows"]},
        *({"backend, network input": b, "measure": f"  node stage {k} (mean)", "p50": v,
           "p90": "", "n": ""} for k, v in r["stages_ms"].items()),
        {"backend, network input": b,
         "measure": "ratio end-to-end / bare forward (target <= 1.05)",
         "p50": r["ratio_end_to_end_over_forward"], "p90": "", "n": ""},
        {"backend, network input": b, "measure": "ratio end-to-end / bare predict",
         "p50": r["ratio_end_to_end_over_bare_predict"], "p90": "", "n": ""},
        {"backend, network input": b,
         "measure": "ratio per node frame / the bare forwards around it",
         "p50": r["ratio_per_frame_over_forward_p50"], "p90": "", "n": r["neighbour_pairs"]},
        {"backend, network input": b,
         "measure": "throughput under a 30 Hz stream (frames/s answered)",
         "p50": stream.get("output_hz", float("nan")), "p90": "",
         "n": f"{stream.get('answered', 0)}/{stream.get('sent', 0)}"},
    ]


def run(results_dir: Path) -> dict[str, Any]:
    # The repo's loopback profile (32 MB shared-memory segments carry a whole frame in one piece).
    # Set before the first DDS participant of this process and inherited by the node process.
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import torch

    from mtl_perception.runtime.backend import onnxruntime_available
    from mtl_perception.runtime.memory import retain_freed_memory

    torch.set_num_threads(THREADS)
    retain_freed_memory()  # as perception_node's main does: same allocator on both sides
    work = Path(tempfile.mkdtemp(prefix="bench_node_latency_"))  # models + node logs
    wanted = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "torch,onnxruntime").split(",")]
    if "onnxruntime" in wanted and not onnxruntime_available():
        wanted.remove("onnxruntime")
    imgs = frames()
    echo = _echo_floor(imgs, work)
    results: list[dict[str, Any]] = []
    for h, w in _sizes():
        artifact = default_student(work / f"default_student_{w}x{h}.safetensors", (h, w))
        models = {"torch": artifact}
        if "onnxruntime" in wanted:
            from mtl_training.export import export_onnx

            models["onnxruntime"] = export_onnx(artifact,
                                                work / f"default_student_{w}x{h}.onnx").path
        results += [_measure(b, models[b], work, imgs, f"/bench_{b}_{w}x{h}", _frame_count(h, w))
                    for b in wanted if b in models]
    shutil.rmtree(work, ignore_errors=True)

    table = [row for r in results for row in _rows(r)]
    floor = echo["end_to_end_ms"]["p50"]
    verdicts = [f"{r['backend']} {r['network_input']}: {r['ratio_end_to_end_over_forward']:.3f}"
                f" ({'met' if r['ratio_end_to_end_over_forward'] <= TARGET else 'NOT met'})"
                for r in results]
    notes = [
        "bare = Predictor.predict in the benchmark process: resize to the network size, "
        "normalise, forward, argmax/confidence, resize outputs back to 640x480.",
        "end-to-end = PerceptionClient publish -> both outputs received, same process clock, "
        "real DDS (loopback) to a separate perception_node process, one frame in flight; "
        "each backend has its own node (backend:=torch with the .safetensors artifact, "
        "backend:=onnxruntime with its .onnx export).",
        f"transport floor: the same frames through bench/echo_node.py (a node that answers "
        f"with preallocated 640x480 mono8 + 32FC1 images, no work): end-to-end p50 "
        f"{floor:.2f} ms (p90 {echo['end_to_end_ms']['p90']:.2f}, n "
        f"{echo['end_to_end_ms']['n']}), of which the client's publish() call "
        f"{echo['publish_call_ms']['p50']:.2f} ms.",
        f"target end-to-end / bare forward <= {TARGET}: " + "; ".join(verdicts) + ".",
        "stages come from the node's /diagnostics; throughput counts frames answered with "
        "both outputs while a 30 Hz stream runs (the node keeps only the newest frame).",
        "frames lost (no answer within 10 s): "
        + ", ".join(f"{r['backend']} {r['network_input']} {r['frames_lost']}"
                    for r in results) + ".",
    ]
    base = results[0]
    return {
        "title": (f"Default student (demo architecture, random weights) at several network "
                  f"input sizes on CPU, {THREADS} thread(s), {WIDTH}x{HEIGHT} rgb8 frames, per "
                  "backend; times in ms."),
        "table": table,
        "notes": notes,
        # The first size's torch figures at the top level, as before this benchmark had sizes.
        **{k: base[k] for k in ("bare_predict_ms", "bare_forward_ms", "end_to_end_ms",
                                "ratio_end_to_end_over_bare_predict",
                                "ratio_end_to_end_over_forward",
                                "ratio_per_frame_neighbours_p50", "raw_ms", "stages_ms",
                                "throughput", "frames_lost")},
        "runs": results, "echo_floor": echo, "target_end_to_end_over_forward": TARGET,
        "threads": THREADS, "input": f"{WIDTH}x{HEIGHT} rgb8",
    }
