"""The pseudo-depth study: its four arms, its one Holm family, and both pseudo-depth filters run
end to end (the calibrated one at its own target, the flip rule alone) at a tiny scale."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import imbalance as im
from mtl_training.apps.experiments import pseudo_depth as pd
from mtl_training.stats import read_family


def _student(seed: int, tag: str, miou: float, abs_err: float, **extra) -> dict:
    return {"key": f"s{seed}/r0.1/{tag}", "kind": "student", "seed": seed, "split": "r0.1",
            "arm": tag, "steps": 10, "wall_s": 60.0, "cpu_s": 55.0, **extra,
            "val": {"seg": {"miou": miou, "pixel_acc": 0.5 + miou / 2},
                    "depth": {"abs_err": abs_err, "rel_err": abs_err / 4,
                              "rmse": abs_err * 1.2, "delta1": 0.5}}}


def test_the_plan_is_four_arms_per_split_ten_percent_first_and_refuses_a_config(tmp_path):
    study = pd.PseudoDepthStudy(tmp_path / "runs", tmp_path / "page.md", list(range(5)),
                                im.Plan(scale=1.0))
    keys = [(s.key, a.tag) for s, a in study.steps()]
    assert keys[:4] == [
        ("r0.1", "ummt"), ("r0.1", "ps_tau0.9"), ("r0.1", "pd_cal0.2"), ("r0.1", "pd_flip")]
    assert [k for k, _ in keys[4:]] == ["r0.05"] * 4 + ["r0.5"] * 4  # no count split
    assert len(study.planned()) == 60 and study.status().startswith("INCOMPLETE")
    args = argparse.Namespace(seeds=5, scale=1.0, jobs=1, config="config/train/nyuv2.yaml",
                              out=str(tmp_path / "x"), report=None)
    with pytest.raises(UserError, match="procedural world only"):
        pd.run(args)


def test_the_page_holds_one_family_of_twelve_and_the_kept_pseudo_depth(tmp_path):
    rng = np.random.default_rng(3)
    records = []
    for s in range(5):
        luck = rng.normal(0, 0.03)
        records.append(_student(s, "ummt", 0.30 + luck, 1.0))
        records.append(_student(s, "ps_tau0.9", 0.36 + luck + 0.002 * s, 1.0,
                                pseudo={"coverage": 0.4, "kept_accuracy": 0.95}))
        records.append(_student(s, "pd_cal0.2", 0.30 + luck, 0.9 - 0.001 * s,
                                pseudo={"coverage": 0.3, "kept_rel_err": 0.15,
                                        "kept_delta1": 0.8,
                                        "calibration": {"threshold": 0.03, "coverage": 0.35,
                                                        "rel_err": 0.19}}))
        records.append(_student(s, "pd_flip", 0.30 + luck, 1.0 + 0.01 * s,
                                pseudo={"coverage": 0.55, "kept_rel_err": 0.19,
                                        "kept_delta1": 0.7}))
    out = tmp_path / "runs"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    study = pd.PseudoDepthStudy(out, tmp_path / "page.md", list(range(5)), im.Plan(scale=1.0))
    study.page()
    page = (tmp_path / "page.md").read_text()
    readings = {(r.comparison.name, r.comparison.metric): r
                for r in read_family([c for c in pd.families(study) if c is not None])}
    assert len(readings) == 12
    assert readings[("UMMT-PS (τ=0.9) vs UMMT, 10 % seg labels", "mIoU")].verdict == "better"
    cal = readings[("UMMT-PD (calibrated, rel err <= 0.2) vs UMMT, 10 % seg labels",
                    "abs err (m)")]
    assert cal.verdict == "better"  # lower error on every seed
    # only the 10 % split has runs: its 12 comparisons are the family so far
    assert "Holm-corrected across the 12 comparisons" in page and "Status: INCOMPLETE" in page
    assert ("| 10 % | UMMT-PD (calibrated, rel err <= 0.2) | 0.300 ± 0.000 | rel err 0.150 "
            "± 0.000, δ<1.25 0.800 ± 0.000 | flip disagreement 0.0300 ± 0.0000 | 0.350 ± "
            "0.000, 0.190 ± 0.000 |") in page
    assert "| 10 % | UMMT-PD (flip rule) | 0.550 ± 0.000 |" in page
    assert "at a mean relative error of 0.190, against the UMMT student's own 0.250" in page


def test_both_pseudo_depth_filters_run_end_to_end(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "runs"
    out.mkdir()
    study = pd.PseudoDepthStudy(out, tmp_path / "page.md", [0], im.Plan(scale=0.05))
    for arm in (pd.PD_CAL, pd.PD_FLIP):
        study.run_unit(0, study.sweep, arm)
    cal = json.loads((out / "pseudo/s0/r0.1/pd_cal0.2/manifest.json").read_text())
    flip = json.loads((out / "pseudo/s0/r0.1/pd_flip/manifest.json").read_text())
    assert cal["depth_filter"] == "calibrated" and cal["depth_max_rel_err"] == 0.2
    assert "depth_filter" not in flip and flip["depth_rel_tol"] == 0.05  # the flip rule alone
    assert "calibration" in study.results["s0/r0.1/pd_cal0.2"]["pseudo"]
    assert "calibration" not in study.results["s0/r0.1/pd_flip"]["pseudo"]
    teachers = [k for k in study.results if k.endswith("teacher_seg")]
    assert teachers == ["s0/r0.1/teacher_seg"]  # one teacher for both arms
    assert "## Each direction against UMMT" in (tmp_path / "page.md").read_text()
