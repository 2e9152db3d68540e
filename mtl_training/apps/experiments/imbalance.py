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
import logging
from pathlib import Path

import numpy as np
import torch

from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import flatten
from mtl_training.apps.experiments.study import (
    DEPTH_FRACTION,
    MAIN_TAU,
    NOISE_FACTORS,
    PD,
    PS,
    PS_XTC,
    RATIOS,
    SWEEP_RATIO,
    UMMT,
    XTC,
    XTC_LAMBDA,
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
    dm_vs_ummt,
    main_table,
    ms,
    page_command,
    run_block,
    students,
    study_jobs,
    teacher_table,
)
from mtl_training.config import load_config
from mtl_training.stats import MIN_SEEDS, Comparison, family_markdown

log = logging.getLogger("mtl_training.apps.experiments.imbalance")

__all__ = ["RATIOS", "SWEEP_RATIO", "ImbalanceStudy", "Plan", "Split", "run"]

TAUS = (0.7, 0.8, 0.9, 0.95)
COMMAND = "mtl-train experiment imbalance --seeds {seeds} --scale {scale}"
DEFAULT_OUT = "runs/imbalance"
DEFAULT_REPORT = "docs/results/imbalance.md"

TAU_ARMS = tuple(PS if t == MAIN_TAU else Arm(f"ps_tau{t}", f"UMMT-PS (τ={t})", "depth", t)
                 for t in TAUS)
PER_CLASS = Arm("ps_per_class", "UMMT-PS (per-class τ)", "depth", mode="per_class")
NOISE_ARMS = tuple(PS if f == 1.0 else Arm(f"ps_noise{f:g}", f"UMMT-PS (teacher noise x{f:g})",
                                           "depth", noise=f) for f in NOISE_FACTORS)


class ImbalanceStudy(Study):
    """METHOD.md A's arms on the fraction sweep, the count split, the noisy-teacher and tau
    sweeps (the module docstring lists them in priority order)."""

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

    def page(self) -> None:
        write_report(self)


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
    study = ImbalanceStudy(out, report, list(range(args.seeds)), Plan(scale=args.scale), base,
                  str(config) if config else None)
    study.run(jobs, state={"config": str(config) if config else None,
                           "set": getattr(args, "set", None) or []})
    print(f"wrote {report} ({len(study.results)} runs in {out})")
