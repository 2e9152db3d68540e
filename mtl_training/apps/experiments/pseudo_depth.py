"""`mtl-train experiment pseudo_depth`: do the papers' two directions help alike? (METHOD.md A)

The imbalance study's UMMT-PD rows keep pseudo-depth only where held-out calibration rooms keep a
mean relative error <= 0.1; on the procedural world the RGB+seg -> depth teacher never gets that
good, so those rows keep no pixel and train exactly as UMMT: they test nothing. This study asks
the asymmetry question with pseudo-depth that is actually kept, on the imbalance study's 5 / 10 /
50 % splits (same plan, same worlds, same teachers' recipe; 10 % first):
  UMMT                 the scarce labels alone (reference).
  UMMT-PS              + pseudo-segmentation from the RGB+depth teacher (tau 0.9).
  UMMT-PD (cal. 0.2)   + pseudo-depth kept where calibration rooms keep a mean relative error
                       <= 0.2: below the UMMT student's own (~0.3), so a kept pixel is expected
                       to be better than what the student predicts there; a constant prediction
                       still keeps nothing (its calibration error is the depth spread).
  UMMT-PD (flip)       + pseudo-depth kept by the 5 % mirrored-frame agreement rule alone (the
                       rule a constant would pass; here the teacher is not constant).
One Holm family over all splits: each arm against UMMT and UMMT-PS against the calibrated UMMT-PD
(mIoU, abs err, Δm). Units, resuming, --jobs and the page's wall time work as in the imbalance
study (the same Study machinery, see study.py); --config is not taken: the calibration rooms
are the procedural world's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import flatten
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments.study import (
    PS,
    UMMT,
    Arm,
    Plan,
    Split,
    Study,
)
from mtl_training.apps.experiments.study_page import (
    DELTA_KEYS,
    FMT,
    compare,
    main_table,
    ms,
    page_command,
    run_block,
    run_world_study,
    students,
    teacher_table,
)
from mtl_training.stats import MIN_SEEDS, Comparison, family_markdown

PD_CAL = Arm("pd_cal0.2", "UMMT-PD (calibrated, rel err <= 0.2)", "seg", mode="calibrated",
             max_rel_err=0.2)
PD_FLIP = Arm("pd_flip", "UMMT-PD (flip rule)", "seg", mode="flip")
ARMS = (UMMT, PS, PD_CAL, PD_FLIP)
COMMAND = "mtl-train experiment pseudo_depth --seeds {seeds} --scale {scale}"
DEFAULT_OUT = "runs/pseudo_depth"
DEFAULT_REPORT = "docs/results/pseudo_depth.md"
NO_CONFIG = ("experiment pseudo_depth runs on the procedural world only (its calibration rooms); "
             "drop --config")


class PseudoDepthStudy(Study):
    """The imbalance study's machinery on four arms of each of its fraction splits."""

    def __init__(self, out: Path, report: Path, seeds: list[int], plan: Plan,
                 base: object = None, config: str | None = None) -> None:
        if base is not None:
            raise UserError(NO_CONFIG)
        super().__init__(out, report, seeds, plan)
        self.count_split = None  # every frame with segmentation keeps depth there: no UMMT-PD

    def steps(self) -> list[tuple[Split, Arm]]:
        """The 10 % split first (every seed), then the others; the page lists them in order."""
        order = (self.sweep, *(s for s in self.splits if s != self.sweep))
        return [(split, arm) for split in order for arm in ARMS]

    def page(self) -> None:
        write_report(self)


def families(study: Study) -> list[Comparison | None]:
    """The page's one Holm family: four comparisons x three metrics per split."""
    return [c for split in study.splits for treat, ref in (
        (PS, UMMT), (PD_CAL, UMMT), (PD_FLIP, UMMT), (PS, PD_CAL))
        for c in compare(study, split, treat, ref)]


def _pseudo_table(study: Study) -> list[str]:
    """What each arm's pseudo-labels kept, against the held-back ground truth."""
    lines = ["| seg labels | arm | coverage | kept pixels against held-back labels | "
             "filter threshold | calibration rooms: coverage, rel err |",
             "|---|---|---|---|---|---|"]
    for split, arm in ((sp, a) for sp in study.splits for a in (PS, PD_CAL, PD_FLIP)):
        runs = students(study, split, arm.tag)
        if not runs:
            continue
        ps = [r["pseudo"] for r in runs.values()]
        if arm.aux == "depth":
            kept = f"accuracy {ms([p.get('kept_accuracy', float('nan')) for p in ps])}"
            threshold, cal_cell = f"τ = {arm.tau}", "–"
        else:
            kept = (f"rel err {ms([p.get('kept_rel_err', float('nan')) for p in ps])}, "
                    f"δ<1.25 {ms([p.get('kept_delta1', float('nan')) for p in ps])}")
            cal = [p["calibration"] for p in ps if p.get("calibration")]
            found = [c["threshold"] for c in cal if c["threshold"] >= 0]  # < 0: none found
            threshold = ("flip disagreement 0.05 (fixed)" if not cal else
                         f"flip disagreement {ms(found, '.4f')}" if found else
                         "none: no level reaches the target")
            cal_cell = (f"{ms([c['coverage'] for c in cal])}, {ms([c['rel_err'] for c in cal])}"
                        if cal else "–")
        lines.append(f"| {split.label} | {arm.label} | {ms([p['coverage'] for p in ps])} | "
                     f"{kept} | {threshold} | {cal_cell} |")
    return lines


