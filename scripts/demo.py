"""`make demo`: the whole loop on the embedded synthetic world, on CPU, in a few minutes.

synthesise a dataset -> train the student -> export the artifact -> start perception_node on a
real (loopback) DDS graph -> stream held-out frames through it -> score its outputs with the
training metrics code, time it, and write demo_out/montage.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--config", type=Path, default=REPO / "config/train/synthetic_demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--stream-frames", type=int, default=48)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    from mtl_training.config import load_config
    from mtl_training.data.sources.synthetic import write_synthetic_folder
    from mtl_training.export import export_run
    from mtl_training.trainer import summarize, train

    # 1. data: a folder dataset rendered from the procedural world
    cfg = load_config(args.config, args.set)
    data_dir = out / "data"
    stats = write_synthetic_folder(data_dir, cfg.data)
    made = ("reused (same config)" if stats["reused"]
            else f"synthesised ({stats['fps']:.0f} frames/s)")
    print(f"[demo] {stats['frames']} frames {made} -> {data_dir}")

    # 2. train the student on it
    cfg.data.name, cfg.data.root = "folder", str(data_dir)
    cfg.train.out_dir = str(out / "run")
    t0 = time.time()
    run_dir = train(cfg, overwrite=True)  # a second `make demo` replaces its own run
    train_s = time.time() - t0
    print(f"[demo] trained in {train_s:.0f} s -> {run_dir}")

    # 3. export
    artifact = export_run(run_dir, out / "student.safetensors")
    print(f"[demo] exported {artifact}")

    # 4. the node on a live graph, fed held-out frames
    result = stream_through_node(artifact, data_dir, out, args.stream_frames)
    result["train_seconds"] = round(train_s, 1)
    result["total_seconds"] = round(time.time() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=float))

    m = result["node_metrics"]
    print("\n=== mtl_perception demo ===")
    print(f"student (held-out frames, via the live node): {summarize(m)}")
    lat = result["latency_ms"]
    print(f"node end-to-end latency: p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
          f"(bare model forward p50 {result['bare_forward_ms_p50']:.1f} ms, "
          f"ratio {lat['p50'] / result['bare_forward_ms_p50']:.2f}); "
          f"{result['frames_received']}/{result['frames_sent']} frames answered")
    print(f"montage: {out / 'montage.png'}   summary: {out / 'summary.json'}   "
          f"total {result['total_seconds']:.0f} s")
    return 0


def stream_through_node(artifact: Path, data_dir: Path, out: Path, n_frames: int) -> dict:
    from mtl_perception.core.metrics import DepthMetrics, SegMetrics
    from mtl_perception.ros.client import PerceptionClient, decode_outputs
    from mtl_perception.ros.process import start_node, stop_node
    from mtl_perception.runtime.memory import retain_freed_memory
    from mtl_perception.runtime.predictor import Predictor
    from mtl_training.data.sources.folder import FolderSource
    from mtl_training.report import montage, save_rgb_png

    val = FolderSource(data_dir, "val")
    n = min(n_frames, len(val))
    frames = [val.frame(i) for i in range(n)]
    retain_freed_memory()  # the node process does the same: compare like with like
    predictor = Predictor(artifact, device="cpu")
    bare = []
    for f in frames:
        bare.append(predictor.predict(f.rgb).timings["forward"] * 1000)

    log = out / "node.log"
    proc = start_node(artifact, params={"device": "cpu"}, log_path=log)
    seg_m = SegMetrics(len(val.info.classes), val.info.classes)
    depth_m = DepthMetrics(max_depth=val.info.max_depth)
    latencies, rows = [], []
    try:
        with PerceptionClient(queue_depth=1) as client:
            client.wait_until_connected(timeout=90)
            for i, f in enumerate(frames):
                stamp = 1_000_000_000 * (i + 1)
                rec = None
                for _ in range(3):  # best-effort transport: resend a frame that got lost
                    client.publish_rgb(f.rgb, stamp, "camera_optical")
                    rec = client.wait_for(stamp, timeout=5)
                    if rec is not None:
                        break
                if rec is None:
                    continue
                latencies.append((max(rec.received_at.values()) - rec.sent_at) * 1000)
                arr = decode_outputs(rec)
                seg_m.update(arr["semantic"], f.seg)
                depth_m.update(arr["depth"], f.depth)
                if len(rows) < 6:
                    rows.append({"rgb": f.rgb, "seg": f.seg, "seg_pred": arr["semantic"],
                                 "depth": f.depth, "depth_pred": arr["depth"]})
    finally:
        code = stop_node(proc)
    if not latencies:
        print(log.read_text(), file=sys.stderr)
        raise RuntimeError(f"the node answered no frame (exit {code}); see {log}")
    save_rgb_png(out / "montage.png", montage(rows, val.info.palette, val.info.max_depth))
    lat = np.asarray(latencies)
    return {
        "frames_sent": n, "frames_received": len(latencies),
        "node_metrics": {"seg": seg_m.compute(), "depth": depth_m.compute()},
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "mean": float(lat.mean())},
        "bare_forward_ms_p50": float(np.percentile(bare, 50)),
        "node_exit_code": code,
    }


if __name__ == "__main__":
    sys.exit(main())
