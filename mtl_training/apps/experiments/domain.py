"""`mtl-train experiment domain`: from a labelled world to a robot's unlabelled one (issue 25,
part 5).

A user has a labelled benchmark (the source) and a robot whose recordings carry colour and
sensor depth but no segmentation labels (the target). The procedural world plays both: its
standard style is the source, fully labelled; its `robot` style (data/sources/world_style.py: a
low, level, wide camera, warm dim light, duller materials, other rooms) is the target, whose
training frames keep depth only. Every student is the real-time one (EfficientNet-Lite0 +
refine from ImageNet, the demo's), trained on `data.sources` exactly as a user's run is, and
scored on held-out robot rooms, fully labelled. Per seed:
  teacher        RGB + depth -> seg on the source (the real-time study's teacher); its
                 pseudo-labels on the robot frames use thresholds calibrated on its own held-out
                 source rooms (`pseudo.calibrate=teacher_val`), never on the target.
  source only    the source alone.
  + robot depth  the source and the robot frames' depth (what a robot has without labelling).
  + pseudo       ... and the teacher's pseudo-labels on the robot frames, by either threshold
                 rule: calibrated on the teacher's held-out source rooms, or per-class τ.
  + k % labels   ... and segmentation labels on k % of the robot frames (1, 2, 5 %), chosen by
                 `select` (the teacher's uncertainty + k-center diversity) or at random (the same
                 code's random strategy); pseudo-labels on the rest.
Every student takes the same optimisation steps: each epoch draws the same number of frames,
half from each source where there are two (the sampling rule of data.sources, equal weights).
  colour jitter  source only, and + pseudo-labels, with `data.colour_jitter: 1` (brightness,
                 contrast and white balance drawn per frame) on every training frame.
  own source     select's 5 % listed again as a third source (`labelled_only`), so they fill a
                 third of every epoch.
Five Holm families (mtl_training/stats.py): (a) robot mIoU of the data arms, (b) select vs
random at each budget, (c) robot abs rel of the data arms, (d) colour jitter, (e) own source.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import flatten
from mtl_perception.core.models.backbones import encoder_input_stats
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments.realtime import RT_NET, TEACHER_NET
from mtl_training.apps.experiments.study import Arm, Plan, Split, Study
from mtl_training.apps.experiments.study_page import (
    metric_cells,
    ms,
    page_command,
    run_block,
    run_world_study,
    students,
)
from mtl_training.config import DataConfig, ExperimentConfig, PseudoLabelConfig
from mtl_training.data import datasets_from_sources
from mtl_training.data.datasets import MultiTaskDataset, PseudoLabels
from mtl_training.data.multisource import MultiSourceTrainSet, build_multisource
from mtl_training.data.sources.synthetic import SyntheticSource, WorldConfig
from mtl_training.labeling.select import SelectionRule, choose, score_frames
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.store import PseudoLabelStore
from mtl_training.pseudo.teacher import load_teacher
from mtl_training.stats import MIN_SEEDS, Comparison, family_markdown, paired_by_seed

DEFAULT_OUT = "runs/domain"
DEFAULT_REPORT = "docs/results/domain.md"
NO_CONFIG = "experiment domain runs on the procedural world's two styles only; drop --config"
TARGET_STYLE = "robot"
BUDGETS = (0.05, 0.02, 0.01)  # shares of the robot's training frames given labels
# the two threshold rules a user can pick across domains: per class at a precision measured on
# the teacher's own held-out frames (nyuv2_to_robot.yaml's), or the demo's per-class quantile
PSEUDO_RULES = {
    "calibrated": PseudoLabelConfig(calibrate="teacher_val", target_precision=0.9, tau=0.9,
                                    batch_size=16),
    "per_class": PseudoLabelConfig(mode="per_class", tau=0.9, batch_size=16),
}
PSEUDO = PSEUDO_RULES["calibrated"]
# every training frame of the source keeps both labels (a labelled benchmark)
SPLIT = Split("src_full", "source fully labelled", seg_fraction=1.0, depth_fraction=1.0)


@dataclass(frozen=True)
class DomainArm(Arm):
    """A student arm: what of the robot's frames it trains on besides the source."""

    target: str = "none"  # none | depth | pseudo
    budget: float = 0.0  # share of the robot's frames labelled
    pick: str | None = None  # select | random
    rule: str = "calibrated"  # the pseudo-labels' threshold rule (PSEUDO_RULES)
    jitter: float = 0.0  # data.colour_jitter of the student (every source's frames)
    own_source: bool = False  # the labelled robot frames also as a third, labelled_only source


