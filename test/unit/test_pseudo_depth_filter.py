"""The calibrated pseudo-depth filter (pseudo/thresholds.py): a constant prediction cannot pass;
end to end through run_pseudo_label (manifest, resume) and `mtl-train pseudo-label`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_pseudo_label import TinySource, _dataset, _save_teacher, run_cli_pseudo_label

import mtl_training.pseudo.run as run_module
from mtl_training.config import PseudoLabelConfig
from mtl_training.data.datasets import MultiTaskDataset
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.store import MANIFEST, PseudoLabelStore
from mtl_training.pseudo.teacher import load_teacher
from mtl_training.pseudo.thresholds import DepthCalibration, calibrated_depth_keep


def test_calibrated_depth_filter_rejects_a_constant_teacher_and_keeps_a_good_one():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1.0, 8.0, (64, 64)).astype(np.float32)
    valid = np.ones_like(truth, bool)
    # a constant prediction agrees with its mirror everywhere: flip agreement alone keeps it all
    const = np.full_like(truth, 4.0)
    cal = DepthCalibration()
    cal.add(np.zeros_like(truth), const, truth, valid)
    thr = cal.threshold(0.05)
    assert thr < 0 and not calibrated_depth_keep(const, const, 10.0, thr).any()
    # a teacher whose error grows with its flip disagreement: the filter keeps the accurate part
    noise = rng.uniform(0, 0.2, truth.shape).astype(np.float32)
    pred = truth * (1 + noise * rng.choice([-1, 1], truth.shape))
    signal = noise  # disagreement tracks the error
    cal = DepthCalibration()
    cal.add(signal, pred, truth, valid)
    thr = cal.threshold(0.05)
    kept = cal.kept_stats(thr)
    assert 0.3 < kept["coverage"] < 0.7 and kept["rel_err"] <= 0.05


def test_run_pseudo_label_with_the_calibrated_filter_records_and_reuses_its_threshold(
        tmp_path, monkeypatch):
    teacher = load_teacher(_save_teacher(tmp_path / "teacher", aux="seg"))
    ds = _dataset(aux="seg")
    # frames the teacher never trained on, fully labelled: what the threshold is read off
    held_out = MultiTaskDataset(TinySource(4), (8, 12))
    cfg = PseudoLabelConfig(depth_filter="calibrated", depth_max_rel_err=10.0, batch_size=4)
    with pytest.raises(PseudoLabelError, match="calibration frames"):
        run_pseudo_label(teacher, ds, tmp_path / "none", cfg, progress=False)
    out = tmp_path / "pseudo"
    partial = run_pseudo_label(teacher, ds, out, cfg, max_frames=1, progress=False,
                               calibration=held_out)
    assert not partial["complete"]
    manifest = json.loads((out / MANIFEST).read_text())
    threshold = manifest["depth_threshold"]
    assert manifest["depth_filter"] == "calibrated" and threshold > 0  # a loose target keeps
    assert set(manifest["calibrated"]) >= {"coverage", "rel_err", "pixels", "threshold"}
    assert manifest["calibrated"]["rel_err"] <= 10.0

    def no_calibration(*args, **kwargs):
        raise AssertionError("a resumed run must reuse the recorded threshold")

    with monkeypatch.context() as m:
        m.setattr(run_module, "calibrate_depth", no_calibration)
        done = run_pseudo_label(teacher, ds, out, cfg, progress=False, calibration=held_out)
    assert done["complete"] and done["calibration"]["threshold"] == threshold
    assert json.loads((out / MANIFEST).read_text())["depth_threshold"] == threshold
    assert PseudoLabelStore(out).task == "depth" and 0 < done["coverage"] <= 1
    # an unreachable target keeps nothing: the filter never falls back to flip agreement
    strict = PseudoLabelConfig(depth_filter="calibrated", depth_max_rel_err=1e-6, batch_size=4)
    none = run_pseudo_label(teacher, ds, tmp_path / "strict", strict, progress=False,
                            calibration=held_out)
    assert none["coverage"] == 0.0 and none["calibration"]["threshold"] == -1.0


def test_cli_calibrates_the_depth_filter_on_the_validation_split(tmp_path, capsys):
    out, printed, _ = run_cli_pseudo_label(tmp_path, capsys, ["--depth-filter", "calibrated"],
                                           aux_input="seg", val_frames=2,
                                           fraction="data.depth_fraction=0.34")
    assert "frames labelled (depth)" in printed and "calibrated threshold" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["depth_filter"] == "calibrated"
    assert manifest["calibration"]["start"] > 0  # the validation rooms, not training frames
