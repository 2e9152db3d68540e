"""The consistency study's bookkeeping: Delta_m against the same seed's single-task pair."""

import argparse

import numpy as np
import pytest

from mtl_perception.core.contracts import DatasetInfo
from mtl_training.apps.experiments.consistency import (
    _FMT,
    _context,
    _variants,
    pair_comparisons,
    render_report,
    row_deltas,
    st_reference,
    status,
)
from mtl_training.config import load_config
from mtl_training.data.sources.folder import write_frame, write_index
from mtl_training.stats import ALPHA, read_family, reading_sentence


def _res(miou, acc, abs_err, rel):
    return {"metrics": {"miou": miou, "pixel_acc": acc, "abs_err": abs_err, "rel_err": rel},
            "train_time_s": 10.0, "time_s": 11.0}


def test_st_reference_takes_seg_from_seg_net_and_depth_from_depth_net():
    results = {"st_seg": {0: _res(0.5, 0.8, 9.0, 9.0)}, "st_depth": {0: _res(0.0, 0.0, 1.0, 0.2)},
               "mt_equal": {0: _res(0.55, 0.8, 1.0, 0.2), 1: _res(0.9, 0.9, 0.1, 0.1)}}
    assert st_reference(results, 0) == {"miou": 0.5, "pixel_acc": 0.8, "abs_err": 1.0,
                                        "rel_err": 0.2}
    assert st_reference(results, 1) is None  # seed 1 has no ST pair yet: no Delta_m for it
    assert row_deltas(results, "mt_equal") == {0: pytest.approx(100 * 0.1 / 4)}
    page = render_report(results, _variants(), {
        "command": "mtl-train experiment consistency", "machine": "test", "finished": "now",
        "runs": 4, "wall_min": 1.0, "val_frames": 4, "setup": "tiny"})
    assert "| Base MT-Net | equal | all | 0.7250 ± 0.2475 |" in page
    assert "+2.50 |" in page and "## Reading" in page
    assert "No comparison has two paired seeds yet." in page  # one ST pair: nothing to test


def test_comparisons_are_paired_by_seed_and_read_with_holm():
    rng = np.random.default_rng(0)
    results: dict[str, dict[int, dict]] = {k: {} for k in (
        "st_seg", "st_depth", "mt_equal", "xtc_equal", "mt_uncertainty", "xtc_uncertainty")}
    for s in range(5):
        shift = rng.normal(0, 0.05)  # a seed's shared luck: pairing removes it
        results["st_seg"][s] = _res(0.4 + shift, 0.7, 9.0, 9.0)
        results["st_depth"][s] = _res(0.0, 0.0, 1.0, 0.3)
        results["mt_equal"][s] = _res(0.45 + shift, 0.7, 1.0, 0.3)
        results["xtc_equal"][s] = _res(0.50 + shift + 0.001 * s, 0.7, 1.0, 0.3)  # clear gain
        results["mt_uncertainty"][s] = _res(0.45 + shift, 0.7, 1.0, 0.3)
        results["xtc_uncertainty"][s] = _res(0.45 + shift + rng.normal(0, 0.02), 0.7, 1.0, 0.3)
    variants = _variants()
    pairs = read_family([c for c in pair_comparisons(results) if c is not None])
    by_name = {(r.comparison.name, r.comparison.metric): r for r in pairs}
    gain = by_name[("XTC vs MT (equal, all labels)", "mIoU")]
    assert gain.comparison.n == 5 and gain.verdict == "better" and gain.p_holm < ALPHA
    noise = by_name[("XTC vs MT (uncertainty, all labels)", "mIoU")]
    assert noise.verdict == "not distinguishable"
    assert len(pairs) == 6  # the two finished pairs x (mIoU, abs err, Δm); no-seed pairs left out
    page = render_report(results, variants, {
        "command": "c", "machine": "host", "finished": "now", "runs": 30, "wall_min": 1.0,
        "val_frames": 4, "setup": "tiny", "status": status(results, variants, 5)})
    assert "Holm-corrected across the 6 comparisons" in page
    assert f"- {reading_sentence(gain, _FMT)}" in page
    assert "INCOMPLETE" in page and "Wall time and hardware" in page
    assert "3 of 3" not in page and "standard errors" not in page


def test_a_dataset_config_names_its_dataset_and_validation_split(tmp_path):
    rgb, d = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32)
    entries = [write_frame(tmp_path, f"f{i}", rgb, d, None, None) for i in range(5)]
    write_index(tmp_path, DatasetInfo("tiny", ["a"], [[0, 0, 0]], 2.0), entries,
                {"train": ["f0", "f1", "f2"], "val": ["f3"], "test": ["f4"]})
    base = load_config(None, ["data.name=folder", f"data.root={tmp_path}"])
    args = argparse.Namespace(seeds=2, scale=1.0, out=None, report=None, config="ds.yaml",
                              set=[f"data.root={tmp_path}"])
    ctx = _context(args, base, {}, 0.0)
    assert ctx["world"] == "folder" and ctx["val_frames"] == 1
    assert "--config ds.yaml --set" in ctx["command"] and "Config: `ds.yaml`" in ctx["setup"]
    page = render_report({}, _variants(), ctx)
    assert page.startswith("# Cross-task consistency and loss weighting (folder)")
    assert "never the test split" in page