SOURCE_ONLY = DomainArm("source_only", "source only")
TARGET_DEPTH = DomainArm("robot_depth", "+ robot depth", target="depth")
PSEUDO_ARM = DomainArm("pseudo", "+ robot depth + pseudo-labels (calibrated)", "depth",
                       target="pseudo")
PSEUDO_PC = DomainArm("pseudo_pc", "+ robot depth + pseudo-labels (per-class τ)", "depth",
                      target="pseudo", rule="per_class")


def budget_arm(budget: float, pick: str) -> DomainArm:
    pct = f"{100 * budget:g}"
    how = "chosen by select" if pick == "select" else "chosen at random"
    return DomainArm(f"{pick}{pct}", f"+ pseudo-labels + {pct} % labels {how}", "depth",
                     target="pseudo", budget=budget, pick=pick)


BUDGET_ARMS = {(b, p): budget_arm(b, p) for b in BUDGETS for p in ("select", "random")}
# the 5 % chosen by select, listed again as their own source (`labelled_only`): each epoch a
# third of the draws, instead of 15 frames among the robot's 300
SELECT5_OWN = DomainArm("select5_own", "+ pseudo-labels + 5 % labels chosen by select, as their "
                        "own source", "depth", target="pseudo", budget=0.05, pick="select",
                        own_source=True)
JITTER = 1.0  # colour jitter strength of the jitter arms (covers the robot's colour cast)
SOURCE_CJ = DomainArm("source_only_cj", "source only, colour jitter", jitter=JITTER)
PSEUDO_CJ = DomainArm("pseudo_cj", "+ robot depth + pseudo-labels (calibrated), colour jitter",
                      "depth", target="pseudo", jitter=JITTER)
# priority: the headline pair, then a few labels, then what separates depth from pseudo-labels
ARMS = (SOURCE_ONLY, PSEUDO_ARM, PSEUDO_PC, BUDGET_ARMS[(0.05, "select")],
        BUDGET_ARMS[(0.05, "random")], TARGET_DEPTH,
        *(BUDGET_ARMS[(b, p)] for b in BUDGETS[1:] for p in ("select", "random")),
        SOURCE_CJ, PSEUDO_CJ, SELECT5_OWN)


def domain_plan(scale: float = 1.0) -> Plan:
    """The demo's recording and network sizes; 300 frames per world, students 4 epochs of 300
    draws, teachers 8 epochs of the source: the 50 students and 5 teachers of 5 seeds take about
    40 minutes with --jobs 2 on 2 cores."""
    return Plan(scale=scale, render=(120, 160), size=(96, 128), base_frames=300, base_val=32,
                student_epochs=4, teacher_epochs=8, base_teacher_epoch=160, batch_size=8,
                lr=1e-3)


class _Worlds:
    """One seed's two worlds, rendered once per process: the source (standard style) and the
    robot (its own rooms), each with held-out rooms."""

    def __init__(self, plan: Plan, seed: int) -> None:
        h, w = plan.render
        standard = WorldConfig(height=h, width=w, max_depth=10.0)
        robot = WorldConfig(height=h, width=w, max_depth=10.0, style=TARGET_STYLE)
        n, v, off = plan.train_frames, plan.val_frames, SyntheticSource.VAL_OFFSET
        self.source = (SyntheticSource(seed, 0, n, standard),
                       SyntheticSource(seed, off, v, standard))
        self.robot = (SyntheticSource(seed, 0, n, robot), SyntheticSource(seed, off, v, robot))

    def datasets(self, cfg: DataConfig, pseudo: PseudoLabels | None = None,
                 stats: InputStats = IMAGENET_STATS
                 ) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        """The teacher's: the source's training frames and its own held-out rooms."""
        return datasets_from_sources(cfg, self.source, pseudo, stats=stats)

    def calibration_set(self, cfg: DataConfig, stats: InputStats) -> MultiTaskDataset:
        """The teacher's held-out source rooms (what pseudo.calibrate=teacher_val reads): its
        validation set, every label, no augmentation."""
        return MultiTaskDataset(self.source[1], (cfg.height, cfg.width), False, seed=cfg.seed,
                                stats=stats)

    def robot_train(self, cfg: DataConfig, stats: InputStats) -> MultiTaskDataset:
        """The robot's training frames, segmentation hidden: what pseudo-labelling labels
        (the hidden labels stay on disk and score the kept pixels)."""
        n = len(self.robot[0])
        return MultiTaskDataset(self.robot[0], (cfg.height, cfg.width), False,
                                keep_seg=np.zeros(n, bool), seed=cfg.seed, stats=stats)


