"""What every study page is made of: mean ± std cells, paired comparisons by seed (read by
mtl_training/stats.py's one rule), the students' and teachers' tables, and the header block that
names the command, its status and its wall time on this host."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.core.metrics import delta_m, flatten
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import host
from mtl_training.apps.experiments.study import (
    NOISE_FACTORS,
    PD,
    PS,
    PS_XTC,
    UMMT,
    XTC,
    Arm,
    Plan,
    Split,
    Study,
)
from mtl_training.stats import MIN_SEEDS, Comparison, paired_by_seed

DELTA_KEYS = ("miou", "pixel_acc", "abs_err", "rel_err")  # Delta_m over these (METHOD.md B)

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
    if study.only:
        cmd += f" --arms {','.join(study.only)}"
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



def metric_cells(runs: dict[int, dict[str, Any]]) -> str:
    """A students-table row's held-out cells over seeds: mIoU | pixel acc | abs err | abs rel |
    δ<1.25 | steps."""
    m = [flatten(r["val"]) for r in runs.values()]
    steps = sorted({int(r["steps"]) for r in runs.values()})
    return (f"{ms([x['miou'] for x in m])} | {ms([x['pixel_acc'] for x in m])} | "
            f"{ms([x['abs_err'] for x in m])} | {ms([x['rel_err'] for x in m])} | "
            f"{ms([x['delta1'] for x in m])} | {'/'.join(map(str, steps))}")


def run_world_study(args: argparse.Namespace, cls: type[Study], plan: Plan, default_out: str,
                    default_report: str, no_config: str) -> None:
    """`mtl-train experiment <name>` for a study of the procedural world only: refuse
    --config, run (or continue) it on one torch thread per process, rewrite its page."""
    jobs = study_jobs(args)
    if getattr(args, "config", None):
        raise UserError(no_config)
    torch.set_num_threads(1)
    out = Path(args.out or default_out)
    out.mkdir(parents=True, exist_ok=True)
    report = Path(args.report or default_report)
    study = cls(out, report, list(range(args.seeds)), plan)
    if getattr(args, "arms", None):
        study.choose_arms([t.strip() for t in args.arms.split(",") if t.strip()])
    study.run(jobs)
    print(f"wrote {report} ({len(study.results)} runs in {out})")


def study_jobs(args: argparse.Namespace) -> int:
    """The --jobs of a study command, after checking --seeds, --scale and --jobs."""
    jobs = getattr(args, "jobs", 1) or 1
    if args.seeds < 1 or args.scale <= 0 or jobs < 1:
        raise UserError("--seeds and --jobs must be >= 1 and --scale > 0")
    return jobs


