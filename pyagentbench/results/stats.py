"""Statistics of a compare, from the standard library only: the Mann-Whitney U test and the
Hodges-Lehmann estimate of a shift with its confidence interval, on weighted samples.

Samples are ``(value, count)`` pairs, so the bucketed summaries of :mod:`.samples` are used as they
are saved (equal values are ties). Shifts of timings are taken on the log scale, so a shift is a
ratio: ``exp(shift) - 1`` is the relative change.

Why these two: the U test and the Hodges-Lehmann interval come from the same ranks, so the p-value
and the interval never disagree (the 95% interval excludes no change exactly when the test's
two-sided p is below 5%, up to the normal approximation); neither assumes a distribution (timings
are skewed, with long right tails); and both are deterministic, so the same two files give the same
verdict every time, unlike a bootstrap, which also needs the raw values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable, Sequence

__all__ = ["Weighted", "mann_whitney_u", "hodges_lehmann", "Shift", "log_shift", "geometric_mean",
           "run_noise", "widen", "MIN_RUN_NOISE_BENCHMARKS"]

#: (value, count) pairs; the counts are positive whole numbers.
Weighted = Sequence[tuple[float, int]]

_NORMAL = NormalDist()
#: Most distinct pairwise differences the Hodges-Lehmann interval computes exactly; beyond it the
#: larger sample is merged into fewer, wider value groups first.
MAX_PAIRS = 40_000
#: Fewest benchmarks with tested changes from which a compare estimates the run-to-run noise.
MIN_RUN_NOISE_BENCHMARKS = 6


def _total(sample: Weighted) -> int:
    return sum(count for _, count in sample)


def mann_whitney_u(base: Weighted, now: Weighted) -> tuple[float, float]:
    """(U of *now*, two-sided p) of the Mann-Whitney U test, normal approximation with the tie
    correction and a continuity correction. U counts pairs where *now* is larger (ties count 1/2):
    U / (n * m) near 1 means *now* is larger. p is 1.0 when every value is the same."""
    n, m = _total(base), _total(now)
    if n == 0 or m == 0:
        raise ValueError("mann_whitney_u(): both samples need values")
    merged: dict[float, list[int]] = {}
    for value, count in base:
        merged.setdefault(value, [0, 0])[0] += count
    for value, count in now:
        merged.setdefault(value, [0, 0])[1] += count
    rank_sum_now = 0.0
    ties = 0.0
    below = 0
    for value in sorted(merged):
        in_base, in_now = merged[value]
        tied = in_base + in_now
        mid_rank = below + (tied + 1) / 2
        rank_sum_now += in_now * mid_rank
        ties += tied ** 3 - tied
        below += tied
    u_now = rank_sum_now - m * (m + 1) / 2
    total = n + m
    variance = n * m / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return u_now, 1.0
    excess = abs(u_now - n * m / 2)
    z = max(0.0, excess - 0.5) / math.sqrt(variance)
    return u_now, min(1.0, 2 * (1 - _NORMAL.cdf(z)))


def _coarsen(sample: Weighted, groups: int) -> list[tuple[float, int]]:
    """*sample* merged into at most *groups* groups of neighbouring values (each the weighted mean
    of its values), for an interval over samples with very many distinct values."""
    ordered = sorted(sample)
    if len(ordered) <= groups:
        return list(ordered)
    size = math.ceil(len(ordered) / groups)
    merged = []
    for start in range(0, len(ordered), size):
        chunk = ordered[start:start + size]
        weight = sum(c for _, c in chunk)
        merged.append((sum(v * c for v, c in chunk) / weight, weight))
    return merged


def _weighted_rank(pairs: list[tuple[float, int]], rank: int) -> float:
    """The value at 1-based *rank* in sorted weighted *pairs*."""
    seen = 0
    for value, count in pairs:
        seen += count
        if seen >= rank:
            return value
    return pairs[-1][0]


def hodges_lehmann(base: Weighted, now: Weighted, confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the Hodges-Lehmann estimate of the shift *now* - *base* (the median
    of all pairwise differences) and its distribution-free confidence interval (the differences at
    the ranks the U test's critical value gives, normal approximation)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, m = _total(base), _total(now)
    if n == 0 or m == 0:
        raise ValueError("hodges_lehmann(): both samples need values")
    a, b = list(base), list(now)
    while len(a) * len(b) > MAX_PAIRS:
        if len(a) >= len(b):
            a = _coarsen(a, max(1, len(a) // 2))
        else:
            b = _coarsen(b, max(1, len(b) // 2))
    differences: dict[float, int] = {}
    for y, cy in b:
        for x, cx in a:
            d = y - x
            differences[d] = differences.get(d, 0) + cx * cy
    pairs = sorted(differences.items())
    total = n * m
    half = (total + 1) / 2
    estimate = (_weighted_rank(pairs, math.floor(half)) + _weighted_rank(pairs, math.ceil(half))) / 2
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    k = math.floor(total / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))
    k = max(k, 0)
    low = _weighted_rank(pairs, k + 1)
    high = _weighted_rank(pairs, total - k)
    return estimate, low, high


@dataclass(frozen=True)
class Shift:
    """A relative change of a timing (``now / base - 1``, in percent) with its 95% confidence
    interval (``low``, ``high``) and p-value; n and m are the numbers of base and now replicates.

    From :func:`log_shift` these are the within-run figures: the Hodges-Lehmann interval and the
    U test's p. :func:`widen` adds the run-to-run noise and the number of benchmarks compared
    together (``tests``): the interval then includes the noise, and ``p_value`` is the larger of
    the U test's p (kept as ``p_within``) and the normal p of the change against both noises,
    times ``tests`` (Bonferroni), capped at 1.
    """

    change: float
    low: float
    high: float
    p_value: float
    n: int
    m: int
    #: The run-to-run noise (in percent, one standard deviation) the interval was widened by.
    run_noise: float = 0.0
    #: How many benchmarks' changes of this metric were tested together.
    tests: int = 1
    #: The U test's p on the replicates alone.
    p_within: float = 1.0

    def _log_se(self, side: float) -> float:
        """The standard error (log scale) on the side of *side* (low or high), from the 95% interval."""
        return abs(math.log1p(side / 100) - math.log1p(self.change / 100)) / _Z95

    def lower_bound(self, alpha: float) -> float:
        """The change (percent) the one-sided ``1 - alpha / tests`` confidence bound puts it above."""
        z = _NORMAL.inv_cdf(1 - alpha / self.tests)
        return math.expm1(math.log1p(self.change / 100) - z * self._log_se(self.low)) * 100

    def upper_bound(self, alpha: float) -> float:
        """The change (percent) the one-sided ``1 - alpha / tests`` confidence bound puts it below."""
        z = _NORMAL.inv_cdf(1 - alpha / self.tests)
        return math.expm1(math.log1p(self.change / 100) + z * self._log_se(self.high)) * 100


_Z95 = _NORMAL.inv_cdf(0.975)


def log_shift(base: Weighted, now: Weighted, confidence: float = 0.95) -> Shift:
    """The relative change from *base* to *now* (positive values) as a Hodges-Lehmann shift of the
    logs, in percent, with its interval, and the U test's p-value."""
    for name, sample in (("base", base), ("now", now)):
        if any(value <= 0 for value, _ in sample):
            raise ValueError(f"log_shift(): the {name} sample has a value <= 0")
    log_base = [(math.log(v), c) for v, c in base]
    log_now = [(math.log(v), c) for v, c in now]
    estimate, low, high = hodges_lehmann(log_base, log_now, confidence)
    _, p = mann_whitney_u(base, now)

    def percent(x: float) -> float:
        return math.expm1(x) * 100

    return Shift(percent(estimate), percent(low), percent(high), p, _total(base), _total(now), p_within=p)