class _Prepared:
    """A student's datasets, built before Study._train asks its `world` for them."""

    def __init__(self, train: MultiSourceTrainSet, val: MultiTaskDataset) -> None:
        self.sets = (train, val)

    def datasets(self, *_: Any, **__: Any) -> tuple[MultiSourceTrainSet, MultiTaskDataset]:
        return self.sets


class DomainStudy(Study):
    """The arms above on one split (the source fully labelled); per seed one teacher, one
    pseudo-label folder and one scoring of the robot's frames shared by every arm."""

    def __init__(self, out: Path, report: Path, seeds: list[int], plan: Plan,
                 base: object = None, config: str | None = None) -> None:
        if base is not None:
            raise UserError(NO_CONFIG)
        super().__init__(out, report, seeds, plan)
        self.splits, self.sweep, self.count_split = (SPLIT,), SPLIT, None
        self.domains: dict[int, _Worlds] = {}
        self.scores: dict[int, list] = {}

    def steps(self) -> list[tuple[Split, Arm]]:
        return [(SPLIT, arm) for arm in ARMS]

    def world(self, seed: int, split: Split | None = None, noise: float = 1.0) -> _Worlds:
        if seed not in self.domains:
            self.domains[seed] = _Worlds(self.plan, seed)
        return self.domains[seed]

    def both_labels(self, split: Split) -> int:
        return self.plan.train_frames

    def config(self, seed: int, split: Split, out_dir: Path, arch: str = "student",
               aux: str = "depth", xtc: bool = False) -> ExperimentConfig:
        cfg = super().config(seed, split, out_dir, arch, aux, xtc)
        (TEACHER_NET if arch == "teacher" else RT_NET).apply(cfg.model)
        return cfg

    # -- per seed, shared by the arms ----------------------------------------------------------
    def pseudo_labels(self, seed: int, teacher_dir: Path, rule: str) -> Path:
        """The teacher's pseudo-labels on the robot's frames, made once per seed and rule
        (under a lock; recorded as a unit so the page reads their coverage and accuracy)."""
        key = f"s{seed}/pseudo_{rule}"
        out = self.out / "pseudo" / f"s{seed}_{rule}"
        with self._lock(key):
            self.reload()
            if key in self.results and (out / "manifest.json").is_file():
                return out
            teacher = load_teacher(teacher_dir, "last")
            data = self.config(seed, SPLIT, out).data
            stats = encoder_input_stats(TEACHER_NET.encoder)
            worlds = self.world(seed)
            summary = run_pseudo_label(teacher, worlds.robot_train(data, stats), out,
                                       PSEUDO_RULES[rule], overwrite=True, progress=False,
                                       calibration=worlds.calibration_set(data, stats))
            self._record({"key": key, "kind": "pseudo", "seed": seed, "rule": rule, **summary})
        return out

    def chosen(self, seed: int, teacher_dir: Path, arm: DomainArm) -> tuple[list[int], float]:
        """The robot frames `arm` labels (`select`'s choice or its random strategy's) and
        their mean teacher uncertainty."""
        if seed not in self.scores:
            teacher = load_teacher(teacher_dir, "last")
            src = self.world(seed).robot[0]
            self.scores[seed] = score_frames(teacher, src, list(range(len(src))),
                                             self.plan.size, PSEUDO.tau, 16, torch.device("cpu"))
        k = max(1, round(arm.budget * len(self.scores[seed])))
        rule = SelectionRule(budget=k, strategy="uncertainty-diversity"
                             if arm.pick == "select" else "random", seed=seed)
        rule.check()
        picks = choose(self.scores[seed], [], rule).picks
        return sorted(p.score.index for p in picks), float(np.mean(
            [p.score.uncertainty for p in picks]))

    # -- a unit --------------------------------------------------------------------------------
    def run_unit(self, seed: int, split: Split, arm: Arm) -> None:
        key = f"s{seed}/{split.key}/{arm.tag}"
        if key in self.results:
            return
        assert isinstance(arm, DomainArm)
        extra: dict[str, Any] = {"target": arm.target, "budget": arm.budget, "pick": arm.pick,
                                 "rule": arm.rule if arm.target == "pseudo" else None}
        pseudo, labelled = None, None
        if arm.target == "pseudo":
            teacher_dir = self.teacher(seed, SPLIT, "depth")
            if teacher_dir is None:
                return
            pseudo = PseudoLabelStore(self.pseudo_labels(seed, teacher_dir, arm.rule))
            if arm.budget > 0:
                labelled, extra["chosen_uncertainty"] = self.chosen(seed, teacher_dir, arm)
                extra["labelled_frames"] = labelled
        run_dir = self.out / key
        cfg = self.student_config(seed, split, run_dir, arm)
        cfg.data.colour_jitter = arm.jitter  # every source inherits it
        cfg.data.sources = self.sources(arm, labelled)
        res = self._train(cfg, self.prepared(cfg, seed, arm, pseudo))
        for ckpt in run_dir.glob("*.pt"):  # students are scored; their weights are not needed
            ckpt.unlink()
        self._record({"key": key, "kind": "student", "seed": seed, "split": split.key,
                      "arm": arm.tag, **extra, **res})

    @staticmethod
    def sources(arm: DomainArm, labelled: list[int] | None) -> list[dict[str, Any]]:
        """The run's data.sources: what a user writes for the same run."""
        out: list[dict[str, Any]] = [{"label": "source", "style": "standard"}]
        if arm.target != "none":
            robot: dict[str, Any] = {"label": TARGET_STYLE, "style": TARGET_STYLE,
                                     "seg_fraction": 0.0}
            if labelled:
                robot["seg_frames"] = labelled
            out.append(robot)
            if arm.own_source and labelled:
                out.append({"label": f"{TARGET_STYLE}_labels", "style": TARGET_STYLE,
                            "seg_frames": labelled, "labelled_only": True})
        return out

    def prepared(self, cfg: ExperimentConfig, seed: int, arm: DomainArm,
                 pseudo: PseudoLabels | None) -> _Prepared:
        """The run's sources over this seed's rendered worlds, each epoch `train_frames`
        draws; scored on the robot's held-out rooms whatever it trained on."""
        worlds = self.world(seed)
        stats = encoder_input_stats(cfg.model.encoder)
        n = len(cfg.data.sources or [None])
        opened = [worlds.source] + [worlds.robot] * (n - 1)
        stores = [None, pseudo, None][:n]  # source, robot (pseudo-labelled), robot labels
        multi = build_multisource(cfg.data, num_classes=cfg.model.num_classes, pseudo=stores,
                                  stats=stats, opened=opened)
        train = MultiSourceTrainSet(multi, epoch_frames=self.plan.train_frames)
        val = MultiTaskDataset(worlds.robot[1], (cfg.data.height, cfg.data.width), False,
                               seed=cfg.data.seed, stats=stats)
        return _Prepared(train, val)

    def page(self) -> None:
        write_report(self)


