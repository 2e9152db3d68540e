"""The imbalance study: its plan of arms, its page (verdicts from Holm-corrected p only), and the
new arms (calibrated pseudo-depth, UMMT-PS + XTC) run end to end at a tiny scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mtl_training.apps.experiments import imbalance as im
from mtl_training.apps.experiments import study as study_mod
from mtl_training.stats import ALPHA, read_family, reading_sentence

METRICS = ("miou", "pixel_acc", "abs_err", "rel_err", "rmse", "delta1")


def _val(miou: float, abs_err: float) -> dict[str, dict[str, float]]:
    return {"seg": {"miou": miou, "pixel_acc": 0.5 + miou / 2},
            "depth": {"abs_err": abs_err, "rel_err": abs_err / 4, "rmse": abs_err * 1.2,
                      "delta1": 0.5}}


def _study(tmp_path: Path, records: list[dict]) -> im.ImbalanceStudy:
    out = tmp_path / "runs"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                       + '{"key": "torn')  # an interrupted append
    return im.ImbalanceStudy(out, tmp_path / "page.md", list(range(5)), im.Plan(scale=1.0))


def _student(seed: int, split: str, tag: str, miou: float, abs_err: float, **extra) -> dict:
    return {"key": f"s{seed}/{split}/{tag}", "kind": "student", "seed": seed, "split": split,
            "arm": tag, "val": _val(miou, abs_err), "steps": 10, "wall_s": 60.0,
            "cpu_s": 55.0, **extra}


def test_the_plan_has_every_arm_once_and_the_count_split_has_no_pd(tmp_path):
    study = _study(tmp_path, [])
    steps = study.steps()
    keys = [(split.key, arm.tag) for split, arm in steps]
    assert len(keys) == len(set(keys))
    assert keys[:5] == [("r0.1", "ummt"), ("r0.1", "ps_tau0.9"), ("r0.1", "pd_cal"),
                        ("r0.1", "xtc"), ("r0.1", "ps_xtc")]  # headline rows first
    assert ("n500_250", "ummt") in keys and ("n500_250", "ps_tau0.9") in keys
    assert ("n500_250", "pd_cal") not in keys  # every frame with seg keeps depth there
    assert {("r0.1", "ps_noise0"), ("r0.1", "ps_noise3")} <= set(keys)
    assert {("r0.05", "pd_cal"), ("r0.5", "pd_cal")} <= set(keys)
    assert len(study.planned()) == 5 * len(steps)
    assert study.status().startswith("INCOMPLETE") and "PARTIAL" not in study.status()
    split = im.Split.counts(*im.Plan(scale=1.0).counts)
    assert (split.depth_count, split.seg_count, split.frames) == (500, 250, 500)
    cfg = study_mod._config(im.Plan(), 0, split, tmp_path, xtc=True)
    assert cfg.data.seg_count == 250 and cfg.data.depth_count == 500 and cfg.loss.xtc


def test_the_page_reads_comparisons_by_the_holm_rule(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for s in range(5):
        luck = rng.normal(0, 0.03)  # shared by both arms of a seed: pairing removes it
        records.append(_student(s, "r0.1", "ummt", 0.30 + luck, 1.0))
        # a clear gain on every seed
        records.append(_student(s, "r0.1", "ps_tau0.9", 0.36 + luck + 0.002 * s, 1.0,
                                pseudo={"coverage": 0.4, "kept_accuracy": 0.9}))
        # a small gain, significant alone (p < 0.05) but not after Holm over the family
        records.append(_student(s, "r0.1", "pd_cal", 0.30 + luck + [0.01, 0.03, 0.015,
                                                                    0.002, 0.025][s], 1.0,
                                pseudo={"coverage": 0.2, "kept_rel_err": 0.08,
                                        "kept_delta1": 0.95,
                                        "calibration": {"threshold": 0.02, "coverage": 0.3,
                                                        "rel_err": 0.1, "pixels": 100}},
                                pseudo_flip={"coverage": 1.0, "kept_rel_err": 2.1,
                                             "kept_delta1": 0.1}))
    study = _study(tmp_path, records)
    im.write_report(study)
    page = (tmp_path / "page.md").read_text()
    fams = im.families(study)
    main = read_family([c for c in next(iter(fams.values())) if c is not None])
    by = {(r.comparison.name, r.comparison.metric): r for r in main}
    ps = by[("UMMT-PS (τ=0.9) vs UMMT, 10 % seg labels", "mIoU")]
    pd = by[("UMMT-PD (calibrated filter) vs UMMT, 10 % seg labels", "mIoU")]
    assert ps.verdict == "better" and ps.p_holm < ALPHA
    assert pd.comparison.p < ALPHA <= pd.p_holm and pd.verdict == "not distinguishable"
    assert f"- {reading_sentence(ps, im.FMT)}" in page
    assert f"- {reading_sentence(pd, im.FMT)}" in page
    assert "Holm-corrected across the 6 comparisons" in page  # PS, PD x mIoU, abs err, Δm
    assert "Status: INCOMPLETE" in page and "Wall time and hardware" in page
    assert "two standard errors" not in page and "PARTIAL" not in page
    # the filter table sets the flip rule's 100 % coverage at rel err 2.1 against the calibrated
    assert "| 10 % | flip agreement within 5 % | 1.000 ± 0.000 | 2.100 ± 0.000 |" in page
    assert "0.0200 ± 0.0000 | 0.300 ± 0.000, 0.100 ± 0.000 |" in page


def test_calibrated_pd_and_the_combined_method_run_end_to_end(tmp_path):
    torch.set_num_threads(1)
    study = im.ImbalanceStudy(tmp_path / "runs", tmp_path / "page.md", [0], im.Plan(scale=0.05))
    (tmp_path / "runs").mkdir()
    for arm in (im.UMMT, im.PD, im.PS_XTC):
        study.run_unit(0, study.sweep, arm)
    pd = study.results["s0/r0.1/pd_cal"]
    assert pd["pseudo"]["calibration"]["threshold"] is not None  # the calibrated filter ran
    assert "coverage" in pd["pseudo_flip"]  # and the flip rule beside it, same teacher
    manifest = json.loads((tmp_path / "runs/pseudo/s0/r0.1/pd_cal/manifest.json").read_text())
    assert manifest["depth_filter"] == "calibrated"
    combined = study.results["s0/r0.1/ps_xtc"]
    assert combined["xtc"] and combined["pseudo"]["coverage"] >= 0.0
    assert "s0/r0.1/teacher_depth" in study.results  # trained once, shared with UMMT-PS
    before = dict(study.results)
    study.run_unit(0, study.sweep, im.PD)  # resumable: a finished unit is not run again
    assert study.results == before
    page = (tmp_path / "page.md").read_text()
    assert "UMMT-PS + XTC" in page and "## Pseudo-depth filters" in page


def test_jobs_share_a_teacher_train_it_once_and_record_every_unit_once(tmp_path):
    """--jobs 2: UMMT-PS and UMMT-PS + XTC of one seed start together in two processes and
    need the same teacher; one trains it under the lock, the other waits and loads it."""
    out = tmp_path / "runs"
    out.mkdir()
    study = im.ImbalanceStudy(out, tmp_path / "page.md", [0], im.Plan(scale=0.05))
    steps = [(study.sweep, im.PS), (study.sweep, im.PS_XTC)]
    study.run(jobs=2, steps=steps)
    keys = [json.loads(line)["key"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(keys) == ["s0/r0.1/ps_tau0.9", "s0/r0.1/ps_xtc", "s0/r0.1/teacher_depth"]
    assert study.pending(steps) == []
    runs = json.loads((out / "invocations.json").read_text())
    assert [(r["jobs"], r["units"]) for r in runs] == [(2, 2)] and runs[0]["elapsed_s"] > 0
    page = (tmp_path / "page.md").read_text()
    assert "--jobs 2" in page and "elapsed over one command with --jobs 2" in page
    study.run(jobs=2, steps=steps)  # nothing left: a second command runs nothing
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
