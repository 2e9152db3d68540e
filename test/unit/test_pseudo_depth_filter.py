"""The calibrated pseudo-depth filter (pseudo/thresholds.py): a constant prediction cannot pass."""

from __future__ import annotations

import numpy as np

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
