"""`mtl-train experiment consistency`: the shape of XTasC-Net's Table I/III, on the synthetic world
or on the dataset of `--config` (e.g. config/train/xtasc_nyuv2.yaml --set data.root=...).

Rows (METHOD.md B): Base ST-Net (one network per task, equal weights), Base MT-Net (equal,
uncertainty) and XTasC-Net (task-transfer nets + cross-task consistency) under equal,
uncertainty and GradNorm weighting, each over several seeds; Delta_m against the ST-Net of the
same seed. Two more rows put the label-free consistency term where this product needs it: only
10 % of the training frames keep segmentation labels (depth everywhere), MT-Net vs XTasC-Net.

Every run writes `result.json` when it finishes, and the results page is rewritten after each
run, so an interrupted sweep resumes where it stopped (a half-finished run continues from its
last.pt) and a partial sweep still yields an honest page that says how many seeds each row has.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.core.contracts import FrameSource
from mtl_perception.core.fileio import write_text_atomic
from mtl_perception.core.metrics import delta_m
from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import host
from mtl_training.config import ExperimentConfig, apply_override, load_config, load_packaged_config
from mtl_training.data import build_sources, datasets_from_sources
from mtl_training.report import markdown_table
from mtl_training.stats import Comparison, family_markdown, paired_by_seed
from mtl_training.trainer import Trainer

log = logging.getLogger("mtl_training.apps.experiments.consistency")

CONFIG = "synthetic_consistency"  # mtl_training/configs/<CONFIG>.yaml, i.e. config/train/
DEFAULT_OUT = "runs/consistency"
DEFAULT_REPORT = "docs/results/consistency.md"
METRICS = ("miou", "pixel_acc", "abs_err", "rel_err")
SCARCE_SEG_FRACTION = 0.1


@dataclass(frozen=True)
class Variant:
    key: str  # run folder name
    model: str  # table label
    weighting: str
    labels: str  # share of training frames with segmentation labels: "all" | "10 %"
    overrides: tuple[str, ...]


def _variants() -> list[Variant]:
    st = ("model.arch=single_task", "loss.xtc=false")
    scarce = (f"data.seg_fraction={SCARCE_SEG_FRACTION}",)
    return [
        Variant("st_seg", "Base ST-Net (seg)", "equal", "all", (*st, "model.tasks=[seg]")),
        Variant("st_depth", "Base ST-Net (depth)", "equal", "all", (*st, "model.tasks=[depth]")),
        Variant("mt_equal", "Base MT-Net", "equal", "all", ("loss.xtc=false",)),
        Variant("mt_uncertainty", "Base MT-Net", "uncertainty", "all", ("loss.xtc=false",)),
        Variant("xtc_equal", "XTasC-Net", "equal", "all", ("loss.xtc=true",)),
        Variant("xtc_uncertainty", "XTasC-Net", "uncertainty", "all", ("loss.xtc=true",)),
        Variant("xtc_gradnorm", "XTasC-Net", "gradnorm", "all", ("loss.xtc=true",)),
        Variant("mt_equal_seg10", "Base MT-Net", "equal", "10 %", ("loss.xtc=false", *scarce)),
        Variant("xtc_equal_seg10", "XTasC-Net", "equal", "10 %", ("loss.xtc=true", *scarce)),
        # sensitivity: the paper's lambda (0.01) barely moves a short run; 10x more
        Variant("xtc_uncertainty_l0.1", "XTasC-Net (λ = 0.1)", "uncertainty", "all",
                ("loss.xtc=true", "loss.xtc_lambda_seg=0.1", "loss.xtc_lambda_depth=0.1")),
    ]


def variant_config(base: ExperimentConfig, v: Variant, seed: int, out: Path) -> ExperimentConfig:
    cfg = copy.deepcopy(base)
    for assignment in (*v.overrides, f"loss.weighting={v.weighting}", f"train.seed={seed}"):
        apply_override(cfg, assignment)
    cfg.train.out_dir = str(out / v.key / f"seed{seed}")
    return cfg


def scaled(base: ExperimentConfig, scale: float) -> ExperimentConfig:
    """--scale multiplies training frames and epochs (e.g. 8 on a GPU)."""
    if scale <= 0:
        raise ValueError(f"--scale must be > 0, got {scale}")
    base.data.train_frames = max(1, round(base.data.train_frames * scale))
    base.train.epochs = max(1, round(base.train.epochs * scale))
    return base


def run_one(cfg: ExperimentConfig, sources: tuple[FrameSource, FrameSource]) -> dict[str, Any]:
    """Train one configuration (continuing a half-finished run) and return its final metrics.

    `sources` are shared by every run: the world is rendered once for the whole sweep.
    """
    run_dir = Path(cfg.train.out_dir)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    t0 = time.time()
    trainer = Trainer(cfg, datasets=datasets_from_sources(cfg.data, sources))
    params = sum(p.numel() for p in trainer.model.parameters())
    ttnet = sum(p.numel() for p in trainer.transfer.parameters()) if trainer.transfer else 0
    trainer.fit(resume=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]["val"]  # the last epoch, not the best: no selection on the test split
    metrics = {k: float(v) for group in final.values() for k, v in group.items()
               if k in METRICS or k in ("rmse", "delta1")}
    result = {"metrics": metrics, "time_s": round(time.time() - t0, 1),
              "train_time_s": round(sum(r["time_s"] for r in records), 1),
              "params": params, "transfer_params": ttnet, "epochs": records[-1]["epoch"],
              "weights": records[-1]["weights"]}
    result_path.write_text(json.dumps(result, indent=1))
    return result


# -- the results page -----------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    a = np.asarray(values, dtype=np.float64)
    if len(a) == 1:
        return f"{a[0]:.4f}"
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}"


def _pm(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    a = np.asarray(values, dtype=np.float64)
    sd = f" ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else ""
    return f"{a.mean():+.{digits}f}{sd}"


def st_reference(results: dict[str, dict[int, dict]], seed: int) -> dict[str, float] | None:
    seg, depth = results.get("st_seg", {}).get(seed), results.get("st_depth", {}).get(seed)
    if seg is None or depth is None:
        return None
    return {**{k: seg["metrics"][k] for k in ("miou", "pixel_acc")},
            **{k: depth["metrics"][k] for k in ("abs_err", "rel_err")}}


def row_deltas(results: dict[str, dict[int, dict]], key: str) -> dict[int, float]:
    out = {}
    for seed, res in results.get(key, {}).items():
        ref = st_reference(results, seed)
        if ref is not None:
            out[seed] = delta_m(res["metrics"], ref)
    return out


def render_report(results: dict[str, dict[int, dict]], variants: list[Variant],
                  context: dict[str, Any]) -> str:
    """The markdown page: set-up, the Table I/III-shaped table, paired comparisons, a reading."""
    world = context.get("world", "synthetic world")
    where = context.get("where", "the procedural RGB-D world at CPU scale")
    lines = [f"# Cross-task consistency and loss weighting ({world})", "",
             "Shape of Table I / III of Nakano et al., *Cross-Task Consistency Learning Framework "
             f"for Multi-Task Learning* (XTasC-Net, METHOD.md B), on {where}. Written by the "
             "study itself; re-running the command rewrites it.", "",
             "```bash", context["command"], "```", "",
             f"- Status: {context.get('status', 'complete')}.",
             f"- Wall time and hardware: {context['wall_min']:.1f} min of training wall time "
             f"over {context['runs']} runs, finished {context['finished']}, on "
             f"{context['machine']}.",
             f"- Set-up: {context['setup']}",
             "- Metrics: the last epoch's validation metrics (no checkpoint selection) on "
             f"{context['val_frames']} held-out frames ({context.get('held_out', 'new rooms')}); "
             "mean ± sample std over seeds in the first table; every comparison is read by "
             "the one rule of `mtl_training/stats.py` (paired over seeds, 95 % intervals, "
             "Holm-corrected per table). "
             "Seeds vary initialisation, batch order and augmentation; the world is fixed.",
             "- Δm (%): mean relative gain over mIoU, pixel accuracy, abs err and rel err (signs "
             "flipped where lower is better) against Base ST-Net **of the same seed** (its seg "
             "metrics from the seg-only network, depth from the depth-only one); then mean ± std "
             "over seeds.",
             "- Train s/run: training + per-epoch validation seconds of one run (Base ST-Net: "
             "both single-task networks together), on a CPU shared with other jobs.", ""]
    rows = []
    for v in variants:
        if v.key == "st_depth":
            continue
        seeds_seg = results.get(v.key, {})
        if v.key == "st_seg":
            seeds = sorted(s for s in seeds_seg if st_reference(results, s) is not None)
            vals = {k: [st_reference(results, s)[k] for s in seeds] for k in METRICS}
            label, deltas = "Base ST-Net", [0.0 for _ in seeds]
            t = [results["st_seg"][s]["train_time_s"] + results["st_depth"][s]["train_time_s"]
                 for s in seeds]
        else:
            seeds = sorted(seeds_seg)
            vals = {k: [seeds_seg[s]["metrics"][k] for s in seeds] for k in METRICS}
            label, deltas = v.model, list(row_deltas(results, v.key).values())
            t = [seeds_seg[s]["train_time_s"] for s in seeds]
        rows.append({"Model": label, "Weighting": v.weighting, "Seg labels": v.labels,
                     "mIoU ↑": _mean_std(vals["miou"]), "Pix Acc ↑": _mean_std(vals["pixel_acc"]),
                     "Abs Err (m) ↓": _mean_std(vals["abs_err"]),
                     "Rel Err ↓": _mean_std(vals["rel_err"]),
                     "Δm vs ST (%) ↑": _pm(deltas) if deltas else "–",
                     "Seeds": len(seeds), "Train s/run": f"{np.mean(t):.0f}" if t else "–"})
    lines += ["## Results", "", markdown_table(rows), ""]
    lines += _paired_section(results, variants)
    lines += ["## Reading", "", *_reading(results, variants), ""]
    lines += ["## Scope and caveats", "", *_CAVEATS, ""]
    return "\n".join(lines)


_CAVEATS = [
    "- Scale: a few hundred frames and a few epochs from scratch on one shared CPU core; the "
    "networks are far from converged, so absolute numbers say little and even rows that differ "
    "only slightly (XTC with λ = 0.01 changes each task's loss by about 1 %) end on visibly "
    "different trajectories. Read the paired comparisons and their verdicts, not single cells. "
    "`--scale 8` on a GPU gives the same study at a size where the paper's effects could show.",
    "- Not in the table: DWA (`loss.weighting=dwa`; implemented and unit-tested) and MT-Net with "
    "GradNorm. XTasC-Net trained with the teacher's pseudo-labels (UMMT-PS + XTC, METHOD.md A "
    "and B together) is an arm of the imbalance study (`docs/results/imbalance.md`), against "
    "UMMT-PS alone, XTC alone and UMMT on the same seeds. "
    "The 10 % rows here show the label-free consistency term alone on the same label budget.",
    "- Δm uses the four metrics of the paper (mIoU, pixel accuracy, abs err, rel err); rmse and "
    "δ<1.25 are in each run's `result.json` and `metrics.jsonl`.",
]


_PAIRS = (("mt_equal", "xtc_equal", "equal, all labels"),
          ("mt_uncertainty", "xtc_uncertainty", "uncertainty, all labels"),
          ("mt_equal", "xtc_gradnorm", "MT equal vs XTC GradNorm, all labels"),
          ("mt_equal_seg10", "xtc_equal_seg10", "equal, 10 % seg labels"))
# (metric key, label in the table, higher is better, format)
_PAIR_METRICS = (("miou", "mIoU", True, "+.4f"), ("abs_err", "abs err (m)", False, "+.4f"),
                 ("delta_m", "Δm vs MT (%)", True, "+.2f"))
_FMT = {label: fmt for _, label, _, fmt in _PAIR_METRICS} | {"Δm vs ST (%)": "+.2f"}


def _per_seed(results: dict[str, dict[int, dict]], a: str, b: str, key: str
              ) -> tuple[dict[int, float], dict[int, float]]:
    """({seed: value of b}, {seed: value of a}) for one metric; Δm is b's against a of the same
    seed, so its reference is 0."""
    ra, rb = results.get(a, {}), results.get(b, {})
    if key == "delta_m":
        seeds = set(ra) & set(rb)
        return ({s: delta_m(rb[s]["metrics"], ra[s]["metrics"]) for s in seeds},
                dict.fromkeys(seeds, 0.0))
    return ({s: r["metrics"][key] for s, r in rb.items()},
            {s: r["metrics"][key] for s, r in ra.items()})


def st_comparisons(results: dict[str, dict[int, dict]], variants: list[Variant]
                   ) -> list[Comparison | None]:
    """Every multi-task row's Δm against the same seed's Base ST-Net (paired test against 0)."""
    out: list[Comparison | None] = []
    for v in variants:
        if v.key.startswith("st_"):
            continue
        d = row_deltas(results, v.key)
        out.append(paired_by_seed(f"{v.model} ({v.weighting}, seg labels {v.labels}) vs ST",
                                  "Δm vs ST (%)", d, dict.fromkeys(d, 0.0)))
    return out


def pair_comparisons(results: dict[str, dict[int, dict]]) -> list[Comparison | None]:
    """XTasC-Net against Base MT-Net, per pair: mIoU, abs err and Δm, paired by seed."""
    return [paired_by_seed(f"XTC vs MT ({label})", name, *_per_seed(results, a, b, key),
                           higher_is_better=hib)
            for a, b, label in _PAIRS for key, name, hib, _ in _PAIR_METRICS]


def _paired_section(results: dict[str, dict[int, dict]], variants: list[Variant]) -> list[str]:
    return ["## Each multi-task row against Base ST-Net", "",
            "Δm of the row against the single-task pair of the same seed, tested against 0.", "",
            *family_markdown(st_comparisons(results, variants), _FMT), "",
            "## XTasC-Net against Base MT-Net, paired by seed", "",
            "Differences XTC − MT of the same seed (negative is better for abs err); Δm of "
            "XTasC-Net with that MT-Net as the baseline.", "",
            *family_markdown(pair_comparisons(results), _FMT), ""]


def _reading(results: dict[str, dict[int, dict]], variants: list[Variant]) -> list[str]:
    """Plain statements computed from the numbers; the verdicts are the tables' (stats.py)."""
    rows = [(v, d) for v in variants if not v.key.startswith("st_")
            if (d := list(row_deltas(results, v.key).values()))]
    if not rows:
        return ["No multi-task run has finished yet."]
    best_v, best_d = max(rows, key=lambda r: float(np.mean(r[1])))
    return ["- The verdicts are those of the two tables above: \"better\"/\"worse\" only "
            "where the Holm-corrected p < 0.05 within its table.",
            f"- Highest mean Δm vs ST: {best_v.model} with {best_v.weighting} weighting "
            f"(seg labels on {best_v.labels} frames), {_pm(best_d)} % over {len(best_d)} seeds "
            "(a ranking of means, not a test)."]