def _reading(study: Study) -> list[str]:
    """Facts the verdicts rest on, generated from the units."""
    out = []
    for split, arm in ((sp, a) for sp in study.splits for a in (PD_CAL, PD_FLIP)):
        own = [flatten(r["val"])["rel_err"] for r in students(study, split, UMMT.tag).values()]
        runs = students(study, split, arm.tag)
        kept = [r["pseudo"].get("kept_rel_err") for r in runs.values()]
        kept = [k for k in kept if k is not None and not np.isnan(k)]
        if runs and own:
            cov = float(np.mean([r["pseudo"]["coverage"] for r in runs.values()]))
            out.append(f"- {split.label} seg labels, {arm.label}: the teacher's pseudo-depth "
                       f"covered {100 * cov:.1f} % of the pseudo-labelled pixels" + (
                           f" at a mean relative error of {np.mean(kept):.3f}" if kept else "")
                       + f", against the UMMT student's own {np.mean(own):.3f} on held-out "
                       "rooms.")
    out.append("- Every verdict above is the rule's (`mtl_training/stats.py`): \"better\"/"
               "\"worse\" only where the Holm-corrected p < 0.05 within its table.")
    return out


def write_report(study: Study) -> None:
    p = study.plan
    cmd = page_command(study, COMMAND, DEFAULT_OUT, DEFAULT_REPORT)
    steps = [r["steps"] for r in study.results.values() if r["kind"] == "student"]
    lines = [
        "# Pseudo-labels in both directions: depth → seg against seg → depth",
        "",
        "METHOD.md A's asymmetry question on the procedural RGB-D world, with pseudo-depth that "
        "is kept (the imbalance study's calibrated filter at rel err <= 0.1 kept none). "
        "Produced by",
        "",
        *run_block(study, cmd),
        "## Setup",
        f"- The imbalance study's plan at this scale (`docs/results/imbalance*.md`): world seeds "
        f"{study.seeds}, {p.train_frames} training frames at {p.render[0]}x{p.render[1]}, "
        f"network input {p.size[0]}x{p.size[1]}, {p.val_frames} held-out rooms scoring every "
        "run at its last epoch; its fraction splits (segmentation on 5 / 10 / 50 % of the "
        "frames, depth on 60 %, drawn independently); students "
        f"{p.student_epochs} epochs ({min(steps, default=0)}-{max(steps, default=0)} steps), "
        f"teachers {p.teacher_epochs} epochs on the frames with both labels. Mean ± sample std "
        f"over seeds, `n=` where fewer than {MIN_SEEDS} finished.",
        "- UMMT-PS: pseudo-segmentation (confidence >= 0.9) on frames with depth but no "
        "segmentation. UMMT-PD: pseudo-depth on frames with segmentation but no depth, kept by "
        "(a) the calibrated filter at a mean relative error <= 0.2 on calibration rooms (neither "
        "trained on nor scored; a constant prediction keeps nothing) or (b) the flip rule alone "
        "(mirrored-frame agreement within 5 %). Ground truth wins where both exist; pseudo "
        "weight 1.",
        f"- Δm = mean relative change over {', '.join(DELTA_KEYS)} against the reference run of "
        "the same seed (higher is better), METHOD.md B.",
        "",
        "## Students",
        "",
        *main_table(study, ARMS),
        "",
        "## Each direction against UMMT, and against each other",
        "",
        *family_markdown(families(study), FMT),
        "",
        "## Teachers (scored with their auxiliary input on the held-out rooms)",
        "",
        *teacher_table(study),
        "",
        "## Pseudo-labels",
        "",
        "Coverage = share of pixels of the pseudo-labelled frames that keep a label; the kept "
        "pixels are scored against the held-back ground truth (never used in training).",
        "",
        *_pseudo_table(study),
        "",
        "## Reading (generated from the numbers above)",
        "",
        *_reading(study),
        "",
    ]
    write_text_atomic(study.report, "\n".join(lines))


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment pseudo_depth`: run (or continue) the study, rewrite its page."""
    run_world_study(args, PseudoDepthStudy, Plan(scale=args.scale), DEFAULT_OUT, DEFAULT_REPORT,
                    NO_CONFIG)

