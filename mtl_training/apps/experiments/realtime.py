"""`mtl-train experiment realtime`: does the real-time student give anything up? (issue 24, part 7)

The real-time student (EfficientNet-Lite0 with 9 of its 16 blocks, `efficientnet_lite0_lean`, +
the shared refinement decoder at 48 channels, `model.decoder: refine`) costs a fraction of today's
demo student (ResNet-18 + one U-Net per task up to full size). This study asks what that costs in
accuracy, what the packaged ImageNet weights buy, and what trimming Lite0 gives up, on the
procedural world at the demo's scale (its recording and network sizes, its frame count, its label
split: segmentation on 10 % of the training frames, depth on all of them), 5 seeds:
  demo student       ResNet-18, 16-channel U-Nets with 1 conv per block, from scratch (the
                     network `make demo` trained before issue 24).
  real-time scratch  the lean Lite0 + refine 48, random initialisation.
  real-time ImageNet the same network from the packaged ImageNet weights (`model.pretrained`).
  full Lite0         every Lite0 block + refine 64 from ImageNet (the real-time student before
                     the trim).
  UMMT-PS            real-time ImageNet + pseudo-segmentation from the study's teacher (Lite0,
                     ImageNet) on the frames without segmentation (the demo's threshold rule).
Every student runs the same optimisation steps (same frames, epochs and batch size). Two Holm
families: (1) the networks pairwise on mIoU and abs rel; (2) UMMT-PS against UMMT (the
real-time ImageNet student on the scarce labels alone) on mIoU, abs err and Δm. Seconds per
training step are reported beside them, not tested: under --jobs on a shared CPU they measure
the machine as much as the network.

The studies' machinery runs it (units, resuming, --jobs, the page's wall time; see
study.py); --config is not taken: the world is the procedural one.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.core.fileio import write_text_atomic
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments.study import (
    Arm,
    Plan,
    Split,
    Study,
)
from mtl_training.apps.experiments.study_page import (
    COMPARED,
    DELTA_KEYS,
    FMT,
    compare,
    metric_cells,
    ms,
    page_command,
    run_block,
    run_world_study,
    students,
    teacher_table,
)
from mtl_training.config import ExperimentConfig, ModelConfig
from mtl_training.data.datasets import PseudoLabels
from mtl_training.stats import MIN_SEEDS, Comparison, family_markdown

COMMAND = "mtl-train experiment realtime --seeds {seeds} --scale {scale}"
DEFAULT_OUT = "runs/realtime"
DEFAULT_REPORT = "docs/results/realtime.md"
NO_CONFIG = "experiment realtime runs on the procedural world only; drop --config"


@dataclass(frozen=True)
class Net:
    """The model keys an arm sets (the rest of ModelConfig stays the study's)."""

    encoder: str
    decoder: str
    decoder_channels: int
    decoder_convs: int
    pretrained: str = "none"  # none | imagenet
    aux_pretrained: bool = True  # teachers: the depth branch from ImageNet too

    def apply(self, model: ModelConfig) -> None:
        model.encoder, model.decoder = self.encoder, self.decoder
        model.decoder_channels, model.decoder_convs = self.decoder_channels, self.decoder_convs
        model.pretrained, model.aux_pretrained = self.pretrained, self.aux_pretrained

    def describe(self) -> str:
        dec = (f"one {self.decoder_channels}-channel U-Net per task ({self.decoder_convs} conv "
               "per block)" if self.decoder == "unet" else
               f"shared refinement at stride 4 ({self.decoder_channels} channels, "
               f"{self.decoder_convs} pooling links per level), a small head per task")
        init = "ImageNet" if self.pretrained == "imagenet" else "scratch"
        return f"{self.encoder} + {dec}, {init}"


# scarce_demo.yaml's student before issue 24
DEMO_NET = Net("resnet18", "unet", 16, 1)
# scarce_demo.yaml's student now (test_realtime_study keeps them equal)
RT_NET = Net("efficientnet_lite0_lean", "refine", 48, 2, "imagenet")
RT_SCRATCH_NET = Net("efficientnet_lite0_lean", "refine", 48, 2)
# the real-time student before the trim: every Lite0 block, refine 64
FULL_NET = Net("efficientnet_lite0", "refine", 64, 2, "imagenet")
# the full student's family and size, depth branch from ImageNet too (the demo's teacher is
# Lite2, chosen after this study ran)
TEACHER_NET = FULL_NET
PS_MODE, PS_TAU = "per_class", 0.9  # the demo's pseudo-label rule


@dataclass(frozen=True)
class NetArm(Arm):
    """A student arm that also chooses its network."""

    net: Net = RT_NET


RT_IMAGENET = NetArm("rt_imagenet", "real-time ImageNet", net=RT_NET)
DEMO = NetArm("demo_resnet18", "demo student (ResNet-18 U-Net)", net=DEMO_NET)
RT_SCRATCH = NetArm("rt_scratch", "real-time scratch", net=RT_SCRATCH_NET)
FULL = NetArm("lite0_imagenet", "full Lite0 (refine 64) ImageNet", net=FULL_NET)
RT_PS = NetArm("rt_ps", f"UMMT-PS (real-time ImageNet, {PS_MODE} τ={PS_TAU})", "depth",
               tau=PS_TAU, mode=PS_MODE, net=RT_NET)
# the same runs as RT_IMAGENET, named as family (2) reads them
UMMT_RT = NetArm(RT_IMAGENET.tag, "UMMT (real-time ImageNet)", net=RT_NET)
ARMS = (RT_IMAGENET, DEMO, RT_PS, RT_SCRATCH, FULL)  # priority order: the headline pair first
# the demo's split: segmentation on 10 % of the training frames, depth on every frame
SPLIT = Split("r0.1_d1", "10 %", seg_fraction=0.1, depth_fraction=1.0)
# family (1): accuracy of the networks; rel_err is the abs rel of the depth literature
NET_METRICS = (("miou", "mIoU", True), ("rel_err", "abs rel", False))
STUDY_FMT = {**FMT, "abs rel": "+.3f"}


def demo_scale_plan(scale: float = 1.0) -> Plan:
    """The demo's sizes (scripts/demo.py Sizes, scarce_demo.yaml), epochs sized so that the 25
    runs of 5 seeds finish in about half an hour with --jobs 2 on a shared 2-core CPU."""
    return Plan(scale=scale, render=(120, 160), size=(96, 128), base_frames=300, base_val=32,
                student_epochs=3, teacher_epochs=4, base_teacher_epoch=160, batch_size=8,
                lr=1e-3)


class RealtimeStudy(Study):
    """Four student arms on the demo's split; the arms differ in network, not only in labels."""

    def __init__(self, out: Path, report: Path, seeds: list[int], plan: Plan,
                 base: object = None, config: str | None = None) -> None:
        if base is not None:
            raise UserError(NO_CONFIG)
        super().__init__(out, report, seeds, plan)
        self.splits, self.sweep, self.count_split = (SPLIT,), SPLIT, None

    def steps(self) -> list[tuple[Split, Arm]]:
        return [(SPLIT, arm) for arm in ARMS]

    def config(self, seed: int, split: Split, out_dir: Path, arch: str = "student",
               aux: str = "depth", xtc: bool = False) -> ExperimentConfig:
        cfg = super().config(seed, split, out_dir, arch, aux, xtc)
        if arch == "teacher":
            TEACHER_NET.apply(cfg.model)
        return cfg

    def student_config(self, seed: int, split: Split, run_dir: Path, arm: Arm
                       ) -> ExperimentConfig:
        cfg = super().student_config(seed, split, run_dir, arm)
        (arm.net if isinstance(arm, NetArm) else RT_NET).apply(cfg.model)
        return cfg

    def _train(self, cfg: ExperimentConfig, world: Any,
               pseudo: PseudoLabels | None = None) -> dict[str, Any]:
        """The unit's record plus `train_s`: its epochs' own time (metrics.jsonl time_s: the
        training loop and the per-epoch validation, no set-up, rendering or pseudo-labelling)."""
        res = super()._train(cfg, world, pseudo)
        lines = (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()
        res["train_s"] = sum(float(json.loads(line)["time_s"]) for line in lines)
        return res

    def page(self) -> None:
        write_report(self)


def seconds_per_step(study: Study, arm: Arm) -> list[float]:
    return [r["train_s"] / r["steps"] for r in students(study, SPLIT, arm.tag).values()
            if r.get("steps") and "train_s" in r]


def network_family(study: Study) -> list[Comparison | None]:
    """(1) the networks pairwise, equal steps, on mIoU and abs rel: real-time against the demo
    student, ImageNet against scratch, and the trimmed encoder against the full Lite0."""
    return [c for treat, ref in ((RT_IMAGENET, DEMO), (RT_IMAGENET, RT_SCRATCH),
                                 (RT_SCRATCH, DEMO), (RT_IMAGENET, FULL))
            for c in compare(study, SPLIT, treat, ref, NET_METRICS)]


def pseudo_family(study: Study) -> list[Comparison | None]:
    """(2) UMMT-PS against UMMT with the real-time ImageNet student."""
    return compare(study, SPLIT, RT_PS, UMMT_RT, COMPARED)


def students_table(study: Study) -> list[str]:
    lines = ["| arm | network | mIoU | pixel acc | abs err (m) | abs rel | δ<1.25 | steps | "
             "s / step | median s / step, × demo student's |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    demo = seconds_per_step(study, DEMO)
    for arm in ARMS:
        runs = students(study, SPLIT, arm.tag)
        if not runs:
            continue
        sps = seconds_per_step(study, arm)
        ratio = (f"{np.median(sps):.3f}, {np.median(sps) / np.median(demo):.2f}x"
                 if sps and demo else "–")
        assert isinstance(arm, NetArm)
        lines.append(f"| {arm.label} | {arm.net.describe()} | {metric_cells(runs)} | {ms(sps)} | "
                     f"{ratio} |")
    return lines


def pseudo_table(study: Study) -> list[str]:
    runs = students(study, SPLIT, RT_PS.tag)
    if not runs:
        return ["No UMMT-PS run finished yet."]
    ps = [r["pseudo"] for r in runs.values()]
    return ["| pseudo-labels | coverage | kept-pixel accuracy (held-back labels) |",
            "|---|---|---|",
            f"| {PS_MODE}, τ = {PS_TAU} | {ms([p['coverage'] for p in ps])} | "
            f"{ms([p.get('kept_accuracy', float('nan')) for p in ps])} |"]


def _reading(study: Study) -> list[str]:
    out = []
    demo, rt = seconds_per_step(study, DEMO), seconds_per_step(study, RT_IMAGENET)
    if demo and rt:
        out.append(f"- A training step of the real-time student took {np.median(rt):.2f} s "
                   f"(median over seeds), the demo student's {np.median(demo):.2f} s "
                   f"({np.median(rt) / np.median(demo):.2f}x; one torch thread each, batch of "
                   f"{study.plan.batch_size} at {study.plan.size[0]}x{study.plan.size[1]}, "
                   "on a CPU shared with other work: a run that met a burst of load shows as "
                   "a large mean and spread, hence medians).")
        same = seconds_per_step(study, RT_SCRATCH) + seconds_per_step(study, RT_PS)
        if same:
            out.append(f"- The same network in the other two arms (scratch, UMMT-PS; identical "
                       f"steps, run later): median {np.median(same):.2f} s per step, "
                       f"{np.median(same) / np.median(demo):.2f}x the demo student's. Which "
                       "arm met the machine's busiest minutes decides these ratios as much as "
                       "the network does: the bench's forward timings are the cost measure.")
    out.append("- Every verdict above is the rule's (`mtl_training/stats.py`): \"better\"/"
               "\"worse\" only where the Holm-corrected p < 0.05 within its table; otherwise "
               "the seeds do not separate the arms, whatever the sign of the mean.")
    return out


def _aux_init() -> str:
    if TEACHER_NET.aux_pretrained and TEACHER_NET.pretrained == "imagenet":
        return "from ImageNet too, its stem averaged over its input channels"
    return "from scratch"


def write_report(study: Study) -> None:
    p = study.plan
    cmd = page_command(study, COMMAND, DEFAULT_OUT, DEFAULT_REPORT)
    teacher_steps = [r["steps"] for r in study.results.values()
                     if r["kind"] == "teacher" and "steps" in r]
    lines = [
        "# The real-time student: ImageNet-initialised EfficientNet-Lite0 (9 of 16 blocks) against "
        "today's demo student and the full Lite0",
        "",
        "Issue 24's study on the procedural RGB-D world at the demo's scale. Produced by",
        "",
        *run_block(study, cmd),
        "## Setup",
        f"- World seeds {study.seeds} (a seed changes the rooms, which frames keep labels, and "
        f"the initialisation); {p.train_frames} training frames rendered at "
        f"{p.render[0]}x{p.render[1]}, network input {p.size[0]}x{p.size[1]} (the demo's "
        f"recording and input sizes); {p.val_frames} held-out rooms, fully labelled, score every "
        "run at its last epoch. Mean ± sample std over seeds, `n=` where fewer than "
        f"{MIN_SEEDS} finished.",
        "- Labels: the demo's split, segmentation on 10 % of the training frames, depth on "
        "every frame.",
        f"- Every student: {p.student_epochs} epochs of batch {p.batch_size}, Adam {p.lr} halved "
        "for the last epoch, CE + 1.0 x L1 depth: the same optimisation steps whatever the "
        "network.",
        f"- Teacher (UMMT-PS): RGB + depth -> seg, {TEACHER_NET.describe()} (the depth branch "
        f"{_aux_init()}), trained on the frames with both labels (repeated to "
        f"{p.teacher_epoch} samples per epoch), {p.teacher_epochs} epochs "
        f"({min(teacher_steps, default=0)}-{max(teacher_steps, default=0)} steps); "
        f"pseudo-labels from its last epoch at confidence >= {PS_TAU} ({PS_MODE} thresholds) "
        "on the frames without segmentation.",
        "- s / step: each run's epochs' own time (training loop and per-epoch validation; no "
        "set-up or rendering) over its steps, one torch thread per run.",
        f"- Δm = mean relative change over {', '.join(DELTA_KEYS)} against the reference run of "
        "the same seed (higher is better), METHOD.md B.",
        "",
        "## Students",
        "",
        *students_table(study),
        "",
        "## (1) The networks against each other (equal steps)",
        "",
        *family_markdown(network_family(study), STUDY_FMT),
        "",
        f"## (2) UMMT-PS against UMMT with the real-time student ({SPLIT.label} seg labels)",
        "",
        *family_markdown(pseudo_family(study), STUDY_FMT),
        "",
        "## Teacher (scored with its depth input on the held-out rooms)",
        "",
        *teacher_table(study),
        "",
        "## Pseudo-labels",
        "",
        "Coverage = share of the pseudo-labelled frames' pixels that keep a label; the kept "
        "pixels scored against the held-back ground truth (never used in training).",
        "",
        *pseudo_table(study),
        "",
        "## Reading (generated from the numbers above)",
        "",
        *_reading(study),
        "",
    ]
    write_text_atomic(study.report, "\n".join(lines))


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment realtime`: run (or continue) the study, rewrite its page."""
    run_world_study(args, RealtimeStudy, demo_scale_plan(args.scale), DEFAULT_OUT, DEFAULT_REPORT,
                    NO_CONFIG)