def _context(args: argparse.Namespace, base: ExperimentConfig, results: dict, wall_s: float
             ) -> dict[str, Any]:
    d, m, t, lo = base.data, base.model, base.train, base.loss
    argv = ["mtl-train", "experiment", "consistency", "--seeds", str(args.seeds),
            "--scale", str(args.scale)]
    config = getattr(args, "config", None)
    if config:
        argv += ["--config", str(config)]
        for assignment in getattr(args, "set", None) or []:
            argv += ["--set", assignment]
    if args.out:
        argv += ["--out", str(args.out)]
    if args.report:
        argv += ["--report", str(args.report)]
    ctx: dict[str, Any] = {
        "command": "nice -n 10 " + shlex.join(argv),
        "machine": host.describe(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": sum(len(v) for v in results.values()),
        "wall_min": wall_s / 60.0,
        "val_frames": d.val_frames,
        "setup": (f"{d.train_frames} training frames rendered at {d.render_height}x"
                  f"{d.render_width}, network input {d.height}x{d.width}, {m.num_classes} "
                  f"classes; {m.encoder} from scratch, decoder {m.decoder_channels} channels x "
                  f"{m.decoder_convs} conv per block; Adam lr {t.lr}, batch {t.batch_size}, "
                  f"{t.epochs} epochs (lr halved every {t.lr_step_epochs}); flip + scale-crop; "
                  f"XTC λ_seg = {lo.xtc_lambda_seg}, λ_depth = {lo.xtc_lambda_depth} (paper, "
                  f"Cityscapes), mode {lo.xtc_mode}, TTNets {lo.xtc_channels}/"
                  f"{2 * lo.xtc_channels}/{4 * lo.xtc_channels} channels; GradNorm α "
                  f"{lo.gradnorm_alpha}, weight lr {lo.gradnorm_lr}. Config: "
                  f"`{config or 'config/train/synthetic_consistency.yaml'}`."),
    }
    if d.name != "synthetic":  # a dataset config: its own frames, its validation split
        ctx.update(world=d.name, val_frames=results_val_frames(base),
                   where=f"`{d.name}` from `{config}` (data.root {d.root})",
                   held_out="the validation split, held out of training; never the test split")
        ctx["setup"] = (f"dataset `{d.name}` at {d.root}, network input {d.height}x{d.width}, "
                        f"{m.num_classes} classes; {m.encoder}, decoder {m.decoder_channels} "
                        f"channels x {m.decoder_convs} convs; Adam lr {t.lr}, batch "
                        f"{t.batch_size}, {t.epochs} epochs (lr halved every "
                        f"{t.lr_step_epochs}); augment {d.augment}; XTC λ_seg = "
                        f"{lo.xtc_lambda_seg}, λ_depth = {lo.xtc_lambda_depth}, mode "
                        f"{lo.xtc_mode}. Config: `{config}`.")
    return ctx


def results_val_frames(base: ExperimentConfig) -> int | str:
    """How many frames the validation split of a dataset config holds."""
    try:
        return len(build_sources(base.data)[1])
    except (OSError, ValueError):
        return "?"


def status(results: dict[str, dict[int, dict]], variants: list[Variant], seeds: int) -> str:
    """"complete", or INCOMPLETE naming how many runs are missing (the command finishes them)."""
    missing = sum(s not in results.get(v.key, {}) for v in variants for s in range(seeds))
    if not missing:
        return "complete"
    return (f"INCOMPLETE: {missing} of {len(variants) * seeds} runs missing (the study was "
            "still running or was stopped; rerun the command to finish them)")


def collect(out: Path, variants: list[Variant], seeds: int) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {}
    for v in variants:
        for s in range(seeds):
            p = out / v.key / f"seed{s}" / "result.json"
            if p.is_file():
                results.setdefault(v.key, {})[s] = json.loads(p.read_text())
    return results


def run(args: argparse.Namespace) -> None:
    """`mtl-train experiment consistency`: run (or continue) the sweep, rewrite its page."""
    if (getattr(args, "jobs", 1) or 1) != 1:
        raise UserError("--jobs is the imbalance study's; the consistency sweep runs one run at "
                        "a time (21 min for 5 seeds at the CPU default)")
    config = getattr(args, "config", None)
    tag = f"_{Path(config).stem}" if config else ""  # a dataset run keeps its own page
    out = Path(args.out or DEFAULT_OUT + tag)
    report = Path(args.report or DEFAULT_REPORT.replace(".md", f"{tag}.md"))
    if config:  # a dataset config (nyuv2, cityscapes, folder...): its frames and its own size
        base = load_config(config, getattr(args, "set", None) or [])
        if args.scale != 1.0:
            base.train.epochs = max(1, round(base.train.epochs * args.scale))
    else:
        base = scaled(load_packaged_config(CONFIG, getattr(args, "set", None) or []), args.scale)
    torch.set_num_threads(base.train.num_threads or 1)
    sources = build_sources(base.data)
    variants = _variants()
    t0 = time.time()
    for seed in range(args.seeds):  # seed-major: a cut-short sweep still has whole seeds
        for v in variants:
            cfg = variant_config(base, v, seed, out)
            log.info("consistency: %s seed %d -> %s", v.key, seed, cfg.train.out_dir)
            res = run_one(cfg, sources)
            log.info("consistency: %s seed %d done in %.0fs: %s", v.key, seed, res["time_s"],
                     res["metrics"])
            results = collect(out, variants, args.seeds)
            wall = sum(r["time_s"] for rs in results.values() for r in rs.values())
            ctx = _context(args, base, results, wall)
            ctx["status"] = status(results, variants, args.seeds)
            write_text_atomic(report, render_report(results, variants, ctx))
    log.info("consistency: all runs done in %.1f min; wrote %s", (time.time() - t0) / 60, report)
