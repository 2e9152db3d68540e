"""The studies' one statistical rule (mtl_training/stats.py) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from mtl_training.stats import (
    ALPHA,
    family_markdown,
    holm,
    paired,
    paired_by_seed,
    read_family,
    reading_sentence,
    readings_table,
)


def test_paired_matches_scipy_ttest_rel_and_t_interval():
    rng = np.random.default_rng(3)
    ref = rng.normal(0.5, 0.05, 5)
    treat = ref + rng.normal(0.02, 0.01, 5)
    c = paired("x", "mIoU", treat, ref)
    expected = sps.ttest_rel(treat, ref)
    assert c.p == pytest.approx(expected.pvalue, rel=1e-9)
    d = treat - ref
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert c.n == 5 and c.mean == pytest.approx(d.mean())


def test_holm_hand_computed():
    # sorted p: 0.01 (x4), 0.02 (x3), 0.03 (x2 -> 0.06), 0.5 (x1); monotone step-down
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone


def test_verdict_uses_the_corrected_p_and_the_metric_direction():
    base = [0.50, 0.52, 0.49, 0.51, 0.50]
    clear_gain = paired("gain", "mIoU", [b + 0.05 + 0.001 * i for i, b in enumerate(base)], base)
    err_up = paired("err", "abs err", [b + 0.05 + 0.001 * i for i, b in enumerate(base)], base,
                    higher_is_better=False)
    marginal = paired("marginal", "mIoU",
                      [b + d for b, d in zip(base, [0.01, 0.02, 0.015, 0.005, 0.02], strict=True)],
                      base)
    assert marginal.p < ALPHA  # uncorrected it would pass...
    readings = read_family([clear_gain, err_up, marginal] + [marginal] * 7)
    verdicts = [r.verdict for r in readings]
    assert verdicts[0] == "better" and verdicts[1] == "worse"
    assert verdicts[2] == "not distinguishable"  # ...but not after Holm over 10 comparisons
    row = readings_table(readings[:1])[0]
    assert row["verdict"] == "better" and row["seeds"] == "5"
    assert "Holm p" in reading_sentence(readings[0]) and "better" in reading_sentence(readings[0])


def test_unpaired_or_nonfinite_values_are_refused():
    with pytest.raises(ValueError, match="pair them by seed"):
        paired("x", "m", [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        paired("x", "m", [1, float("nan")], [1, 2])



def test_paired_by_seed_pairs_on_the_common_seeds_only():
    treat = {0: 0.6, 1: 0.7, 2: 0.65, 4: 0.9}  # seed 4: the reference has not finished it
    ref = {0: 0.5, 1: 0.6, 2: 0.6, 3: 0.1}
    c = paired_by_seed("x", "mIoU", treat, ref)
    assert c is not None and c.n == 3
    assert c == paired("x", "mIoU", [0.6, 0.7, 0.65], [0.5, 0.6, 0.6])
    assert paired_by_seed("x", "mIoU", {0: 1.0}, {0: 0.5, 1: 0.4}) is None


def test_family_markdown_generates_rule_table_and_verdicts_from_holm_p():
    base = [0.50, 0.52, 0.49, 0.51, 0.50]
    clear = paired("A vs B", "mIoU", [b + 0.05 + 0.001 * i for i, b in enumerate(base)], base)
    marginal = paired("C vs B", "mIoU",
                      [b + d for b, d in zip(base, [0.01, 0.02, 0.015, 0.005, 0.02], strict=True)],
                      base)
    lines = family_markdown([clear, None] + [marginal] * 7)
    text = "\n".join(lines)
    assert "Holm-corrected across the 8 comparisons" in lines[0]  # None rows are left out
    expected = read_family([clear] + [marginal] * 7)
    assert expected[1].p_holm >= ALPHA > marginal.p  # significant alone, not in the family
    for r in expected:
        assert f"- {reading_sentence(r)}" in lines
    assert text.count("| better |") == 1 and text.count("| not distinguishable |") == 7
    assert "provisional" not in text
    short = family_markdown([paired("D vs B", "mIoU", [0.6, 0.7, 0.8], [0.5, 0.5, 0.5])])
    assert any("provisional" in line for line in short)
    assert family_markdown([None]) == ["No comparison has two paired seeds yet."]
    # per-metric formats
    err = paired("E vs B", "abs err", [0.3, 0.31, 0.29], [0.35, 0.36, 0.34],
                 higher_is_better=False)
    assert "abs err -0.05 " in "\n".join(family_markdown([err], {"abs err": "+.2f"}))