# -- the page ----------------------------------------------------------------------------------
COMMAND = "mtl-train experiment domain --seeds {seeds} --scale {scale}"
SELECT_5 = BUDGET_ARMS[(0.05, "select")]
STUDY_FMT = {"mIoU": "+.3f", "abs rel": "+.3f"}


def _values(study: Study, arm: Arm, key: str) -> dict[int, float]:
    return {s: float(flatten(r["val"])[key]) for s, r in students(study, SPLIT, arm.tag).items()}


def _compare(study: Study, treat: Arm, ref: Arm, key: str, label: str, higher: bool
             ) -> Comparison | None:
    return paired_by_seed(f"{treat.label} vs {ref.label}", label, _values(study, treat, key),
                          _values(study, ref, key), higher)


def data_family(study: Study) -> list[Comparison | None]:
    """(a) robot mIoU: what each kind of robot data adds."""
    pairs = ((PSEUDO_ARM, SOURCE_ONLY), (PSEUDO_PC, SOURCE_ONLY), (TARGET_DEPTH, SOURCE_ONLY),
             (PSEUDO_ARM, TARGET_DEPTH), (PSEUDO_PC, PSEUDO_ARM), (SELECT_5, PSEUDO_ARM))
    return [_compare(study, a, b, "miou", "mIoU", True) for a, b in pairs]


def select_family(study: Study) -> list[Comparison | None]:
    """(b) robot mIoU: frames chosen by select against frames chosen at random, per budget."""
    return [_compare(study, BUDGET_ARMS[(b, "select")], BUDGET_ARMS[(b, "random")], "miou",
                     "mIoU", True) for b in sorted(BUDGETS)]


