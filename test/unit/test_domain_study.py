"""The cross-domain study (`mtl-train experiment domain`): its arms are data.sources runs a
user could write, every arm takes the same steps, and one tiny seed runs the whole chain
(source teacher -> calibrated pseudo-labels on the robot world -> select -> student) for real."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import EXPERIMENTS
from mtl_training.apps.experiments import domain as dm
from mtl_training.config import DataConfig, from_dict
from mtl_training.source_config import source_specs

TINY = dm.Plan(scale=0.05, render=(60, 80), size=(48, 64), base_frames=300, base_val=32,
               student_epochs=1, teacher_epochs=1, batch_size=8, lr=1e-3)


def _study(tmp_path: Path, plan: dm.Plan = TINY, seeds: int = 1) -> dm.DomainStudy:
    return dm.DomainStudy(tmp_path / "runs", tmp_path / "page.md", list(range(seeds)), plan)


def test_thirteen_arms_headline_pair_first_and_every_arm_is_a_valid_sources_config(tmp_path):
    study = _study(tmp_path, dm.domain_plan(), seeds=5)
    tags = [a.tag for _, a in study.steps()]
    assert tags[:2] == ["source_only", "pseudo"] and len(tags) == len(set(tags)) == 13
    assert len(study.planned()) == 65 and study.status().startswith("INCOMPLETE")
    assert "domain" in EXPERIMENTS
    for arm in dm.ARMS:
        entries = dm.DomainStudy.sources(arm, [0, 4] if arm.budget else None)
        data = from_dict(DataConfig, {"train_frames": 8, "colour_jitter": arm.jitter,
                                      "sources": entries}, prefix="data")
        specs = source_specs(data)  # what a user's config with these entries resolves to
        assert specs[0].data.style == "standard" and specs[0].data.seg_fraction == 1.0
        assert {s.data.colour_jitter for s in specs} == {arm.jitter}  # every source jitters
        if arm.target == "none":
            assert len(specs) == 1
        elif arm.own_source:  # the labelled frames again, alone, as a third source
            assert len(specs) == 3 and specs[2].labelled_only
            assert specs[2].data.seg_frames == [0, 4] and specs[2].data.style == "robot"
        else:
            robot = specs[1].data
            assert robot.style == "robot" and robot.seg_fraction == 0.0
            assert robot.seg_frames == ([0, 4] if arm.budget else None)
    args = argparse.Namespace(seeds=5, scale=1.0, jobs=1, config="config/train/nyuv2.yaml",
                              out=str(tmp_path / "x"), report=None)
    with pytest.raises(UserError, match="two styles only"):
        dm.run(args)
    # --arms: a larger --scale of the headline arms only; the page counts only those runs
    study.choose_arms(["source_only", "pseudo"])
    assert [a.tag for _, a in study.chosen_steps()] == ["source_only", "pseudo"]
    assert len(study.planned()) == 10 and len(study.pending()) == 10
    with pytest.raises(UserError, match=r"unknown arm 'psuedo' .*source_only, pseudo"):
        study.choose_arms(["psuedo"])


def test_one_seed_runs_teacher_pseudo_labels_select_and_students(tmp_path):
    study = _study(tmp_path)
    select5 = dm.BUDGET_ARMS[(0.05, "select")]
    random5 = dm.BUDGET_ARMS[(0.05, "random")]
    study.run(steps=[(dm.SPLIT, dm.SOURCE_ONLY), (dm.SPLIT, select5), (dm.SPLIT, random5)])
    res = study.results
    n = TINY.train_frames
    pseudo = res["s0/pseudo_calibrated"]
    # thresholds came from the teacher's held-out source rooms and the labels are cross-domain
    manifest = json.loads((study.out / "pseudo" / "s0_calibrated" / "manifest.json").read_text())
    assert manifest["cross_domain"] is True and manifest["seg_calibration"]["frames"] > 0
    assert pseudo["seg_calibration"]["target_precision"] == 0.9
    sel, rnd = res[f"s0/{dm.SPLIT.key}/select5"], res[f"s0/{dm.SPLIT.key}/random5"]
    k = round(0.05 * n)
    assert len(sel["labelled_frames"]) == len(rnd["labelled_frames"]) == k
    assert all(0 <= i < n for i in sel["labelled_frames"])
    # equal steps: one source or two, every epoch draws the same number of frames
    only = res[f"s0/{dm.SPLIT.key}/source_only"]
    assert only["steps"] == sel["steps"] == rnd["steps"]
    assert not list(study.out.rglob("*/source_only/*.pt"))  # students are scored, not kept
    page = study.report.read_text()
    for heading in ("## (a) What the robot's data adds", "## (b) Frames chosen by `select`",
                    "## (c) Depth on the robot", "## Teacher and pseudo-labels across"):
        assert heading in page
    assert "INCOMPLETE" in page  # 3 of the 9 arms ran
