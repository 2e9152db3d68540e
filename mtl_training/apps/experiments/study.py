"""The machinery every `mtl-train experiment` study on partial labels runs on (imbalance,
pseudo_depth, realtime): the plan's sizes, label splits, arms, the procedural world or a dataset
config's frames shared by all runs of a seed, and the `Study` that runs units in priority order.

A unit is one (seed, split, arm): a student, after its teacher (trained once per seed, split and
direction, under a file lock) has pseudo-labelled its frames. Each finished unit appends one line
to <out>/results.jsonl; a rerun skips what is there, so an interrupted study resumes and its page
says INCOMPLETE until every planned unit is in. --jobs N runs units in N spawned processes of one
torch thread each; a unit's result does not depend on which process ran it. A study subclass
says which units run (`steps`) and writes its page (`page`; helpers in study_page.py).
"""

from __future__ import annotations

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

import torch

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
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

log = logging.getLogger("mtl_training.apps.experiments.study")

RATIOS = (0.05, 0.10, 0.50)  # segmentation-label fractions of the standard sweep
SWEEP_RATIO = 0.10  # the headline split
MAIN_TAU = 0.9
DEPTH_FRACTION = 0.6
PAPER_COUNTS = (500, 250)  # Erkent's NYUDv2 ablation: frames with depth, of which with seg
NOISE_FACTORS = (0.0, 1.0, 3.0)  # depth-sensor noise of the teacher's world (1 = the standard)
XTC_LAMBDA = 0.01  # consistency weight (METHOD.md B, the paper's Cityscapes value)
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
NOISE_ARMS = tuple(PS if f == 1.0 else Arm(f"ps_noise{f:g}", f"UMMT-PS (teacher noise x{f:g})",
                                           "depth", noise=f) for f in NOISE_FACTORS)


class Study:
    """One study on one results folder: its units (a seed, a label split, an arm), what is
    finished (results.jsonl), teachers shared under a lock, and --jobs worker processes.
    Subclasses say which units run (`steps`) and write the page (`page`)."""

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
        self.only: tuple[str, ...] = ()  # --arms: run (and plan) only these arms' units

    def choose_arms(self, tags: list[str]) -> None:
        """Limit the study to the arms tagged `tags` (--arms: e.g. a larger --scale of its
        headline arms only); an unknown tag raises UserError listing the study's arms."""
        known = list(dict.fromkeys(arm.tag for _, arm in self.steps()))
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise UserError(f"--arms: unknown arm '{unknown[0]}' (this study's arms: "
                            f"{', '.join(known)})")
        self.only = tuple(tags)

    def chosen_steps(self) -> list[tuple[Split, Arm]]:
        """steps(), limited to --arms when given."""
        steps = self.steps()
        return [s for s in steps if s[1].tag in self.only] if self.only else steps

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
        """One entry per `mtl-train experiment ...` run on this folder: start, jobs,
        elapsed wall time, units finished (what the page's wall time is summed from)."""
        try:
            data = json.loads(self.invocations_path.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return data if isinstance(data, list) else []

    def page(self) -> None:
        """(Re)write the study's results page from every unit finished so far."""
        raise NotImplementedError(f"{type(self).__name__} must write its page")

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
        """(split, arm) steps in priority order; each runs for every seed before the next."""
        raise NotImplementedError(f"{type(self).__name__} must say which units it runs")

    def planned(self) -> list[str]:
        return [f"s{seed}/{split.key}/{arm.tag}" for split, arm in self.chosen_steps()
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
        return [(seed, split, arm) for split, arm in (self.chosen_steps() if steps is None
                                                      else steps)
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
                log.info("%s: %s %s seed %d", type(self).__name__, split.key, arm.tag, seed)
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
                 "plan": self.plan, "cls": type(self), "only": self.only, **state}
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(state,)) as pool:
            futures: set[Future] = {pool.submit(_worker_unit, *unit) for unit in todo}
            done_n = 0
            try:
                while futures:
                    done, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        log.info("study: finished %s", fut.result())
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
    _WORKER.only = tuple(state.get("only") or ())  # its pages plan what the command chose


def _worker_unit(seed: int, split: Split, arm: Arm) -> str:
    assert _WORKER is not None, "worker not initialised"
    _WORKER.reload()  # units the other processes finished (shared teachers among them)
    _WORKER.run_unit(seed, split, arm)
    return f"s{seed}/{split.key}/{arm.tag}"