def jitter_family(study: Study) -> list[Comparison | None]:
    """(d) robot mIoU: does colour jitter on the training frames bridge the colour gap, alone
    and under the pseudo-labels?"""
    pairs = ((SOURCE_CJ, SOURCE_ONLY), (PSEUDO_CJ, PSEUDO_ARM), (PSEUDO_CJ, SOURCE_CJ))
    return [_compare(study, a, b, "miou", "mIoU", True) for a, b in pairs]


def own_source_family(study: Study) -> list[Comparison | None]:
    """(e) robot mIoU: the few labels at their own share of every epoch."""
    return [_compare(study, SELECT5_OWN, b, "miou", "mIoU", True) for b in (SELECT_5, SOURCE_ONLY)]


def depth_family(study: Study) -> list[Comparison | None]:
    """(c) robot abs rel: does the robot's own depth (and pseudo-labels) fix depth too?"""
    return [_compare(study, a, SOURCE_ONLY, "rel_err", "abs rel", False)
            for a in (TARGET_DEPTH, PSEUDO_ARM, PSEUDO_PC)]


def students_table(study: Study) -> list[str]:
    lines = ["| arm | robot frames (of each epoch's draws) | robot mIoU | pixel acc | "
             "abs err (m) | abs rel | δ<1.25 | steps |", "|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        runs = students(study, SPLIT, arm.tag)
        if not runs:
            continue
        assert isinstance(arm, DomainArm)
        used = {"none": "none", "depth": "half: depth only",
                "pseudo": "half: depth + pseudo-seg"}[arm.target]
        if arm.own_source:
            used = "a third: depth + pseudo-seg; a third: the labelled frames"
        if arm.budget:
            n = sorted({len(r.get("labelled_frames", [])) for r in runs.values()})
            used += f", {'/'.join(map(str, n))} with seg labels"
        lines.append(f"| {arm.label} | {used} | {metric_cells(runs)} |")
    return lines


def teacher_lines(study: Study) -> list[str]:
    teachers = [flatten(r["val"]) for s in study.seeds
                if (r := study.results.get(f"s{s}/{SPLIT.key}/teacher_depth", {})).get("val")]
    if not teachers:
        return ["No teacher finished yet."]
    lines = [f"Teacher on its own held-out source rooms: mIoU {ms([t['miou'] for t in teachers])}"
             f", pixel acc {ms([t['pixel_acc'] for t in teachers])}.", "",
             "| threshold rule | on the source's held-out rooms: precision, coverage | on the "
             "robot's frames: coverage | kept-pixel accuracy (hidden robot labels) | classes "
             "kept (share of kept pixels >= 1 %) |", "|---|---|---|---|---|"]
    for rule in PSEUDO_RULES:
        pseudo = [r for s in study.seeds if (r := study.results.get(f"s{s}/pseudo_{rule}"))]
        if not pseudo:
            continue
        cal = [r.get("seg_calibration") or {} for r in pseudo]
        source = (f"{ms([c.get('precision') or float('nan') for c in cal])}, "
                  f"{ms([c.get('coverage', float('nan')) for c in cal])}"
                  if any(cal) else "– (not calibrated)")
        kept = [sum(1 for v in (r.get("per_class_share_of_kept") or {}).values()
                    if v is not None and v >= 0.01) for r in pseudo]
        classes = len(pseudo[0].get("per_class_share_of_kept") or {})
        lines.append(f"| {rule} | {source} | "
                     f"{ms([r.get('coverage', float('nan')) for r in pseudo])} | "
                     f"{ms([r.get('kept_accuracy', float('nan')) for r in pseudo])} | "
                     f"{ms(kept, '.1f')} of {classes} |")
    return lines


def selection_lines(study: Study) -> list[str]:
    lines = ["| budget | frames labelled | teacher uncertainty of the chosen frames: select | "
             "random |", "|---|---|---|---|"]
    for b in sorted(BUDGETS):
        sel = students(study, SPLIT, BUDGET_ARMS[(b, "select")].tag)
        rnd = students(study, SPLIT, BUDGET_ARMS[(b, "random")].tag)
        if not sel and not rnd:
            continue
        n = sorted({len(r.get("labelled_frames", [])) for r in (*sel.values(), *rnd.values())})
        lines.append(f"| {100 * b:g} % | {'/'.join(map(str, n))} | "
                     f"{ms([r.get('chosen_uncertainty', float('nan')) for r in sel.values()])} "
                     f"| {ms([r.get('chosen_uncertainty', float('nan')) for r in rnd.values()])} |")
    return lines


def write_report(study: Study) -> None:
    p = study.plan
    cmd = page_command(study, COMMAND, DEFAULT_OUT, DEFAULT_REPORT)
    lines = [
        "# From a labelled world to a robot's: source-only vs robot depth vs pseudo-labels vs a "
        "few chosen labels",
        "",
        "Issue 25's study on the procedural world's two styles. Produced by",
        "",
        *run_block(study, cmd),
        "## Setup",
        f"- Per seed ({study.seeds}): a source world (standard style) of {p.train_frames} "
        f"training rooms, every frame with segmentation and depth (a labelled benchmark), and a "
        f"robot world (`data.style: robot`: a camera 0.3-0.7 m up looking nearly level through "
        f"an 86° lens, warm dim light, duller materials, a noisier colour sensor, other rooms) "
        f"of {p.train_frames} training frames with sensor depth and no segmentation. Rendered "
        f"at {p.render[0]}x{p.render[1]}, network input {p.size[0]}x{p.size[1]}.",
        f"- Scored: {p.val_frames} held-out robot rooms, fully labelled, at the last epoch. "
        f"Mean ± sample std over seeds, `n=` where fewer than {MIN_SEEDS} finished.",
        f"- Every student: {RT_NET.describe()}; {p.student_epochs} epochs of {p.train_frames} "
        f"frames drawn by the data.sources rule (equal weights: half source, half robot where "
        f"the arm has robot frames), batch {p.batch_size}, Adam {p.lr} halved for the last "
        "epoch, CE + 1.0 x L1 depth: the same optimisation steps in every arm. Augmentation: "
        f"flip and scale-crop; the colour-jitter arms add `data.colour_jitter: {JITTER:g}` "
        "(brightness x0.6-1.4, contrast x0.7-1.3, each channel x0.75-1.25, per frame).",
        f"- Teacher: RGB + depth -> seg, {TEACHER_NET.describe()}, trained on the source only, "
        f"{p.teacher_epochs} epochs; pseudo-labels from its last epoch by one of two threshold "
        f"rules: calibrated (per class, the lowest confidence reaching precision "
        f"{PSEUDO.target_precision} on its held-out source rooms: `pseudo.calibrate=teacher_val`, "
        f"as config/train/nyuv2_to_robot.yaml; never on the robot's frames) or per-class τ (a "
        f"class keeps its pixels above min(τ={PSEUDO_RULES['per_class'].tau}, its median "
        f"confidence): `pseudo.mode=per_class`, as the demo).",
        f"- Labels for k % of the robot frames: `select`'s rule (the teacher's uncertainty at "
        f"τ={PSEUDO.tau} and k-center diversity over its features) or its random strategy, "
        "from the same scoring; the labelled frames then train on their ground truth, the rest "
        "on the calibrated pseudo-labels.",
        "",
        "## Students (scored on the robot's held-out rooms)",
        "",
        *students_table(study),
        "",
        "## (a) What the robot's data adds (robot mIoU)",
        "",
        *family_markdown(data_family(study), STUDY_FMT),
        "",
        "## (b) Frames chosen by `select` vs at random, equal budgets (robot mIoU)",
        "",
        *family_markdown(select_family(study), STUDY_FMT),
        "",
        "## (c) Depth on the robot (abs rel)",
        "",
        *family_markdown(depth_family(study), STUDY_FMT),
        "",
        f"## (d) Colour jitter (`data.colour_jitter: {JITTER:g}` on the students' training "
        "frames; robot mIoU)",
        "",
        *family_markdown(jitter_family(study), STUDY_FMT),
        "",
        "## (e) The 5 % labels as their own source (`labelled_only`, equal weights: a third of "
        "every epoch; robot mIoU)",
        "",
        *family_markdown(own_source_family(study), STUDY_FMT),
        "",
        "## Teacher and pseudo-labels across the domain gap",
        "",
        "Coverage = share of pixels keeping a label; precision and kept-pixel accuracy = share "
        "of kept pixels whose label is right (on the robot frames measured against their "
        "hidden labels, which no run trains on).",
        "",
        *teacher_lines(study),
        "",
        "## Which frames each rule labels",
        "",
        "Teacher uncertainty: (1 - coverage at τ + mean normalised entropy) / 2 per frame, "
        "averaged over the chosen frames (labeling/select.py).",
        "",
        *selection_lines(study),
        "",
    ]
    write_text_atomic(study.report, "\n".join(lines))


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment domain`: run (or continue) the study, rewrite its page."""
    run_world_study(args, DomainStudy, domain_plan(args.scale), DEFAULT_OUT, DEFAULT_REPORT,
                    NO_CONFIG)
