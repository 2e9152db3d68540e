"""`mtl-train experiment imbalance`: does a multi-modal teacher's pseudo-labelling beat training
on the scarce labels alone? (METHOD.md A, on the procedural world, or with `--config` on a
dataset config's frames and label split: config/train/nyuv2_imbalanced.yaml is Erkent's 500
depth / 250 segmentation NYUDv2 setting, cityscapes_300.yaml the 300-image one.)

With --config the ratio sweep is replaced by the config's own label split, seeds vary the
initialisation / order / augmentation (train.seed; the frames and label subsets stay those of
data.seed), and every run is scored on the config's validation split (never its test split).

Arms, per seed (the default --seeds 5), in priority order:
  UMMT          RGB student on the imbalanced ground truth, missing labels masked.
  UMMT-PS       + pseudo-segmentation from a depth->seg teacher (tau 0.9) on frames with depth
                only.
  UMMT-PD       + pseudo-depth from a seg->depth teacher on frames with segmentation only, kept
                by the calibrated filter (pseudo.depth_filter=calibrated, pseudo/thresholds.py;
                the flip rule's coverage and error are recorded beside it; where it keeps
                nothing, `experiment pseudo_depth` trains on pseudo-depth that is kept).
  XTC           UMMT + the label-free cross-task consistency term (METHOD.md B).
  UMMT-PS + XTC the combined method: consistency on pseudo-labelled and unlabelled frames too.
on the 10 % split; UMMT and UMMT-PS on the paper's count split (500 frames with depth, 250 of
them with segmentation, x --scale); UMMT-PS with the teacher's depth sensor noise x0 and x3
(x1 is UMMT-PS itself); the tau sweep (0.7, 0.8, 0.95, per-class); and UMMT / UMMT-PS /
UMMT-PD at 5 % and 50 %. Every comparison is read by mtl_training/stats.py's one rule (paired
over seeds, 95 % intervals, Holm-corrected per table).

Every student gets the same optimisation budget; metrics are the last epoch's on held-out rooms
(no checkpoint picked on them). A seed changes the world, the label subsets and the init. Work
runs in priority order (all seeds of one step before the next), appends one line per finished
unit to <out>/results.jsonl, skips units already there when run again, and rewrites the report
after every unit, so an interrupted study still leaves an honest page marked INCOMPLETE.

--jobs N runs N units at a time in N processes of one torch thread each (a 2-core CPU halves
the study's wall time; a GPU workstation runs as many as its memory holds). A unit's result does
not depend on which process ran it or when: each renders its own copy of the seed's world, and a
teacher shared by several arms is trained once, under a file lock, by whichever process needs it
first (the others wait for it and load it).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import delta_m, flatten
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import host
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
from mtl_training.stats import MIN_SEEDS, Comparison, family_markdown, paired_by_seed
from mtl_training.trainer import Trainer

log = logging.getLogger("mtl_training.apps.experiments.imbalance")

RATIOS = (0.05, 0.10, 0.50)
SWEEP_RATIO = 0.10
TAUS = (0.7, 0.8, 0.9, 0.95)
MAIN_TAU = 0.9
DEPTH_FRACTION = 0.6
PAPER_COUNTS = (500, 250)  # Erkent's NYUDv2 ablation: frames with depth, of which with seg
NOISE_FACTORS = (0.0, 1.0, 3.0)  # depth-sensor noise of the teacher's world (1 = the standard)
XTC_LAMBDA = 0.01  # consistency weight (METHOD.md B, the paper's Cityscapes value)
DELTA_KEYS = ("miou", "pixel_acc", "abs_err", "rel_err")  # Delta_m over these (METHOD.md B)
COMMAND = "mtl-train experiment imbalance --seeds {seeds} --scale {scale}"
DEFAULT_OUT = "runs/imbalance"
DEFAULT_REPORT = "docs/results/imbalance.md"
INCOMPLETE = ("INCOMPLETE: {missing} of {planned} runs missing (the study was still running or "
              "was stopped; rerun the command to finish them)")
CAL_OFFSET = 2 * SyntheticSource.VAL_OFFSET  # calibration rooms: never trained on, never scored


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

    @property
    def counts(self) -> tuple[int, int]:
        """The paper's count split (frames with depth, with segmentation), scaled."""
        depth = max(40, round(PAPER_COUNTS[0] * self.scale))
        return depth, max(8, round(depth * PAPER_COUNTS[1] / PAPER_COUNTS[0]))


@dataclass(frozen=True)
class Split:
    """Which training frames keep which labels: a fraction sweep point or the count split."""

    key: str  # run-folder part: "r0.1" (fraction) or "n500_250" (counts)
    label: str  # table label
    seg_fraction: float = 1.0
    depth_fraction: float = DEPTH_FRACTION
    seg_count: int | None = None
    depth_count: int | None = None
    frames: int | None = None  # training frames of its world (None: the plan's)

    @staticmethod
    def fraction(ratio: float) -> Split:
        return Split(f"r{ratio}", f"{100 * ratio:.0f} %", seg_fraction=ratio)

    @staticmethod
    def counts(depth: int, seg: int) -> Split:
        return Split(f"n{depth}_{seg}", f"{seg} of {depth}", depth_fraction=1.0,
                     seg_count=seg, depth_count=depth, frames=depth)

    @property
    def pd_frames(self) -> bool:
        """Whether some frames keep segmentation but not depth (UMMT-PD's input)."""
        return self.depth_count is None and self.depth_fraction < 1.0


