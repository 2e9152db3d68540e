"""`mtl-train experiment imbalance`: does a multi-modal teacher's pseudo-labelling beat training
on the scarce labels alone? (METHOD.md A, on the procedural world, or with `--config` on a
dataset config's frames and label split: config/train/nyuv2_imbalanced.yaml is Erkent's 500
depth / 250 segmentation NYUDv2 setting, cityscapes_300.yaml the 300-image one.)

With --config the ratio sweep is replaced by the config's own label split, seeds vary the
initialisation / order / augmentation (train.seed; the frames and label subsets stay those of
data.seed), and every run is scored on the config's validation split (never its test split).

Arms, per seed and segmentation label ratio (5 %, 10 %, 50 %; depth kept on 60 % of frames):
  UMMT     RGB student on the imbalanced ground truth, missing labels masked.
  UMMT-PS  + pseudo-segmentation from a depth->seg teacher (tau 0.9) on frames with depth only.
  UMMT-PD  + pseudo-depth from a seg->depth teacher on frames with segmentation only.
and a tau sweep at 10 % (0.7, 0.8, 0.9, 0.95 and the per-class mode): coverage, kept-pixel
accuracy against the held-back labels, and the student trained on each.

Every student gets the same optimisation budget; metrics are the last epoch's on held-out rooms
(no checkpoint picked on them). A seed changes the world, the label subsets and the init. Work
runs in priority order (all seeds of one step before the next), appends one line per finished
unit to <out>/results.jsonl, skips units already there when run again, and rewrites the report
after every unit, so an interrupted study still leaves an honest partial page.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import delta_m, flatten
from mtl_training.apps.command import UserError
from mtl_training.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    PseudoLabelConfig,
    load_config,
)
from mtl_training.data import build_sources, datasets_from_sources, label_subsets
from mtl_training.data.datasets import MultiTaskDataset, PseudoLabels, choose_subset
from mtl_training.data.sources.synthetic import SyntheticSource, WorldConfig
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.store import PseudoLabelStore
from mtl_training.pseudo.teacher import load_teacher
from mtl_training.trainer import Trainer

log = logging.getLogger("mtl_training.apps.experiments.imbalance")

RATIOS = (0.05, 0.10, 0.50)
SWEEP_RATIO = 0.10
TAUS = (0.7, 0.8, 0.9, 0.95)
MAIN_TAU = 0.9
DEPTH_FRACTION = 0.6
DELTA_KEYS = ("miou", "pixel_acc", "abs_err", "rel_err")  # Delta_m over these (METHOD.md B)
COMMAND = "mtl-train experiment imbalance --seeds {seeds} --scale {scale}"
DEFAULT_OUT = "runs/imbalance"
DEFAULT_REPORT = "docs/results/imbalance.md"
PARTIAL = "PARTIAL (the study was still running or was stopped; rerun the command to finish)"


@dataclass(frozen=True)
class Plan:
    """Sizes of the study; CPU default (scale 1) fits a shared 2-core machine."""

    scale: float = 1.0
    render: tuple[int, int] = (60, 80)
    size: tuple[int, int] = (48, 64)
    base_frames: int = 300
    base_val: int = 32
    student_epochs: int = 2
    teacher_epochs: int = 3
    base_teacher_epoch: int = 192  # samples per teacher epoch (its both-labels set, repeated)
    batch_size: int = 8
    lr: float = 1e-3

    @property
    def train_frames(self) -> int:
        return max(40, round(self.base_frames * self.scale))

    @property
    def val_frames(self) -> int:
        return max(16, round(self.base_val * math.sqrt(self.scale)))

    @property
    def teacher_epoch(self) -> int:
        return max(32, round(self.base_teacher_epoch * self.scale))


def _config(plan: Plan, seed: int, ratio: float, out_dir: Path, arch: str = "student",
            aux: str = "depth") -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.seed, d.train_frames, d.val_frames = seed, plan.train_frames, plan.val_frames
    d.render_height, d.render_width = plan.render
    d.height, d.width = plan.size
    d.seg_fraction, d.depth_fraction = ratio, DEPTH_FRACTION
    cfg.model = ModelConfig(arch=arch, encoder="resnet18", num_classes=7, decoder_channels=16,
                            decoder_convs=1, aux_input=aux)
    t = cfg.train
    t.stage = "teacher" if arch == "teacher" else "student"
    t.out_dir = str(out_dir)
    t.epochs = plan.teacher_epochs if arch == "teacher" else plan.student_epochs
    t.lr_step_epochs = t.epochs - 1  # halve the rate for the last epoch
    t.batch_size, t.lr, t.seed = plan.batch_size, plan.lr, seed
    t.device, t.num_threads, t.montage_frames = "auto", 1, 4
    if arch == "teacher":
        d.min_epoch_frames = plan.teacher_epoch
    return cfg


class _World:
    """Per seed: the rendered frames (cached once, shared by every run of that seed)."""

    def __init__(self, plan: Plan, seed: int) -> None:
        world = WorldConfig(height=plan.render[0], width=plan.render[1], max_depth=10.0)
        self.plan, self.seed = plan, seed
        self.train = SyntheticSource(seed, 0, plan.train_frames, world)
        self.val = SyntheticSource(seed, SyntheticSource.VAL_OFFSET, plan.val_frames, world)

    def datasets(self, cfg: DataConfig, pseudo: PseudoLabels | None = None
                 ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        """What `build_datasets(cfg)` gives, over this seed's already rendered frames."""
        return datasets_from_sources(cfg, (self.train, self.val), pseudo)


