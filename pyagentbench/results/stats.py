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

__all__ = ["Weighted", "mann_whitney_u", "hodges_lehmann", "Shift", "log_shift", "geometric_mean"]

#: (value, count) pairs; the counts are positive whole numbers.
Weighted = Sequence[tuple[float, int]]

_NORMAL = NormalDist()
#: Most distinct pairwise differences the Hodges-Lehmann interval computes exactly; beyond it the
#: larger sample is merged into fewer, wider value groups first.
MAX_PAIRS = 40_000


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
    """A relative change of a timing (``now / base - 1``, in percent) with its confidence interval
    and the U test's two-sided p-value; n and m are the numbers of base and now replicates."""

    change: float
    low: float
    high: float
    p_value: float
    n: int
    m: int


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

    return Shift(percent(estimate), percent(low), percent(high), p, _total(base), _total(now))


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