def _config(plan: Plan, seed: int, split: Split, out_dir: Path, arch: str = "student",
            aux: str = "depth", xtc: bool = False) -> ExperimentConfig:
    cfg = ExperimentConfig()
    d = cfg.data
    d.seed, d.train_frames, d.val_frames = seed, split.frames or plan.train_frames, plan.val_frames
    d.render_height, d.render_width = plan.render
    d.height, d.width = plan.size
    d.seg_fraction, d.depth_fraction = split.seg_fraction, split.depth_fraction
    d.seg_count, d.depth_count = split.seg_count, split.depth_count
    cfg.model = ModelConfig(arch=arch, encoder="resnet18", num_classes=7, decoder_channels=16,
                            decoder_convs=1, aux_input=aux)
    _xtc(cfg, xtc)
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


def _xtc(cfg: ExperimentConfig, on: bool) -> None:
    """Cross-task consistency (METHOD.md B) on every training frame: its term needs no label,
    so it also trains on the pseudo-labelled frames and on the frames without any label."""
    lo = cfg.loss
    lo.xtc = on
    if on:
        lo.xtc_mode, lo.xtc_lambda_seg, lo.xtc_lambda_depth = "consistency", XTC_LAMBDA, XTC_LAMBDA
        lo.xtc_channels = cfg.model.decoder_channels


