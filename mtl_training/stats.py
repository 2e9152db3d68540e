"""One statistical rule for every study: paired differences, 95 % intervals, Holm-corrected p.

A study trains each arm on the same seeds (same synthetic world, same label subsets, same
initialisation), so arm B minus arm A per seed is a paired difference and the seed-to-seed
spread that both arms share cancels. The rule:

- the effect is the mean paired difference with a two-sided 95 % Student-t interval;
- its p-value is the paired t-test's (H0: mean difference 0), two-sided;
- the p-values of one table (every comparison it reads) are Holm-corrected together, which
  controls the family-wise error rate without assuming the comparisons are independent;
- a difference is called real ("better"/"worse") only where the corrected p < ALPHA; otherwise
  the reading is "not distinguishable", whatever the sign of the mean.

Why a t-test and not a rank test: with 5 seeds, the exact two-sided Wilcoxon signed-rank p can
never go below 2/32 = 0.0625, so a rank test could not call anything real at this sample size.
The t-test assumes roughly normal paired differences; the interval says how wide the doubt is.
Why at least MIN_SEEDS: with 3 seeds a sign agreement alone has p = 0.25, and a t interval has 2
degrees of freedom (t = 4.30), too wide to separate the effects these studies measure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

from mtl_training.report import markdown_table

ALPHA = 0.05
MIN_SEEDS = 5


@dataclass(frozen=True)
class Comparison:
    """Arm `treatment` against arm `reference` on one metric, paired over seeds."""

    name: str  # what is compared, e.g. "UMMT-PS vs UMMT, mIoU @ 10 % labels"
    metric: str
    n: int  # seeds that both arms finished
    mean: float  # mean of (treatment - reference)
    sd: float  # sample standard deviation of the differences (ddof 1)
    ci_low: float
    ci_high: float
    p: float  # two-sided paired t-test, uncorrected
    higher_is_better: bool = True

    @property
    def favourable(self) -> bool:
        """Whether the mean difference points the good way for this metric."""
        return (self.mean > 0) == self.higher_is_better


def paired(name: str, metric: str, treatment: Sequence[float], reference: Sequence[float],
           higher_is_better: bool = True, confidence: float = 0.95) -> Comparison:
    """The paired comparison of two arms' per-seed values (same order = same seed).

    Non-finite pairs are an error, not dropped: a diverged run is a result the table must show.
    """
    if len(treatment) != len(reference):
        raise ValueError(f"{name}: {len(treatment)} treatment values vs {len(reference)} "
                         "reference values; pair them by seed")
    diffs = [float(t) - float(r) for t, r in zip(treatment, reference, strict=True)]
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"{name}: non-finite value among {diffs}")
    n = len(diffs)
    if n < 2:
        raise ValueError(f"{name}: a paired interval needs at least 2 seeds, got {n}")
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    t_crit = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    if se == 0.0:  # identical differences: the interval is a point; p is 0 unless it is 0
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2.0 * _scipy_stats.t.sf(abs(mean / se), n - 1))
    return Comparison(name, metric, n, mean, sd, mean - t_crit * se, mean + t_crit * se, p,
                      higher_is_better)


def paired_by_seed(name: str, metric: str, treatment: Mapping[int, float],
                   reference: Mapping[int, float], higher_is_better: bool = True
                   ) -> Comparison | None:
    """`paired` over the seeds both arms finished ({seed: value} each); None below 2 seeds."""
    seeds = sorted(set(treatment) & set(reference))
    if len(seeds) < 2:
        return None
    return paired(name, metric, [treatment[s] for s in seeds], [reference[s] for s in seeds],
                  higher_is_better)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Reading:
    """One comparison with its family-corrected p-value and the verdict the rule gives."""

    comparison: Comparison
    p_holm: float

    @property
    def verdict(self) -> str:
        if self.p_holm >= ALPHA:
            return "not distinguishable"
        return "better" if self.comparison.favourable else "worse"


def read_family(comparisons: Sequence[Comparison]) -> list[Reading]:
    """Holm-correct one table's comparisons together and give each its verdict."""
    adjusted = holm([c.p for c in comparisons])
    return [Reading(c, p) for c, p in zip(comparisons, adjusted, strict=True)]


Fmt = str | Mapping[str, str]  # one format, or one per metric name (default "+.3f")


def _fmt(v: float, fmt: Fmt, metric: str = "") -> str:
    return format(v, fmt if isinstance(fmt, str) else fmt.get(metric, "+.3f"))


def readings_table(readings: Sequence[Reading], fmt: Fmt = "+.3f") -> list[dict[str, str]]:
    """Rows for report.markdown_table: effect, interval, raw and corrected p, verdict."""
    return [{
        "comparison": r.comparison.name,
        "metric": r.comparison.metric,
        "seeds": str(r.comparison.n),
        "mean diff": _fmt(r.comparison.mean, fmt, r.comparison.metric),
        "95 % CI": f"[{_fmt(r.comparison.ci_low, fmt, r.comparison.metric)}, "
                   f"{_fmt(r.comparison.ci_high, fmt, r.comparison.metric)}]",
        "p": f"{r.comparison.p:.3g}",
        "p (Holm)": f"{r.p_holm:.3g}",
        "verdict": r.verdict,
    } for r in readings]


def reading_sentence(r: Reading, fmt: Fmt = "+.3f") -> str:
    """One generated sentence per comparison, so a doc's prose cannot drift from its numbers."""
    c = r.comparison
    m = c.metric
    return (f"{c.name}: {m} {_fmt(c.mean, fmt, m)} (95 % CI {_fmt(c.ci_low, fmt, m)} to "
            f"{_fmt(c.ci_high, fmt, m)}, {c.n} seeds, Holm p = {r.p_holm:.3g}): {r.verdict}.")


def rule_text(family_size: int) -> str:
    """The rule as the docs state it, with this table's family size."""
    plural = "s" if family_size != 1 else ""
    return (f"Paired over seeds; 95 % Student-t intervals; two-sided paired t-test p-values, "
            f"Holm-corrected across the {family_size} comparison{plural} of this table; a "
            f"difference is called better/worse only where the corrected p < {ALPHA} "
            "(mtl_training/stats.py).")


def family_markdown(comparisons: Sequence[Comparison | None], fmt: Fmt = "+.3f") -> list[str]:
    """One table's comparisons (None = not enough seeds yet, left out) as a doc section's lines:
    the rule with this family's size, the table, and one generated sentence each."""
    present = [c for c in comparisons if c is not None]
    if not present:
        return ["No comparison has two paired seeds yet."]
    readings = read_family(present)
    lines = [rule_text(len(present)), ""]
    if any(c.n < MIN_SEEDS for c in present):
        lines += [f"Some comparisons have fewer than {MIN_SEEDS} paired seeds: their verdicts "
                  "are provisional.", ""]
    lines += [markdown_table(readings_table(readings, fmt)), ""]
    lines += [f"- {reading_sentence(r, fmt)}" for r in readings]
    return lines
