"""The real-time study's pure parts: its plan, each arm's network, its two Holm families and its
page, from a fake results set (no training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from mtl_training.apps.command import UserError
from mtl_training.apps.experiments import realtime as rt
from mtl_training.config import load_config
from mtl_training.stats import read_family

REPO = Path(__file__).resolve().parents[2]


def _student(seed: int, tag: str, miou: float, rel: float, train_s: float, **extra) -> dict:
    return {"key": f"s{seed}/{rt.SPLIT.key}/{tag}", "kind": "student", "seed": seed,
            "split": rt.SPLIT.key, "arm": tag, "steps": 100, "wall_s": train_s + 5,
            "cpu_s": train_s, "train_s": train_s, **extra,
            "val": {"seg": {"miou": miou, "pixel_acc": 0.5 + miou / 2},
                    "depth": {"abs_err": rel * 4, "rel_err": rel, "rmse": rel * 5,
                              "delta1": 0.6}}}


def _study(tmp_path: Path, records: list[dict] = ()) -> rt.RealtimeStudy:
    out = tmp_path / "runs"
    out.mkdir(exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return rt.RealtimeStudy(out, tmp_path / "page.md", list(range(5)), rt.demo_scale_plan())


def test_five_arms_on_the_demo_split_headline_pair_first_and_no_config(tmp_path):
    study = _study(tmp_path)
    assert [a.tag for _, a in study.steps()] == ["rt_imagenet", "demo_resnet18", "rt_ps",
                                                 "rt_scratch", "lite0_imagenet"]
    assert {(s.seg_fraction, s.depth_fraction) for s, _ in study.steps()} == {(0.1, 1.0)}
    assert len(study.planned()) == 25 and study.status().startswith("INCOMPLETE")
    args = argparse.Namespace(seeds=5, scale=1.0, jobs=2, config="config/train/nyuv2.yaml",
                              out=str(tmp_path / "x"), report=None)
    with pytest.raises(UserError, match="procedural world only"):
        rt.run(args)


def test_each_arm_trains_its_own_network_at_the_demo_sizes_with_equal_steps(tmp_path):
    study = _study(tmp_path)
    cfgs = {a.tag: study.student_config(0, rt.SPLIT, tmp_path / a.tag, a) for a in rt.ARMS}
    m = {tag: c.model for tag, c in cfgs.items()}
    assert (m["rt_imagenet"].encoder, m["rt_imagenet"].decoder, m["rt_imagenet"].pretrained) == (
        "efficientnet_lite0_lean", "refine", "imagenet")
    assert (m["rt_scratch"].encoder, m["rt_scratch"].pretrained) == ("efficientnet_lite0_lean",
                                                                      "none")
    # the real-time student before the trim: every Lite0 block, refine 64, ImageNet
    assert (m["lite0_imagenet"].encoder, m["lite0_imagenet"].decoder_channels,
            m["lite0_imagenet"].pretrained) == ("efficientnet_lite0", 64, "imagenet")
    assert (m["demo_resnet18"].encoder, m["demo_resnet18"].decoder,
            m["demo_resnet18"].decoder_channels, m["demo_resnet18"].pretrained) == (
        "resnet18", "unet", 16, "none")
    assert m["rt_ps"] == m["rt_imagenet"]
    # equal optimisation steps: one schedule, one input size, one set of frames for every arm
    assert len({(c.train.epochs, c.train.batch_size, c.train.lr, c.data.height, c.data.width,
                 c.data.train_frames) for c in cfgs.values()}) == 1
    for c in cfgs.values():
        c.validate()  # every arm's network exists and passes the spec's bounds
    teacher = study.config(0, rt.SPLIT, tmp_path / "t", "teacher", "depth").model
    assert (teacher.arch, teacher.encoder, teacher.pretrained) == (
        "teacher", rt.TEACHER_NET.encoder, "imagenet")


def test_the_real_time_arms_are_the_demo_config_networks():
    cfg = load_config(REPO / "config/train/scarce_demo.yaml")
    for net, model in ((rt.RT_NET, cfg.for_stage("student").model),):
        assert (net.encoder, net.decoder, net.decoder_channels, net.decoder_convs,
                net.pretrained) == (model.encoder, model.decoder, model.decoder_channels,
                                    model.decoder_convs, model.pretrained)
    teacher = cfg.for_stage("teacher").model  # the same family, from ImageNet
    assert teacher.encoder.startswith("efficientnet_lite") and teacher.pretrained == "imagenet"
    assert (cfg.pseudo.mode, cfg.pseudo.tau) == (rt.PS_MODE, rt.PS_TAU)


def test_the_page_reads_two_families_and_the_step_times(tmp_path):
    rng = np.random.default_rng(5)
    records = []
    for s in range(5):
        luck = rng.normal(0, 0.02)
        records.append(_student(s, "rt_imagenet", 0.40 + luck + 0.003 * s, 0.20, 40.0))
        records.append(_student(s, "demo_resnet18", 0.30 + luck, 0.30 - 0.002 * s, 80.0))
        records.append(_student(s, "rt_scratch", 0.30 + luck + 0.01 * (-1) ** s, 0.30, 40.0))
        records.append(_student(s, "rt_ps", 0.41 + luck, 0.20 + 0.01 * (-1) ** s, 40.0,
                                pseudo={"coverage": 0.7, "kept_accuracy": 0.93}))
        records.append(_student(s, "lite0_imagenet", 0.40 + luck - 0.01 * (-1) ** s, 0.20,
                                55.0))
    study = _study(tmp_path, records)
    study.page()
    page = (tmp_path / "page.md").read_text()
    net = {(r.comparison.name, r.comparison.metric): r.verdict
           for r in read_family([c for c in rt.network_family(study) if c is not None])}
    assert len(net) == 8
    assert net[("real-time ImageNet vs demo student (ResNet-18 U-Net), 10 % seg labels",
                "mIoU")] == "better"
    assert net[("real-time ImageNet vs demo student (ResNet-18 U-Net), 10 % seg labels",
                "abs rel")] == "better"  # lower relative error on every seed
    assert net[("real-time scratch vs demo student (ResNet-18 U-Net), 10 % seg labels",
                "mIoU")] == "not distinguishable"
    # the trimmed encoder against every Lite0 block: what the trim costs in accuracy
    assert net[("real-time ImageNet vs full Lite0 (refine 64) ImageNet, 10 % seg labels",
                "mIoU")] == "not distinguishable"
    ps = [c for c in rt.pseudo_family(study) if c is not None]
    assert [c.metric for c in ps] == ["mIoU", "abs err (m)", "Δm (%)"]
    assert ps[0].name.startswith("UMMT-PS (real-time ImageNet, per_class τ=0.9) vs UMMT "
                                 "(real-time ImageNet)")
    assert "Holm-corrected across the 8 comparisons" in page
    assert "Holm-corrected across the 3 comparisons" in page
    # 40 s over 100 steps against 80 s: the step-time column and its ratio to the demo student
    assert "| 0.400 ± 0.000 | 0.400, 0.50x |" in page
    assert "| 0.800 ± 0.000 | 0.800, 1.00x |" in page
    assert "took 0.40 s (median over seeds), the demo student's 0.80 s (0.50x" in page
    assert "| per_class, τ = 0.9 | 0.700 ± 0.000 | 0.930 ± 0.000 |" in page
    assert "Status: complete" in page