def geometric_mean(values: Iterable[float]) -> float:
    """The geometric mean of positive *values*; ValueError when there are none or one is <= 0."""
    logs = []
    for value in values:
        if value <= 0:
            raise ValueError(f"geometric_mean(): {value} is not positive")
        logs.append(math.log(value))
    if not logs:
        raise ValueError("geometric_mean(): no values")
    return math.exp(sum(logs) / len(logs))


def run_noise(changes: Iterable[float], minimum: int = MIN_RUN_NOISE_BENCHMARKS) -> float | None:
    """How much benchmarks moved between two runs beyond their own noise, from their *changes*
    (percent): the median absolute deviation of the log ratios from their median, times 1.4826
    (a standard deviation for normal data, and robust to a few benchmarks that really changed),
    in percent. None when fewer than *minimum* changes are given."""
    logs = [math.log1p(c / 100) for c in changes if c > -100]
    if len(logs) < minimum:
        return None
    center = _median(logs)
    return math.expm1(1.4826 * _median([abs(x - center) for x in logs])) * 100


def widen(shift: Shift, noise: float, tests: int = 1) -> Shift:
    """*shift* (from :func:`log_shift`) with run-to-run *noise* (percent, one standard deviation)
    added in quadrature, on the log scale, to each side of its 95% interval, and its p-value the
    larger of the U test's and the normal p against both noises, times *tests* (capped at 1)."""
    if tests < 1:
        raise ValueError(f"tests must be >= 1, got {tests}")
    extra = math.log1p(noise / 100)
    center = math.log1p(shift.change / 100)
    low_se = math.hypot((center - math.log1p(shift.low / 100)) / _Z95, extra)
    high_se = math.hypot((math.log1p(shift.high / 100) - center) / _Z95, extra)
    se = low_se if center > 0 else high_se
    p_normal = 1.0 if se == 0 else 2 * (1 - _NORMAL.cdf(abs(center) / se))
    if se == 0 and center != 0:
        p_normal = 0.0
    p = min(1.0, max(shift.p_within, p_normal) * tests)
    return Shift(shift.change, math.expm1(center - _Z95 * low_se) * 100,
                 math.expm1(center + _Z95 * high_se) * 100, p, shift.n, shift.m, noise, tests,
                 shift.p_within)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