class _Dataset:
    """--config mode: the config's (train, val) sources, opened once and shared by every run."""

    def __init__(self, base: ExperimentConfig) -> None:
        self.train, self.val = build_sources(base.data)

    def datasets(self, cfg: DataConfig, pseudo: PseudoLabels | None = None
                 ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        return datasets_from_sources(cfg, (self.train, self.val), pseudo)


def _dataset_config(base: ExperimentConfig, seed: int, out_dir: Path, arch: str = "student",
                    aux: str = "depth") -> ExperimentConfig:
    """A run of the study on a dataset config: its stage, the study's arch and seed."""
    cfg = base.for_stage("teacher" if arch == "teacher" else "student")
    cfg.model.arch, cfg.model.aux_input = arch, aux
    cfg.data.pseudo_labels = None
    cfg.train.out_dir, cfg.train.seed = str(out_dir), seed
    cfg.validate()
    return cfg


class Study:
    def __init__(self, out: Path, report: Path, seeds: list[int], plan: Plan,
                 base: ExperimentConfig | None = None, config: str | None = None) -> None:
        self.out, self.report, self.seeds, self.plan = out, report, seeds, plan
        self.base, self.config_path = base, config
        self.ratios: tuple[float, ...] = RATIOS
        self.sweep_ratio = SWEEP_RATIO
        self.dataset: _Dataset | None = None
        self.pd_frames = True
        if base is not None:  # the config's own label split replaces the ratio sweep
            self.dataset = _Dataset(base)
            keep_seg, keep_depth = label_subsets(base.data, len(self.dataset.train))
            self.sweep_ratio = float(keep_seg.mean()) if keep_seg.size else 0.0
            self.ratios = (self.sweep_ratio,)
            # UMMT-PD needs frames with segmentation but no depth (none in Erkent's split)
            self.pd_frames = bool((keep_seg & ~keep_depth).any())
        self.results_path = out / "results.jsonl"
        self.results: dict[str, dict[str, Any]] = {}
        if self.results_path.is_file():
            for line in self.results_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line of an interrupted run
                self.results[rec["key"]] = rec
        self.worlds: dict[int, _World] = {}
        self.caches: dict[str, dict] = {}
        self.started = time.time()

    def world(self, seed: int) -> _World | _Dataset:
        if self.dataset is not None:
            return self.dataset
        if seed not in self.worlds:
            self.worlds[seed] = _World(self.plan, seed)
        return self.worlds[seed]

    def config(self, seed: int, ratio: float, out_dir: Path, arch: str = "student",
               aux: str = "depth") -> ExperimentConfig:
        if self.base is not None:
            return _dataset_config(self.base, seed, out_dir, arch, aux)
        return _config(self.plan, seed, ratio, out_dir, arch, aux)

    def both_labels(self, ratio: float) -> int:
        """Training frames keeping both labels (seed 0's subsets): the teacher's set."""
        if self.base is not None and self.dataset is not None:
            seg, depth = label_subsets(self.base.data, len(self.dataset.train))
            return int((seg & depth).sum())
        n = self.plan.train_frames
        return int((choose_subset(n, ratio, seed=0, salt=1)
                    & choose_subset(n, DEPTH_FRACTION, seed=0, salt=2)).sum())

    # -- units ---------------------------------------------------------------------------------
    def _record(self, rec: dict[str, Any]) -> None:
        self.results[rec["key"]] = rec
        with self.results_path.open("a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        write_report(self)

    def _train(self, cfg: ExperimentConfig, seed: int, pseudo: PseudoLabels | None = None
               ) -> dict[str, Any]:
        run_dir = Path(cfg.train.out_dir)
        if run_dir.exists():  # a unit interrupted mid-training starts over
            shutil.rmtree(run_dir)
        t0, c0 = time.time(), time.process_time()
        trainer = Trainer(cfg, datasets=self.world(seed).datasets(cfg.data, pseudo))
        trainer.fit()
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        return {"val": last["val"], "steps": last["step"], "wall_s": time.time() - t0,
                "cpu_s": time.process_time() - c0}

    def student(self, key: str, seed: int, ratio: float, pseudo: PseudoLabels | None = None,
                extra: dict[str, Any] | None = None) -> None:
        run_dir = self.out / key
        res = self._train(self.config(seed, ratio, run_dir), seed, pseudo)
        for ckpt in run_dir.glob("*.pt"):  # students are scored; their weights are not needed
            ckpt.unlink()
        self._record({"key": key, "kind": "student", "seed": seed, "ratio": ratio,
                      **(extra or {}), **res})

    def teacher(self, key: str, seed: int, ratio: float, aux: str) -> Path | None:
        """The teacher's run dir, trained once per (seed, ratio, direction); None if it cannot
        be trained (no frame keeps both labels at a tiny --scale)."""
        run_dir = self.out / key
        if key in self.results and (run_dir / "last.pt").is_file():
            return run_dir
        if self.results.get(key, {}).get("skipped"):
            return None
        try:
            res = self._train(self.config(seed, ratio, run_dir, "teacher", aux), seed)
        except ValueError as exc:
            if "no training frame keeps" not in str(exc):
                raise
            self._record({"key": key, "kind": "teacher", "aux": aux, "seed": seed,
                          "ratio": ratio, "skipped": str(exc)})
            return None
        (run_dir / "best.pt").unlink(missing_ok=True)  # pseudo-labels use the last epoch
        self._record({"key": key, "kind": "teacher", "aux": aux, "seed": seed, "ratio": ratio,
                      **res})
        return run_dir

    def pseudo_student(self, seed: int, ratio: float, aux: str, tau: float = MAIN_TAU,
                       mode: str = "global") -> None:
        arm = "ps" if aux == "depth" else "pd"
        tag = arm if aux == "seg" else f"ps_{mode}" if mode == "per_class" else f"ps_tau{tau}"
        key = f"s{seed}/r{ratio}/{tag}"
        if key in self.results:
            return
        teacher_dir = self.teacher(f"s{seed}/r{ratio}/teacher_{aux}", seed, ratio, aux)
        if teacher_dir is None:
            return
        teacher = load_teacher(teacher_dir, "last")
        cfg = PseudoLabelConfig(tau=tau, mode=mode, batch_size=16)
        pseudo_dir = self.out / "pseudo" / key  # outside the student's run dir (rewritten)
        train_set, _ = self.world(seed).datasets(self.config(seed, ratio, pseudo_dir).data)
        t0 = time.time()
        cache = self.caches.setdefault(str(teacher_dir), {})
        summary = run_pseudo_label(teacher, train_set, pseudo_dir, cfg, overwrite=True,
                                   progress=False, cache=cache)
        store = PseudoLabelStore(pseudo_dir)
        self.student(key, seed, ratio, store, {
            "arm": arm, "tau": tau if aux == "depth" else None, "mode": mode,
            "pseudo": summary, "pseudo_s": time.time() - t0})

    def ummt(self, seed: int, ratio: float) -> None:
        key = f"s{seed}/r{ratio}/ummt"
        if key not in self.results:
            self.student(key, seed, ratio, None, {"arm": "ummt"})

    def run(self) -> None:
        """Priority order: each step for every seed before the next step."""
        sweep = self.sweep_ratio
        others = [r for r in self.ratios if r != sweep]
        steps: list[tuple[str, float, Any]] = [
            ("ummt", sweep, None), ("ps", sweep, MAIN_TAU), ("pd", sweep, None)]
        steps += [("ps", sweep, tau) for tau in TAUS if tau != MAIN_TAU]
        steps += [("ps_class", sweep, MAIN_TAU)]
        for ratio in others:
            steps += [("ummt", ratio, None), ("ps", ratio, MAIN_TAU)]
        steps += [("pd", ratio, None) for ratio in others]
        for what, ratio, tau in steps:
            for seed in self.seeds:
                log.info("imbalance: %s ratio %.2f tau %s seed %d", what, ratio, tau, seed)
                if what == "ummt":
                    self.ummt(seed, ratio)
                elif what == "ps":
                    self.pseudo_student(seed, ratio, "depth", tau)
                elif what == "ps_class":
                    self.pseudo_student(seed, ratio, "depth", tau, "per_class")
                elif self.pd_frames:
                    self.pseudo_student(seed, ratio, "seg")
        write_report(self, finished=True)


# -- report ----------------------------------------------------------------------------------
def _ms(values: list[float], fmt: str = ".3f") -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:{fmt}} (n=1)"
    return f"{np.mean(vals):{fmt}} ± {np.std(vals, ddof=1):{fmt.lstrip('+')}}" + (
        f" (n={len(vals)})" if len(vals) < 3 else "")


def _students(study: Study, ratio: float, tag: str) -> dict[int, dict[str, Any]]:
    return {s: study.results[k] for s in study.seeds
            if (k := f"s{s}/r{ratio}/{tag}") in study.results}


def _paired(study: Study, ratio: float, tag: str) -> tuple[list[float], list[float]]:
    """Per seed: (mIoU gain over UMMT, Delta_m over UMMT) for the seeds both arms finished."""
    base, arm = _students(study, ratio, "ummt"), _students(study, ratio, tag)
    gains, dms = [], []
    for s in sorted(set(base) & set(arm)):
        b, a = flatten(base[s]["val"]), flatten(arm[s]["val"])
        gains.append(a["miou"] - b["miou"])
        dms.append(delta_m(a, b, DELTA_KEYS))
    return gains, dms


ARMS = (("UMMT", "ummt"), ("UMMT-PS (τ=0.9)", f"ps_tau{MAIN_TAU}"), ("UMMT-PD", "pd"))


def _main_table(study: Study) -> list[str]:
    lines = ["| seg labels | arm | mIoU | pixel acc | abs err (m) | rel err | RMSE (m) | δ<1.25 "
             "| Δm vs UMMT (%) |", "|---|---|---|---|---|---|---|---|---|"]
    for ratio in study.ratios:
        for name, tag in ARMS:
            runs = _students(study, ratio, tag)
            if not runs:
                continue
            m = [flatten(r["val"]) for r in runs.values()]
            dm = "0 (reference)" if tag == "ummt" else _ms(_paired(study, ratio, tag)[1], "+.1f")
            lines.append(
                f"| {100 * ratio:.0f} % | {name} | {_ms([x['miou'] for x in m])} | "
                f"{_ms([x['pixel_acc'] for x in m])} | {_ms([x['abs_err'] for x in m])} | "
                f"{_ms([x['rel_err'] for x in m])} | {_ms([x['rmse'] for x in m])} | "
                f"{_ms([x['delta1'] for x in m])} | {dm} |")
    return lines


def _teacher_table(study: Study) -> list[str]:
    lines = ["| seg labels | teacher | frames with both labels (train) | held-out score |",
             "|---|---|---|---|"]
    for ratio in study.ratios:
        both = study.both_labels(ratio)
        for aux, name in (("depth", "RGB+depth → seg"), ("seg", "RGB+seg → depth")):
            runs = [r for s in study.seeds
                    if (r := study.results.get(f"s{s}/r{ratio}/teacher_{aux}", {})).get("val")]
            if not runs:
                continue
            m = [flatten(r["val"]) for r in runs]
            score = (f"mIoU {_ms([x['miou'] for x in m])}, pixel acc "
                     f"{_ms([x['pixel_acc'] for x in m])}" if aux == "depth" else
                     f"abs err {_ms([x['abs_err'] for x in m])} m, RMSE "
                     f"{_ms([x['rmse'] for x in m])} m")
            lines.append(f"| {100 * ratio:.0f} % | {name} | ~{both} (seed 0) | {score} |")
    return lines


def _pseudo_table(study: Study) -> list[str]:
    lines = [f"| pseudo-labels ({100 * study.sweep_ratio:.0f} % seg labels) | coverage | "
             "kept-pixel accuracy | lowest per-class coverage | student mIoU | mIoU gain vs UMMT "
             "| Δm vs UMMT (%) |",
             "|---|---|---|---|---|---|---|"]
    rows = [(f"τ = {tau}", f"ps_tau{tau}") for tau in TAUS]
    rows.append(("per-class (min(0.9, class median))", "ps_per_class"))
    for name, tag in rows:
        runs = _students(study, study.sweep_ratio, tag)
        if not runs:
            continue
        ps = [r["pseudo"] for r in runs.values()]
        worst = []  # the worst-served predicted class: where a global tau starves rare classes
        for p in ps:
            pcc = [v for v in (p.get("per_class_coverage") or {}).values() if v is not None]
            if pcc:
                worst.append(min(pcc))
        gains, dms = _paired(study, study.sweep_ratio, tag)
        lines.append(
            f"| {name} | {_ms([p['coverage'] for p in ps])} | "
            f"{_ms([p.get('kept_accuracy', float('nan')) for p in ps])} | {_ms(worst)} | "
            f"{_ms([flatten(r['val'])['miou'] for r in runs.values()])} | "
            f"{_ms(gains, '+.3f')} | {_ms(dms, '+.1f')} |")
    pd = _students(study, study.sweep_ratio, "pd")
    if pd:
        p = [r["pseudo"] for r in pd.values()]
        lines.append(f"| reverse: pseudo-depth (flip-consistent within 5 %) | "
                     f"{_ms([x['coverage'] for x in p])} | rel err "
                     f"{_ms([x.get('kept_rel_err', float('nan')) for x in p])} | – | "
                     f"{_ms([flatten(r['val'])['miou'] for r in pd.values()])} | "
                     f"{_ms(_paired(study, study.sweep_ratio, 'pd')[0], '+.3f')} | "
                     f"{_ms(_paired(study, study.sweep_ratio, 'pd')[1], '+.1f')} |")
    return lines


def _verdict(gains: list[float]) -> str:
    if not gains:
        return "not run"
    wins = sum(g > 0 for g in gains)
    mean = float(np.mean(gains))
    sd = float(np.std(gains, ddof=1)) if len(gains) > 1 else float("nan")
    clear = len(gains) > 1 and abs(mean) > 2 * sd / math.sqrt(len(gains))
    word = ("better" if mean > 0 else "worse") if clear else "not distinguishable from UMMT"
    return (f"mIoU {mean:+.3f} (paired over {len(gains)} seeds, std {sd:.3f}; better on "
            f"{wins}/{len(gains)} seeds): {word}")


def _reading(study: Study) -> list[str]:
    out = []
    for ratio in study.ratios:
        for name, tag in ARMS[1:]:
            gains, dms = _paired(study, ratio, tag)
            if gains:
                out.append(f"- {100 * ratio:.0f} % seg labels, {name}: {_verdict(gains)}; "
                           f"Δm {np.mean(dms):+.1f} %.")
    for ratio in study.ratios:
        t = [flatten(r["val"])["miou"] for s in study.seeds
             if (r := study.results.get(f"s{s}/r{ratio}/teacher_depth", {})).get("val")]
        u = [flatten(r["val"])["miou"] for r in _students(study, ratio, "ummt").values()]
        if t and u:
            out.append(f"- {100 * ratio:.0f} % seg labels: the RGB+depth teacher reaches mIoU "
                       f"{np.mean(t):.3f} on held-out rooms (with their depth), the RGB student "
                       f"with the same labels {np.mean(u):.3f}.")
    main = _students(study, study.sweep_ratio, f"ps_tau{MAIN_TAU}")
    if main:
        cov = float(np.mean([r["pseudo"]["coverage"] for r in main.values()]))
        line = (f"- At τ = {MAIN_TAU} ({100 * study.sweep_ratio:.0f} % labels) the teachers "
                f"kept {100 * cov:.2f} % of the pseudo-labelled pixels.")
        if cov < 0.01:
            line += (" At this training budget they are almost never that confident, so "
                     "UMMT-PS trains on (almost) the same labels as UMMT: those rows test "
                     "nothing, in either direction. The looser thresholds and the per-class "
                     "mode are where pseudo-labels actually enter training.")
        out.append(line)
    for name, tag in [(f"τ = {tau}", f"ps_tau{tau}") for tau in TAUS] + [
            ("per-class", "ps_per_class")]:
        gains, _ = _paired(study, study.sweep_ratio, tag)
        if gains and tag != f"ps_tau{MAIN_TAU}":
            out.append(f"- {100 * study.sweep_ratio:.0f} % seg labels, pseudo-labels {name}: "
                       f"{_verdict(gains)}.")
    out.append("- \"better\"/\"worse\" means the mean paired difference exceeds two standard "
               "errors; otherwise the seeds do not separate the arms.")
    return out


def write_report(study: Study, finished: bool = False) -> None:
    units = [r for r in study.results.values()]
    wall = sum(r.get("wall_s", 0.0) + r.get("pseudo_s", 0.0) for r in units)
    cpu = sum(r.get("cpu_s", 0.0) for r in units)
    p = study.plan
    cmd = COMMAND.format(seeds=len(study.seeds), scale=p.scale)
    if study.out != Path(DEFAULT_OUT):
        cmd += f" --out {study.out}"
    if study.report != Path(DEFAULT_REPORT):
        cmd += f" --report {study.report}"
    if study.config_path:
        cmd += f" --config {study.config_path}"
    steps_student = [r["steps"] for r in units if r["kind"] == "student"]
    steps_teacher = [r["steps"] for r in units if r["kind"] == "teacher" and "steps" in r]
    lines = [
        "# Imbalanced labels: teacher pseudo-labels vs scarce labels alone",
        "",
        "METHOD.md A on the procedural RGB-D world (`mtl_training/data/sources/synthetic.py`: "
        "colour never identifies the class, geometry does). Produced by",
        "",
        "```",
        f"nice -n 10 .venv/bin/{cmd}",
        "```",
        "",
        f"Status: {'complete' if finished else PARTIAL}"
        f"; {len(units)} runs finished, {wall / 60:.1f} min of run time "
        f"({cpu / 60:.1f} min CPU), one torch thread, on `{platform.machine()}` "
        f"({os.cpu_count()} cores shared with other work), torch {torch.__version__}, "
        f"Python {sys.version.split()[0]}.",
        "",
        *_dataset_setup(study),
        "## Setup" + (" (of the synthetic study; the dataset run above replaces its data, model "
                      "and schedule)" if study.base is not None else ""),
        f"- World seeds {study.seeds} (a seed changes the rooms, which frames keep which labels, "
        "and the initialisation); mean ± sample std over seeds, `n=` where fewer finished.",
        f"- {p.train_frames} training frames rendered at {p.render[0]}x{p.render[1]}, network "
        f"input {p.size[0]}x{p.size[1]}; {p.val_frames} held-out rooms, fully labelled, score "
        "every run (last epoch: no checkpoint is chosen on them).",
        f"- Labels: depth kept on {100 * DEPTH_FRACTION:.0f} % of frames, segmentation on 5 / 10 "
        "/ 50 %, drawn independently (reproducible from the seed, nested across ratios).",
        f"- Student: ResNet-18 encoder, U-Net decoders (16 channels, 1 conv per block), CE + 1.0 "
        f"x L1 depth, Adam {p.lr}, batch {p.batch_size}, {p.student_epochs} epochs "
        f"({min(steps_student, default=0)}-{max(steps_student, default=0)} steps), no "
        "pretraining.",
        f"- Teachers: RGB branch + auxiliary branch (both ResNet-18), fused at all 5 scales, "
        f"trained on the frames with both labels only (repeated to {p.teacher_epoch} samples per "
        f"epoch), {p.teacher_epochs} epochs ({min(steps_teacher, default=0)}-"
        f"{max(steps_teacher, default=0)} steps). Pseudo-labels from the last epoch.",
        "- UMMT-PS: pseudo-segmentation on frames with depth but no segmentation label "
        "(confidence >= τ, else ignored). UMMT-PD: pseudo-depth on frames with segmentation but "
        "no depth (kept where the prediction and the prediction on the mirrored frame agree "
        "within 5 %). Ground truth wins where both exist; pseudo weight 1.",
        f"- Δm = mean relative change over {', '.join(DELTA_KEYS)} against UMMT of the same "
        "seed (higher is better), METHOD.md B.",
        "",
        "## Students",
        "",
        *_main_table(study),
        "",
        "## Teachers (scored with their auxiliary input on the held-out rooms)",
        "",
        *_teacher_table(study),
        "",
        f"## Pseudo-label quality vs quantity ({100 * study.sweep_ratio:.0f} % segmentation "
        "labels)",
        "",
        "Coverage = share of pixels of the pseudo-labelled frames that keep a label; kept-pixel "
        "accuracy = agreement of kept pixels with the held-back ground truth (never used in "
        "training).",
        "",
        *_pseudo_table(study),
        "",
        "## Reading (generated from the numbers above)",
        "",
        *_reading(study),
        "",
    ]
    write_text_atomic(study.report, "\n".join(lines))


def _dataset_setup(study: Study) -> list[str]:
    """The set-up of a --config run (its dataset, label split, model, schedule)."""
    if study.base is None or study.dataset is None:
        return []
    b = study.base
    d, m, t = b.data, b.model, b.train
    teacher = b.for_stage("teacher").train
    return [
        "## Dataset run",
        f"- Config `{study.config_path}`: `{d.name}` at {d.root}, "
        f"{len(study.dataset.train)} training frames, {len(study.dataset.val)} validation frames "
        "(held out of training; every run is scored on them at its last epoch; the test split "
        "is never read: score it with `mtl-train evaluate <run> --split test`).",
        f"- Labels (data.seed {d.seed}): segmentation on {100 * study.sweep_ratio:.1f} % of the "
        f"training frames, {study.both_labels(study.sweep_ratio)} with both labels (the "
        "teacher's set); seeds vary train.seed only.",
        f"- Network input {d.height}x{d.width}, {m.num_classes} classes, {m.encoder}, decoder "
        f"{m.decoder_channels} channels x {m.decoder_convs}; students {t.epochs} epochs, "
        f"teachers {teacher.epochs}; Adam {t.lr}, batch {t.batch_size}.",
        *([] if study.pd_frames else [
            "- UMMT-PD not run: every training frame with segmentation also keeps depth, so "
            "there is no depth to pseudo-label."]),
        ""]


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment imbalance`: run (or continue) the study, rewrite its page."""
    if args.seeds < 1 or args.scale <= 0:
        raise UserError("--seeds must be >= 1 and --scale > 0")
    torch.set_num_threads(1)
    config = getattr(args, "config", None)
    base = load_config(config, getattr(args, "set", None) or []) if config else None
    tag = f"_{Path(config).stem}" if config else ""  # a dataset run never overwrites the
    out = Path(args.out or DEFAULT_OUT + tag)  # synthetic study's page or runs
    out.mkdir(parents=True, exist_ok=True)
    report = Path(args.report or DEFAULT_REPORT.replace(".md", f"{tag}.md"))
    study = Study(out, report, list(range(args.seeds)), Plan(scale=args.scale), base,
                  str(config) if config else None)
    study.run()
    print(f"wrote {report} ({len(study.results)} runs in {out})")
