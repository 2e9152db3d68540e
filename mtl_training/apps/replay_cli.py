"""`mtl-replay BAG --model ART --report DIR`: a recorded bag through a live perception node.

The bag is read the way `mtl-train bag extract` reads it (same pairing, depth registered into the
colour camera), every colour frame is replayed through the node (mtl_perception.ros.replay), and
the counts, latency and scores land in DIR/report.json and DIR/report.md (and a result bag with
`--result-bag`). Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtl_perception.core.artifact import ArtifactError, read_metadata
from mtl_perception.ros.replay import ReplayOptions, replay
from mtl_training.config import BagConfig, ConfigError, load_config
from mtl_training.data.bags.frames import BagReport, read_synced_frames
from mtl_training.data.bags.reader import BagError
from mtl_training.report import markdown_table


def replay_bag(bag: str | Path, model: str | Path, report_dir: str | Path,
               bag_cfg: BagConfig | None = None,
               options: ReplayOptions | None = None) -> dict[str, Any]:
    """Replay a bag's colour frames through a live node; write report.json + report.md.

    Depth is scored against the bag's depth registered into the colour camera, segmentation
    against the label topic when the bag has one. The model and the bag are checked before any
    node starts. Returns the report dict.
    """
    opts = options or ReplayOptions()
    bag_cfg = bag_cfg or BagConfig()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(model)  # fails early, naming the file, before any node starts
    bag_report = BagReport(str(bag))
    frames = read_synced_frames(bag, bag_cfg, bag_report, keep_unpaired=True)
    first = next(frames, None)  # opens the bag: a bad bag fails before the node starts
    if first is None:
        raise ValueError(f"{bag}: no colour frames to replay ({bag_report.summary()})")
    if opts.log_path is None:
        opts = replace(opts, log_path=report_dir / "node.log")
    r = replay(itertools.chain([first], frames), model, meta, opts)
    report = {
        "bag": str(bag), "model": str(model),
        "rate": "max" if opts.rate is None else opts.rate,
        "frames": r.frames,
        "latency_ms": r.latency_ms,
        "throughput_fps": r.throughput_fps,
        "metrics": {"depth": r.depth_metrics, "seg": r.seg_metrics},
        "not_scored": not_scored(meta.architecture.tasks, bag_report.topics, r.frames),
        "bag_report": bag_report.to_dict(),  # counts, stamp problems, undecodable messages
        "node_exit_code": r.node_exit_code,
        "result_bag": str(opts.result_bag) if opts.result_bag else None,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (report_dir / "report.md").write_text(format_replay_report(report))
    return report


def not_scored(tasks: tuple[str, ...] | list[str], topics: dict[str, str | None],
               frames: dict[str, int]) -> dict[str, str]:
    """task -> why it got no score, for each task that got none (the report says it, instead of
    leaving the section out: replay_eval.launch.py without config:= once scored no segmentation
    and nothing said why)."""
    out = {}
    if "seg" not in tasks:
        out["seg"] = "the model has no segmentation head"
    elif not topics.get("label"):
        out["seg"] = ("no label topic given: pass --config FILE with bag.label_topic "
                      "(replay_eval.launch.py: config:=FILE)")
    elif not frames.get("scored_seg"):
        out["seg"] = f"no answered frame had a label on {topics['label']}"
    if "depth" not in tasks:
        out["depth"] = "the model has no depth head"
    elif not frames.get("scored_depth"):
        out["depth"] = f"no answered frame had registered depth from {topics.get('depth')}"
    return out


def format_replay_report(r: dict[str, Any]) -> str:
    """Markdown for a replay report dict."""
    f, lat = r["frames"], r["latency_ms"]
    lines = [f"# Replay evaluation: {Path(r['bag']).name}", "",
             f"- bag: `{r['bag']}`", f"- model: `{r['model']}`", f"- rate: {r['rate']}",
             f"- colour topic: `{r['bag_report']['topics'].get('rgb')}`, depth topic: "
             f"`{r['bag_report']['topics'].get('depth')}`",
             f"- depth ground truth: {r['bag_report']['registration']}", "",
             "## Frames and timing", "",
             markdown_table([{**f, "throughput_fps": r["throughput_fps"]}], floatfmt=".2f"), "",
             markdown_table([{f"latency_{k}_ms": v for k, v in lat.items()}], floatfmt=".1f"), ""]
    why = r.get("not_scored") or {}
    if r["metrics"]["depth"]:
        lines += ["## Depth (vs the bag's registered depth)", "",
                  markdown_table([r["metrics"]["depth"]]), ""]
    elif "depth" in why:
        lines += ["## Depth", "", f"Not scored: {why['depth']}.", ""]
    if r["metrics"]["seg"]:
        seg = {k: v for k, v in r["metrics"]["seg"].items() if k != "per_class_iou"}
        lines += ["## Segmentation (vs the bag's label topic)", "", markdown_table([seg]), ""]
    elif "seg" in why:
        lines += ["## Segmentation", "", f"Not scored: {why['seg']}.", ""]
    problems = r["bag_report"].get("problems") or []
    if problems:
        lines += ["## Bad data", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(lines)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """What `mtl-replay` prints: frames and latency, one line per scored task, then one line per
    kind of bad input in the bag (undecodable messages, stamp problems, truncation), so what the
    replay could not send is on screen, not only in report.json."""
    f, lat = r["frames"], r["latency_ms"]
    out = [f"replay {r['bag']}: {f['sent']} frames sent, {f['received']} answered, "
           f"{f['dropped']} dropped; latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
           f"p99 {lat['p99']:.1f} ms; {r['throughput_fps']:.1f} frames/s"]
    d = r["metrics"]["depth"]
    if d:
        out.append(f"depth ({f['scored_depth']} frames): abs_err {d['abs_err']:.3f} m, "
                   f"rel_err {d['rel_err']:.3f}, rmse {d['rmse']:.3f} m, delta1 {d['delta1']:.3f}")
    s = r["metrics"]["seg"]
    if s:
        out.append(f"seg ({f['scored_seg']} frames): mIoU {s['miou']:.3f}, "
                   f"pixel acc {s['pixel_acc']:.3f}")
    out += [f"{task}: not scored ({why})" for task, why in (r.get("not_scored") or {}).items()]
    out += [f"bag: {p}" for p in r["bag_report"].get("problems") or []]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The `mtl-replay` command line."""
    p = argparse.ArgumentParser(prog="mtl-replay", description="replay a bag through a live "
                                "perception node; write metrics + latency report")
    p.add_argument("bag", type=Path, help=".bag / .db3 / .mcap file or ROS 2 bag folder")
    p.add_argument("--model", required=True, type=Path, help="exported .safetensors artifact")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--rate", default="1.0", help="playback speed factor, or 'max'")
    p.add_argument("--result-bag", type=Path, default=None,
                   help="also write inputs + outputs as an mcap bag folder (must not exist)")
    p.add_argument("--device", default="cpu", help="node device parameter (auto|cpu|cuda[:N])")
    p.add_argument("--no-start-node", action="store_true",
                   help="use an already running node (e.g. from replay_eval.launch.py)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for outputs")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra node parameter, e.g. --param publish.points=false (repeatable)")
    p.add_argument("--config", type=Path, default=None, help="experiment YAML (bag.* section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set bag.sync_tolerance=0.05")
    return p


def _error(text: str) -> int:
    print(f"mtl-replay: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """`mtl-replay BAG --model ART --report DIR [--rate R|max] [--result-bag PATH]`."""
    args = build_parser().parse_args(argv)
    try:
        rate = None if args.rate == "max" else float(args.rate)
        if rate is not None and rate <= 0:
            raise ValueError
    except ValueError:
        return _error(f"--rate must be a positive number or 'max', got {args.rate}")
    if args.result_bag is not None and args.result_bag.exists():
        return _error(f"--result-bag {args.result_bag} exists already")
    node_params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            return _error(f"--param expects NAME=VALUE, got {item!r}")
        node_params[name] = value
    try:
        cfg = load_config(args.config, args.set)
        report = replay_bag(args.bag, args.model, args.report, cfg.bag, ReplayOptions(
            rate=rate, device=args.device, start_node=not args.no_start_node,
            result_bag=args.result_bag, timeout=args.timeout, node_params=node_params))
    except (BagError, ArtifactError, ConfigError, ValueError, RuntimeError) as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("mtl-replay: interrupted", file=sys.stderr)
        return 130
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.report / 'report.md'}, {args.report / 'report.json'}"
          + (f", result bag {args.result_bag}" if args.result_bag else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
