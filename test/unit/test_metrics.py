import math

import numpy as np
import pytest

from mtl_perception.core.metrics import DepthMetrics, SegMetrics, delta_m


def test_seg_metrics_hand_computed():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    m = SegMetrics(3)
    m.update(pred, target)
    r = m.compute()
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 3, gt 3, pred 4 -> 3/4;
    # class 2: tp 1, gt 2, pred 1 -> 1/2
    assert r["per_class_iou"] == pytest.approx({"0": 1 / 3, "1": 0.75, "2": 0.5})
    assert r["miou"] == pytest.approx((1 / 3 + 0.75 + 0.5) / 3)
    assert r["pixel_acc"] == pytest.approx(5 / 7)


def test_seg_metrics_absent_class_not_averaged_and_accumulates():
    m = SegMetrics(3)
    m.update(np.array([0, 0]), np.array([0, 0]))
    m.update(np.array([1]), np.array([1]))
    r = m.compute()
    assert r["miou"] == 1.0 and "2" not in r["per_class_iou"]
    m.reset()
    assert math.isnan(m.compute()["miou"])


def test_depth_metrics_hand_computed():
    t = np.array([1.0, 2.0, 4.0, 0.0])
    p = np.array([1.1, 1.5, 4.0, 3.0])  # last pixel invalid
    m = DepthMetrics()
    m.update(p, t)
    r = m.compute()
    assert r["abs_err"] == pytest.approx((0.1 + 0.5 + 0) / 3)
    assert r["rel_err"] == pytest.approx((0.1 / 1 + 0.5 / 2 + 0) / 3)
    assert r["rmse"] == pytest.approx(math.sqrt((0.01 + 0.25) / 3))
    assert r["delta1"] == pytest.approx(2 / 3)  # 2.0/1.5 = 1.333 fails


def test_delta_m_signs():
    base = {"miou": 0.5, "abs_err": 1.0}
    keys = ("miou", "abs_err")
    assert delta_m({"miou": 0.55, "abs_err": 0.9}, base, keys) == pytest.approx(10.0)
    assert delta_m({"miou": 0.45, "abs_err": 1.1}, base, keys) == pytest.approx(-10.0)