class _World:
    """Per (seed, frames, sensor noise): the rendered frames, shared by every run that uses
    them. The held-out and calibration rooms are always seen through the standard sensor, so
    every student is scored on the same frames whatever its teacher's sensor was."""

    def __init__(self, plan: Plan, seed: int, frames: int, noise: float = 1.0) -> None:
        standard = WorldConfig(height=plan.render[0], width=plan.render[1], max_depth=10.0)
        world = standard if noise == 1.0 else standard.with_sensor_noise(noise)
        self.plan, self.seed = plan, seed
        self.train = SyntheticSource(seed, 0, frames, world)
        self.val = SyntheticSource(seed, SyntheticSource.VAL_OFFSET, plan.val_frames, standard)
        self.calibration = SyntheticSource(seed, CAL_OFFSET, plan.val_frames, standard)

    def datasets(self, cfg: DataConfig, pseudo: PseudoLabels | None = None,
                 stats: InputStats = IMAGENET_STATS
                 ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        """What `build_datasets(cfg)` gives, over this seed's already rendered frames (images
        normalised with `stats`, the encoder's)."""
        return datasets_from_sources(cfg, (self.train, self.val), pseudo, stats=stats)

    def calibration_set(self, cfg: DataConfig) -> MultiTaskDataset:
        """Fully labelled rooms the calibrated pseudo-depth filter reads its threshold off."""
        return MultiTaskDataset(self.calibration, (cfg.height, cfg.width), False, seed=cfg.seed)


class _Dataset:
    """--config mode: the config's (train, val) sources, opened once and shared by every run."""

    def __init__(self, base: ExperimentConfig) -> None:
        self.train, self.val = build_sources(base.data)

    def datasets(self, cfg: DataConfig, pseudo: PseudoLabels | None = None,
                 stats: InputStats = IMAGENET_STATS
                 ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        return datasets_from_sources(cfg, (self.train, self.val), pseudo, stats=stats)

    def calibration_set(self, cfg: DataConfig) -> MultiTaskDataset:
        """The validation split (held out of training), as `mtl-train pseudo-label` uses it."""
        return datasets_from_sources(cfg, (self.train, self.val))[1]


def _dataset_config(base: ExperimentConfig, seed: int, out_dir: Path, arch: str = "student",
                    aux: str = "depth", xtc: bool = False) -> ExperimentConfig:
    """A run of the study on a dataset config: its stage, the study's arch and seed."""
    cfg = base.for_stage("teacher" if arch == "teacher" else "student")
    cfg.model.arch, cfg.model.aux_input = arch, aux
    cfg.data.pseudo_labels = None
    if arch != "teacher":
        _xtc(cfg, xtc)
    cfg.train.out_dir, cfg.train.seed = str(out_dir), seed
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class Arm:
    """One student arm: its run-folder tag, table label, teacher direction and options."""

    tag: str
    label: str
    aux: str | None = None  # None: no teacher (UMMT, XTC); "depth": UMMT-PS; "seg": UMMT-PD
    tau: float = MAIN_TAU
    mode: str = "global"  # UMMT-PS: global | per_class; UMMT-PD: calibrated | flip
    xtc: bool = False
    noise: float = 1.0  # sensor noise of the teacher's world (UMMT-PS only)
    max_rel_err: float = 0.1  # UMMT-PD calibrated: kept calibration pixels' mean rel err


UMMT = Arm("ummt", "UMMT")
PS = Arm(f"ps_tau{MAIN_TAU}", f"UMMT-PS (τ={MAIN_TAU})", "depth")
PD = Arm("pd_cal", "UMMT-PD (calibrated filter)", "seg", mode="calibrated")
XTC = Arm("xtc", "XTC", xtc=True)
PS_XTC = Arm("ps_xtc", "UMMT-PS + XTC", "depth", xtc=True)
TAU_ARMS = tuple(PS if t == MAIN_TAU else Arm(f"ps_tau{t}", f"UMMT-PS (τ={t})", "depth", t)
                 for t in TAUS)
PER_CLASS = Arm("ps_per_class", "UMMT-PS (per-class τ)", "depth", mode="per_class")
NOISE_ARMS = tuple(PS if f == 1.0 else Arm(f"ps_noise{f:g}", f"UMMT-PS (teacher noise x{f:g})",
                                           "depth", noise=f) for f in NOISE_FACTORS)


class Study:
    def __init__(self, out: Path, report: Path, seeds: list[int], plan: Plan,
                 base: ExperimentConfig | None = None, config: str | None = None) -> None:
        self.out, self.report, self.seeds, self.plan = out, report, seeds, plan
        self.base, self.config_path = base, config
        self.dataset: _Dataset | None = None
        self.splits: tuple[Split, ...] = tuple(Split.fraction(r) for r in RATIOS)
        self.sweep = Split.fraction(SWEEP_RATIO)
        self.count_split: Split | None = Split.counts(*plan.counts)
        self.pd_config = True
        if base is not None:  # the config's own label split replaces the sweep and the counts
            self.dataset = _Dataset(base)
            keep_seg, keep_depth = label_subsets(base.data, len(self.dataset.train))
            ratio = float(keep_seg.mean()) if keep_seg.size else 0.0
            self.sweep = Split(f"r{ratio}", f"{100 * ratio:.1f} % (config)", ratio)
            self.splits, self.count_split = (self.sweep,), None
            # UMMT-PD needs frames with segmentation but no depth (none in Erkent's split)
            self.pd_config = bool((keep_seg & ~keep_depth).any())
        self.results_path = out / "results.jsonl"
        self.invocations_path = out / "invocations.json"
        self.results: dict[str, dict[str, Any]] = {}
        self.reload()
        self.worlds: dict[tuple[int, int, float], _World] = {}
        self.caches: dict[str, dict] = {}

    def reload(self) -> None:
        """Read every finished unit from results.jsonl (other processes of a --jobs run append
        to it too)."""
        if not self.results_path.is_file():
            return
        for line in self.results_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of an interrupted run
            self.results[rec["key"]] = rec

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between the processes of a --jobs run (flock on <out>/<name>.lock;
        released by the kernel if its holder dies, so a killed study never leaves one behind)."""
        path = self.out / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def invocations(self) -> list[dict[str, Any]]:
        """One entry per `mtl-train experiment imbalance` run on this folder: start, jobs,
        elapsed wall time, units finished (what the page's wall time is summed from)."""
        try:
            data = json.loads(self.invocations_path.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return data if isinstance(data, list) else []

    def page(self) -> None:
        """(Re)write the study's results page from every unit finished so far."""
        write_report(self)

    def has_pd(self, split: Split) -> bool:
        return split.pd_frames and self.pd_config

    def world(self, seed: int, split: Split | None = None, noise: float = 1.0
              ) -> _World | _Dataset:
        if self.dataset is not None:
            return self.dataset
        frames = (split.frames if split is not None else None) or self.plan.train_frames
        key = (seed, frames, noise)
        if key not in self.worlds:
            self.worlds[key] = _World(self.plan, seed, frames, noise)
        return self.worlds[key]

    def config(self, seed: int, split: Split, out_dir: Path, arch: str = "student",
               aux: str = "depth", xtc: bool = False) -> ExperimentConfig:
        if self.base is not None:
            return _dataset_config(self.base, seed, out_dir, arch, aux, xtc)
        return _config(self.plan, seed, split, out_dir, arch, aux, xtc)

    def student_config(self, seed: int, split: Split, run_dir: Path, arm: Arm
                       ) -> ExperimentConfig:
        """A student arm's run config (a study whose arms differ in network overrides this)."""
        return self.config(seed, split, run_dir, xtc=arm.xtc)

    def both_labels(self, split: Split) -> int:
        """Training frames keeping both labels (seed 0's subsets): the teacher's set."""
        if self.base is not None and self.dataset is not None:
            seg, depth = label_subsets(self.base.data, len(self.dataset.train))
            return int((seg & depth).sum())
        n = split.frames or self.plan.train_frames
        return int((choose_subset(n, split.seg_fraction, split.seg_count, seed=0, salt=1)
                    & choose_subset(n, split.depth_fraction, split.depth_count, seed=0, salt=2)
                    ).sum())

    # -- what the study runs, in priority order ------------------------------------------------
    def steps(self) -> list[tuple[Split, Arm]]:
        """Each step runs for every seed before the next: the headline rows first."""
        sweep = self.sweep
        steps = [(sweep, UMMT), (sweep, PS)]
        if self.has_pd(sweep):
            steps.append((sweep, PD))
        steps += [(sweep, XTC), (sweep, PS_XTC)]  # the combined method and each alone
        if self.count_split is not None:
            steps += [(self.count_split, UMMT), (self.count_split, PS)]
        if self.dataset is None:  # the sensor-noise arms need the procedural world
            steps += [(sweep, a) for a in NOISE_ARMS if a is not PS]
        steps += [(sweep, a) for a in (*TAU_ARMS, PER_CLASS) if a is not PS]
        for split in self.splits:
            if split != sweep:
                steps += [(split, UMMT), (split, PS)]
                if self.has_pd(split):
                    steps.append((split, PD))
        return steps

    def planned(self) -> list[str]:
        return [f"s{seed}/{split.key}/{arm.tag}" for split, arm in self.steps()
                for seed in self.seeds]

    def status(self) -> str:
        planned = self.planned()
        missing = sum(k not in self.results for k in planned)
        return "complete" if not missing else INCOMPLETE.format(missing=missing,
                                                                planned=len(planned))

    # -- units ---------------------------------------------------------------------------------
    def _record(self, rec: dict[str, Any]) -> None:
        """Append one finished unit and rewrite the page from every process's units; under the
        results lock, so no page is ever written from an older set than one before it."""
        with self._lock("results"):
            with self.results_path.open("a") as f:
                f.write(json.dumps(rec, default=float) + "\n")
            self.reload()
            self.results[rec["key"]] = rec
            self.page()

    def _train(self, cfg: ExperimentConfig, world: _World | _Dataset,
               pseudo: PseudoLabels | None = None) -> dict[str, Any]:
        run_dir = Path(cfg.train.out_dir)
        if run_dir.exists():  # a unit interrupted mid-training starts over
            shutil.rmtree(run_dir)
        t0, c0 = time.time(), time.process_time()
        stats = encoder_input_stats(cfg.model.encoder)  # the normalisation its encoder expects
        trainer = Trainer(cfg, datasets=world.datasets(cfg.data, pseudo, stats))
        trainer.fit()
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        return {"val": last["val"], "steps": last["step"], "wall_s": time.time() - t0,
                "cpu_s": time.process_time() - c0}

    def student(self, key: str, seed: int, split: Split, arm: Arm,
                pseudo: PseudoLabels | None = None, extra: dict[str, Any] | None = None) -> None:
        run_dir = self.out / key
        cfg = self.student_config(seed, split, run_dir, arm)
        res = self._train(cfg, self.world(seed, split), pseudo)
        for ckpt in run_dir.glob("*.pt"):  # students are scored; their weights are not needed
            ckpt.unlink()
        self._record({"key": key, "kind": "student", "seed": seed, "split": split.key,
                      "arm": arm.tag, "xtc": arm.xtc, **(extra or {}), **res})

    def teacher(self, seed: int, split: Split, aux: str, noise: float = 1.0) -> Path | None:
        """The teacher's run dir, trained once per (seed, split, direction, sensor noise); None
        if it cannot be trained (no frame keeps both labels at a tiny --scale)."""
        key = f"s{seed}/{split.key}/teacher_{aux}" + ("" if noise == 1.0 else f"_noise{noise:g}")
        with self._lock(key):  # another process of a --jobs run may be training this one
            self.reload()
            return self._teacher(key, seed, split, aux, noise)

    def _teacher(self, key: str, seed: int, split: Split, aux: str, noise: float) -> Path | None:
        run_dir = self.out / key
        if key in self.results and (run_dir / "last.pt").is_file():
            return run_dir
        if self.results.get(key, {}).get("skipped"):
            return None
        rec = {"key": key, "kind": "teacher", "aux": aux, "seed": seed, "split": split.key,
               "noise": noise}
        try:
            res = self._train(self.config(seed, split, run_dir, "teacher", aux),
                              self.world(seed, split, noise))
        except ValueError as exc:
            if "no training frame keeps" not in str(exc):
                raise
            self._record({**rec, "skipped": str(exc)})
            return None
        (run_dir / "best.pt").unlink(missing_ok=True)  # pseudo-labels use the last epoch
        self._record({**rec, **res})
        return run_dir

    def pseudo_student(self, seed: int, split: Split, arm: Arm) -> None:
        key = f"s{seed}/{split.key}/{arm.tag}"
        if key in self.results or arm.aux is None:
            return
        teacher_dir = self.teacher(seed, split, arm.aux, arm.noise)
        if teacher_dir is None:
            return
        teacher = load_teacher(teacher_dir, "last")
        data = self.config(seed, split, self.out / "pseudo" / key).data
        # the teacher labels the frames its own (possibly noisier) sensor saw
        world = self.world(seed, split, arm.noise)
        train_set, _ = world.datasets(data)
        t0 = time.time()
        cache = self.caches.setdefault(str(teacher_dir), {})
        extra: dict[str, Any] = {"tau": arm.tau if arm.aux == "depth" else None,
                                 "mode": arm.mode, "noise": arm.noise}
        calibration: MultiTaskDataset | None = None
        if arm.aux == "seg" and arm.mode == "flip":
            cfg = PseudoLabelConfig(depth_filter="flip", batch_size=16)
        elif arm.aux == "seg":  # the flip rule's numbers too, to set the calibrated ones against
            flip = run_pseudo_label(teacher, train_set, self.out / "pseudo" / f"{key}_flip",
                                    PseudoLabelConfig(batch_size=16), overwrite=True,
                                    progress=False, cache=cache)
            extra["pseudo_flip"] = flip
            cfg = PseudoLabelConfig(depth_filter="calibrated", batch_size=16,
                                    depth_max_rel_err=arm.max_rel_err)
            calibration = world.calibration_set(data)
        else:
            cfg = PseudoLabelConfig(tau=arm.tau, mode=arm.mode, batch_size=16)
        pseudo_dir = self.out / "pseudo" / key  # outside the student's run dir (rewritten)
        extra["pseudo"] = run_pseudo_label(teacher, train_set, pseudo_dir, cfg, overwrite=True,
                                           progress=False, cache=cache, calibration=calibration)
        extra["pseudo_s"] = time.time() - t0
        self.student(key, seed, split, arm, PseudoLabelStore(pseudo_dir), extra)

    def run_unit(self, seed: int, split: Split, arm: Arm) -> None:
        if arm.aux is not None:
            self.pseudo_student(seed, split, arm)
        elif (key := f"s{seed}/{split.key}/{arm.tag}") not in self.results:
            self.student(key, seed, split, arm)

    def pending(self, steps: list[tuple[Split, Arm]] | None = None
                ) -> list[tuple[int, Split, Arm]]:
        """Units not finished yet, in priority order: each step for every seed before the
        next step."""
        return [(seed, split, arm) for split, arm in (self.steps() if steps is None else steps)
                for seed in self.seeds if f"s{seed}/{split.key}/{arm.tag}" not in self.results]

    def run(self, jobs: int = 1, steps: list[tuple[Split, Arm]] | None = None,
            state: dict[str, Any] | None = None) -> None:
        """Run the pending units, `jobs` at a time (state: what a worker process needs to
        rebuild this Study; see _worker_init)."""
        todo = self.pending(steps)
        if not todo:
            self.page()
            return
        started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.time()
        runs = self.invocations()
        entry = {"started": started, "jobs": jobs, "elapsed_s": 0.0, "units": 0}
        runs.append(entry)

        def progress(units: int) -> None:
            entry.update(elapsed_s=round(time.time() - t0, 1), units=units)
            write_text_atomic(self.invocations_path, json.dumps(runs, indent=1) + "\n")

        progress(0)
        if jobs <= 1 or len(todo) <= 1:
            for n, (seed, split, arm) in enumerate(todo, 1):
                log.info("imbalance: %s %s seed %d", split.key, arm.tag, seed)
                self.run_unit(seed, split, arm)
                progress(n)
        else:
            self._run_parallel(todo, jobs, state or {}, progress)
        self.reload()
        self.page()

    def _run_parallel(self, todo: list[tuple[int, Split, Arm]], jobs: int,
                      state: dict[str, Any], progress: Callable[[int], None]) -> None:
        """Units go to a pool of `jobs` fresh processes in priority order (FIFO); the first
        failure stops the study (finished units stay recorded)."""
        state = {"out": str(self.out), "report": str(self.report), "seeds": self.seeds,
                 "plan": self.plan, "cls": type(self), **state}
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(state,)) as pool:
            futures: set[Future] = {pool.submit(_worker_unit, *unit) for unit in todo}
            done_n = 0
            try:
                while futures:
                    done, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        log.info("imbalance: finished %s", fut.result())
                        done_n += 1
                    progress(done_n)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


_WORKER: Study | None = None


def _worker_init(state: dict[str, Any]) -> None:
    """A --jobs process: one torch thread, its own Study on the shared folder."""
    global _WORKER
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    config = state.get("config")
    base = load_config(config, state.get("set") or []) if config else None
    _WORKER = state.get("cls", Study)(Path(state["out"]), Path(state["report"]),
                                      list(state["seeds"]), state["plan"], base, config)


def _worker_unit(seed: int, split: Split, arm: Arm) -> str:
    assert _WORKER is not None, "worker not initialised"
    _WORKER.reload()  # units the other processes finished (shared teachers among them)
    _WORKER.run_unit(seed, split, arm)
    return f"s{seed}/{split.key}/{arm.tag}"


# -- report ----------------------------------------------------------------------------------
def ms(values: list[float], fmt: str = ".3f") -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:{fmt}} (n=1)"
    return f"{np.mean(vals):{fmt}} ± {np.std(vals, ddof=1):{fmt.lstrip('+')}}" + (
        f" (n={len(vals)})" if len(vals) < MIN_SEEDS else "")


def students(study: Study, split: Split, tag: str) -> dict[int, dict[str, Any]]:
    return {s: study.results[k] for s in study.seeds
            if (k := f"s{s}/{split.key}/{tag}") in study.results}


# (key, metric label, higher is better); Δm is the treatment's against the reference's run
COMPARED = (("miou", "mIoU", True), ("abs_err", "abs err (m)", False), ("delta_m", "Δm (%)", True))
FMT = {"mIoU": "+.3f", "abs err (m)": "+.3f", "Δm (%)": "+.1f"}


def compare(study: Study, split: Split, treat: Arm, ref: Arm,
            metrics: tuple[tuple[str, str, bool], ...] = COMPARED) -> list[Comparison | None]:
    """`treat` against `ref` on the same seeds and split: one Comparison per metric."""
    a, b = students(study, split, treat.tag), students(study, split, ref.tag)
    va = {s: flatten(r["val"]) for s, r in a.items()}
    vb = {s: flatten(r["val"]) for s, r in b.items()}
    name = f"{treat.label} vs {ref.label}, {split.label} seg labels"
    out: list[Comparison | None] = []
    for key, label, hib in metrics:
        if key == "delta_m":
            common = set(va) & set(vb)
            t = {s: delta_m(va[s], vb[s], DELTA_KEYS) for s in common}
            out.append(paired_by_seed(name, label, t, dict.fromkeys(common, 0.0), hib))
        else:
            out.append(paired_by_seed(name, label, {s: v[key] for s, v in va.items()},
                                      {s: v[key] for s, v in vb.items()}, hib))
    return out


def dm_vs_ummt(study: Study, split: Split, tag: str) -> list[float]:
    base, arm = students(study, split, "ummt"), students(study, split, tag)
    return [delta_m(flatten(arm[s]["val"]), flatten(base[s]["val"]), DELTA_KEYS)
            for s in sorted(set(base) & set(arm))]


def main_table(study: Study, arms: tuple[Arm, ...] | None = None) -> list[str]:
    """Every student arm's held-out metrics per split (mean ± std over seeds), Δm vs UMMT."""
    lines = ["| seg labels | arm | mIoU | pixel acc | abs err (m) | rel err | RMSE (m) | δ<1.25 "
             "| Δm vs UMMT (%) |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [(split, arm) for split in (*study.splits, *filter(None, [study.count_split]))
            for arm in (arms or (UMMT, PS, PD, XTC, PS_XTC))]
    for split, arm in rows:
        runs = students(study, split, arm.tag)
        if not runs:
            continue
        m = [flatten(r["val"]) for r in runs.values()]
        dm = "0 (reference)" if arm is UMMT else ms(dm_vs_ummt(study, split, arm.tag), "+.1f")
        lines.append(
            f"| {split.label} | {arm.label} | {ms([x['miou'] for x in m])} | "
            f"{ms([x['pixel_acc'] for x in m])} | {ms([x['abs_err'] for x in m])} | "
            f"{ms([x['rel_err'] for x in m])} | {ms([x['rmse'] for x in m])} | "
            f"{ms([x['delta1'] for x in m])} | {dm} |")
    return lines


def teacher_table(study: Study) -> list[str]:
    lines = ["| seg labels | teacher | sensor noise | frames with both labels (train) | "
             "held-out score |", "|---|---|---|---|---|"]
    splits = (*study.splits, *filter(None, [study.count_split]))
    for split in splits:
        both = study.both_labels(split)
        for aux, name in (("depth", "RGB+depth → seg"), ("seg", "RGB+seg → depth")):
            for noise in NOISE_FACTORS:
                suffix = "" if noise == 1.0 else f"_noise{noise:g}"
                runs = [r for s in study.seeds if (r := study.results.get(
                    f"s{s}/{split.key}/teacher_{aux}{suffix}", {})).get("val")]
                if not runs:
                    continue
                m = [flatten(r["val"]) for r in runs]
                score = (f"mIoU {ms([x['miou'] for x in m])}, pixel acc "
                         f"{ms([x['pixel_acc'] for x in m])}" if aux == "depth" else
                         f"abs err {ms([x['abs_err'] for x in m])} m, RMSE "
                         f"{ms([x['rmse'] for x in m])} m")
                lines.append(f"| {split.label} | {name} | x{noise:g} | ~{both} (seed 0) | "
                             f"{score} |")
    return lines


def _pseudo_row(study: Study, split: Split, arm: Arm, name: str) -> str | None:
    runs = students(study, split, arm.tag)
    if not runs:
        return None
    ps = [r["pseudo"] for r in runs.values()]
    worst = []  # the worst-served predicted class: where a global tau starves rare classes
    for p in ps:
        pcc = [v for v in (p.get("per_class_coverage") or {}).values() if v is not None]
        if pcc:
            worst.append(min(pcc))
    return (f"| {name} | {ms([p['coverage'] for p in ps])} | "
            f"{ms([p.get('kept_accuracy', float('nan')) for p in ps])} | {ms(worst)} | "
            f"{ms([flatten(r['val'])['miou'] for r in runs.values()])} | "
            f"{ms(dm_vs_ummt(study, split, arm.tag), '+.1f')} |")


PSEUDO_HEADER = ["| pseudo-labels | coverage | kept-pixel accuracy | lowest per-class coverage "
                 "| student mIoU | Δm vs UMMT (%) |", "|---|---|---|---|---|---|"]


def _pseudo_table(study: Study) -> list[str]:
    rows = [_pseudo_row(study, study.sweep, a, f"τ = {a.tau}") for a in TAU_ARMS]
    rows.append(_pseudo_row(study, study.sweep, PER_CLASS, "per-class (min(0.9, class median))"))
    return PSEUDO_HEADER + [r for r in rows if r]


def _noise_table(study: Study) -> list[str]:
    rows = [_pseudo_row(study, study.sweep, a, f"teacher's depth noise x{a.noise:g}")
            for a in NOISE_ARMS]
    return PSEUDO_HEADER + [r for r in rows if r]


def _filter_table(study: Study) -> list[str]:
    """Flip agreement vs the calibrated filter on the same teacher's pseudo-depth."""
    lines = ["| seg labels | filter | coverage | kept-pixel rel err | kept-pixel δ<1.25 | "
             "threshold (flip disagreement) | calibration rooms: coverage, rel err |",
             "|---|---|---|---|---|---|---|"]
    for split in study.splits:
        runs = students(study, split, PD.tag)
        if not runs:
            continue
        for name, field in (("flip agreement within 5 %", "pseudo_flip"),
                            ("calibrated (rel err <= 0.1 on held-out rooms)", "pseudo")):
            ps = [r[field] for r in runs.values() if field in r]
            cal = [p["calibration"] for p in ps if "calibration" in p]
            lines.append(
                f"| {split.label} | {name} | {ms([p['coverage'] for p in ps])} | "
                f"{ms([p.get('kept_rel_err', float('nan')) for p in ps])} | "
                f"{ms([p.get('kept_delta1', float('nan')) for p in ps])} | "
                + (f"{ms([c['threshold'] for c in cal], '.4f')} | "
                   f"{ms([c['coverage'] for c in cal])}, {ms([c['rel_err'] for c in cal])} |"
                   if cal else "0.05 (fixed) | – |"))
    return lines


def families(study: Study) -> dict[str, list[Comparison | None]]:
    """The study's comparison tables, each one Holm family (section title -> comparisons)."""
    sweep = study.sweep
    main: list[Comparison | None] = []
    for split in (*study.splits, *filter(None, [study.count_split])):
        main += compare(study, split, PS, UMMT)
        if study.has_pd(split):
            main += compare(study, split, PD, UMMT)
    combined = [*compare(study, sweep, PS_XTC, UMMT), *compare(study, sweep, PS_XTC, PS),
                *compare(study, sweep, PS_XTC, XTC), *compare(study, sweep, XTC, UMMT)]
    miou = (COMPARED[0],)
    taus = [c for a in (*TAU_ARMS, PER_CLASS) for c in compare(study, sweep, a, UMMT, miou)]
    noise = [c for a in NOISE_ARMS for c in compare(study, sweep, a, UMMT, miou)]
    noise += compare(study, sweep, NOISE_ARMS[-1], NOISE_ARMS[0], miou)
    out = {"Pseudo-labels against UMMT (both directions; fraction sweep and count split)": main,
           "The combined method: UMMT-PS + XTC against each alone and UMMT": combined,
           f"Thresholds against UMMT ({sweep.label} seg labels)": taus}
    if study.dataset is None:
        out[f"Noisy privileged depth ({sweep.label} seg labels)"] = noise
    return out


def _reading(study: Study) -> list[str]:
    out = []
    for split in study.splits:
        t = [flatten(r["val"])["miou"] for s in study.seeds
             if (r := study.results.get(f"s{s}/{split.key}/teacher_depth", {})).get("val")]
        u = [flatten(r["val"])["miou"] for r in students(study, split, "ummt").values()]
        if t and u:
            out.append(f"- {split.label} seg labels: the RGB+depth teacher reaches mIoU "
                       f"{np.mean(t):.3f} on held-out rooms (with their depth), the RGB student "
                       f"with the same labels {np.mean(u):.3f}.")
    main = students(study, study.sweep, PS.tag)
    if main:
        cov = float(np.mean([r["pseudo"]["coverage"] for r in main.values()]))
        line = (f"- At τ = {MAIN_TAU} ({study.sweep.label} labels) the teachers kept "
                f"{100 * cov:.2f} % of the pseudo-labelled pixels.")
        if cov < 0.01:
            line += (" At this training budget they are almost never that confident, so "
                     "UMMT-PS trains on (almost) the same labels as UMMT: those rows test "
                     "nothing, in either direction; run a larger --scale.")
        out.append(line)
    out.append("- Every verdict above is the rule's (`mtl_training/stats.py`): \"better\"/"
               "\"worse\" only where the Holm-corrected p < 0.05 within its table; otherwise "
               "the seeds do not separate the arms, whatever the sign of the mean.")
    return out


def page_command(study: Study, template: str, default_out: str, default_report: str) -> str:
    """The command line that (re)produces a study's page: what its header shows."""
    cmd = template.format(seeds=len(study.seeds), scale=study.plan.scale)
    if (runs := study.invocations()) and int(runs[-1].get("jobs", 1)) > 1:
        cmd += f" --jobs {int(runs[-1]['jobs'])}"
    if study.out != Path(default_out):
        cmd += f" --out {study.out}"
    if study.report != Path(default_report):
        cmd += f" --report {study.report}"
    if study.config_path:
        cmd += f" --config {study.config_path}"
    return cmd


def wall_time(study: Study) -> str:
    """The page's wall-time and hardware sentence, summed from the finished units."""
    units = list(study.results.values())
    wall = sum(r.get("wall_s", 0.0) + r.get("pseudo_s", 0.0) for r in units)
    cpu = sum(r.get("cpu_s", 0.0) for r in units)
    return (f"Wall time and hardware: {len(units)} runs finished, {wall / 60:.1f} min of run "
            f"time ({cpu / 60:.1f} min CPU), one torch thread per run{elapsed(study)}, on "
            f"{host.describe()}.")


def run_block(study: Study, cmd: str) -> list[str]:
    """What every study page opens with: the command that made it, its status, its wall time."""
    return ["```", f"nice -n 10 .venv/bin/{cmd}", "```", "", f"Status: {study.status()}.", "",
            wall_time(study), ""]


def write_report(study: Study) -> None:
    units = list(study.results.values())
    p = study.plan
    cmd = page_command(study, COMMAND, DEFAULT_OUT, DEFAULT_REPORT)
    steps_student = [r["steps"] for r in units if r["kind"] == "student"]
    steps_teacher = [r["steps"] for r in units if r["kind"] == "teacher" and "steps" in r]
    depth_n, seg_n = p.counts
    sections: list[str] = []
    for title, comps in families(study).items():
        sections += [f"## {title}", "", *family_markdown(comps, FMT), ""]
    lines = [
        "# Imbalanced labels: teacher pseudo-labels vs scarce labels alone",
        "",
        "METHOD.md A on the procedural RGB-D world (`mtl_training/data/sources/synthetic.py`: "
        "colour never identifies the class, geometry does). Produced by",
        "",
        *run_block(study, cmd),
        *_dataset_setup(study),
        "## Setup" + (" (of the synthetic study; the dataset run above replaces its data, model "
                      "and schedule)" if study.base is not None else ""),
        f"- World seeds {study.seeds} (a seed changes the rooms, which frames keep which labels, "
        f"and the initialisation); mean ± sample std over seeds, `n=` where fewer than "
        f"{MIN_SEEDS} finished.",
        f"- {p.train_frames} training frames rendered at {p.render[0]}x{p.render[1]}, network "
        f"input {p.size[0]}x{p.size[1]}; {p.val_frames} held-out rooms, fully labelled, score "
        "every run (last epoch: no checkpoint is chosen on them).",
        f"- Fraction sweep: depth kept on {100 * DEPTH_FRACTION:.0f} % of frames, segmentation "
        "on 5 / 10 / 50 %, drawn independently (reproducible from the seed, nested across "
        f"ratios). Count split (Erkent's NYUDv2 ablation, scaled): {depth_n} frames, all with "
        f"depth, {seg_n} of them with segmentation (no frame for UMMT-PD).",
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
        "no depth, kept where the prediction's disagreement with its mirrored-frame prediction "
        "is below the threshold at which held-out calibration rooms (neither trained on nor "
        "scored) keep a mean relative error <= 0.1 (`pseudo.depth_filter=calibrated`): a "
        "constant prediction agrees with its mirror everywhere and passes the old 5 % flip rule, "
        "but its calibration error keeps nothing. Ground truth wins where both exist; pseudo "
        "weight 1.",
        f"- XTC: cross-task consistency (TTNets, λ = {XTC_LAMBDA} per task, consistency mode) "
        "on every training frame, pseudo-labelled and unlabelled ones included: its term needs "
        "no label. UMMT-PS + XTC uses the same pseudo-labels as UMMT-PS.",
        f"- Noisy privileged depth: the teacher (and its pseudo-labelling input) sees depth "
        f"through the synthetic sensor with its noise and dropouts scaled x{NOISE_FACTORS[0]:g} "
        f"/ x1 / x{NOISE_FACTORS[-1]:g} (`WorldConfig.with_sensor_noise`); RGB and labels are "
        "identical, and every student is trained and scored as UMMT-PS otherwise.",
        f"- Δm = mean relative change over {', '.join(DELTA_KEYS)} against the reference run of "
        "the same seed (higher is better), METHOD.md B.",
        "",
        "## Students",
        "",
        *main_table(study),
        "",
        *sections,
        "## Teachers (scored with their auxiliary input on the held-out rooms)",
        "",
        *teacher_table(study),
        "",
        f"## Pseudo-label quality vs quantity ({study.sweep.label} segmentation labels)",
        "",
        "Coverage = share of pixels of the pseudo-labelled frames that keep a label; kept-pixel "
        "accuracy = agreement of kept pixels with the held-back ground truth (never used in "
        "training).",
        "",
        *_pseudo_table(study),
        "",
        *([f"## Noisy privileged depth: pseudo-labels and students ({study.sweep.label} "
           "segmentation labels)", "", *_noise_table(study), ""]
          if study.dataset is None else []),
        "## Pseudo-depth filters (same teacher, same frames)",
        "",
        "Coverage and error of the kept pseudo-depth against the held-back sensor depth; the "
        "students train on the calibrated filter's output.",
        "",
        *_filter_table(study),
        "",
        "## Reading (generated from the numbers above)",
        "",
        *_reading(study),
        "",
    ]
    write_text_atomic(study.report, "\n".join(lines))


def elapsed(study: Study) -> str:
    """The study's wall-clock time, from its invocations (runs overlap under --jobs)."""
    runs = study.invocations()
    if not runs:
        return ""
    total = sum(r.get("elapsed_s", 0.0) for r in runs) / 60
    jobs = sorted({int(r.get("jobs", 1)) for r in runs})
    how = ("one command" if len(runs) == 1 else f"{len(runs)} commands on the same folder "
           "(each ran only what was missing)")
    return (f"; {total:.1f} min elapsed over {how} with --jobs "
            f"{'/'.join(str(j) for j in jobs)}")


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
        f"- Labels (data.seed {d.seed}): segmentation on {100 * study.sweep.seg_fraction:.1f} % "
        f"of the training frames, {study.both_labels(study.sweep)} with both labels (the "
        "teacher's set); seeds vary train.seed only.",
        f"- Network input {d.height}x{d.width}, {m.num_classes} classes, {m.encoder}, decoder "
        f"{m.decoder_channels} channels x {m.decoder_convs}; students {t.epochs} epochs, "
        f"teachers {teacher.epochs}; Adam {t.lr}, batch {t.batch_size}.",
        *([] if study.pd_config else [
            "- UMMT-PD not run: every training frame with segmentation also keeps depth, so "
            "there is no depth to pseudo-label."]),
        ""]


def study_jobs(args: argparse.Namespace) -> int:
    """The --jobs of a study command, after checking --seeds, --scale and --jobs."""
    jobs = getattr(args, "jobs", 1) or 1
    if args.seeds < 1 or args.scale <= 0 or jobs < 1:
        raise UserError("--seeds and --jobs must be >= 1 and --scale > 0")
    return jobs


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment imbalance`: run (or continue) the study, rewrite its page."""
    jobs = study_jobs(args)
    torch.set_num_threads(1)
    config = getattr(args, "config", None)
    base = load_config(config, getattr(args, "set", None) or []) if config else None
    tag = f"_{Path(config).stem}" if config else ""  # a dataset run never overwrites the
    out = Path(args.out or DEFAULT_OUT + tag)  # synthetic study's page or runs
    out.mkdir(parents=True, exist_ok=True)
    report = Path(args.report or DEFAULT_REPORT.replace(".md", f"{tag}.md"))
    study = Study(out, report, list(range(args.seeds)), Plan(scale=args.scale), base,
                  str(config) if config else None)
    study.run(jobs, state={"config": str(config) if config else None,
                           "set": getattr(args, "set", None) or []})
    print(f"wrote {report} ({len(study.results)} runs in {out})")
