"""The statistics of a compare (Mann-Whitney U, Hodges-Lehmann) and the saved round-time summary,
checked against answers worked out by hand or known from the distribution the data came from."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from pyagentbench.results.samples import MAX_JSON_BYTES, SAMPLES_KEY, Samples
from pyagentbench.results.stats import geometric_mean, hodges_lehmann, log_shift, mann_whitney_u

# ---- Mann-Whitney U ----


def test_u_counts_pairs_where_now_is_larger_and_p_is_the_normal_approximation():
    # 1..5 against 6..10: every one of the 25 pairs has now larger, so U = 25. Under no change
    # U has mean 12.5 and variance 5*5*11/12; with the continuity correction z = 12 / sqrt(22.9167).
    u, p = mann_whitney_u([(x, 1) for x in range(1, 6)], [(x, 1) for x in range(6, 11)])
    assert u == 25
    z = 12 / math.sqrt(5 * 5 * 11 / 12)
    assert p == pytest.approx(2 * (1 - statistics.NormalDist().cdf(z)), rel=1e-12)
    assert p == pytest.approx(0.01219, abs=1e-5)


def test_u_gives_tied_values_their_mid_rank_and_corrects_the_variance():
    # base 1, 2, 2 and now 2, 3, 4: the three 2s share ranks 2-4 (mid-rank 3), so now's rank sum
    # is 3 + 5 + 6 = 14 and U = 14 - 6 = 8. One tie group of 3: variance 3*3/12 * (7 - 24/30) = 4.65.
    u, p = mann_whitney_u([(1.0, 1), (2.0, 2)], [(2.0, 1), (3.0, 1), (4.0, 1)])
    assert u == 8
    z = (abs(8 - 4.5) - 0.5) / math.sqrt(4.65)
    assert p == pytest.approx(2 * (1 - statistics.NormalDist().cdf(z)), rel=1e-12)


def test_u_of_identical_samples_is_not_significant():
    u, p = mann_whitney_u([(5.0, 10)], [(5.0, 7)])
    assert (u, p) == (35, 1.0)


def test_u_needs_values_on_both_sides():
    with pytest.raises(ValueError, match="both samples"):
        mann_whitney_u([], [(1.0, 1)])


# ---- Hodges-Lehmann ----


def test_hodges_lehmann_estimates_the_shift_between_two_samples():
    # Every pairwise difference of 11..13 and 1..3 lies in 8..12 and their median is 10.
    estimate, low, high = hodges_lehmann([(1, 1), (2, 1), (3, 1)], [(11, 1), (12, 1), (13, 1)])
    assert estimate == 10
    assert (low, high) == (8, 12)  # 3 against 3 is too few to cut any difference off at 95%


def test_the_confidence_interval_covers_the_true_shift_about_95_percent_of_the_time():
    rng = random.Random(7)
    covered = 0
    trials = 300
    for _ in range(trials):
        base = [(rng.gauss(0, 1), 1) for _ in range(16)]
        now = [(rng.gauss(0.5, 1), 1) for _ in range(16)]
        _, low, high = hodges_lehmann(base, now)
        covered += low <= 0.5 <= high
    assert 0.90 <= covered / trials <= 0.99


def test_a_log_shift_is_the_relative_change_in_percent():
    base = [(v, 1) for v in (1.0, 1.1, 0.9, 1.05, 0.95)]
    now = [(v * 1.2, 1) for v, _ in base]  # each value 20% larger
    shift = log_shift(base, now)
    assert shift.change == pytest.approx(20.0)
    assert shift.low < 20 < shift.high


def test_geometric_mean_of_a_doubling_and_a_halving_is_one():
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        geometric_mean([1.0, 0.0])


# ---- the saved summary of round times ----


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


QUANTILES = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]


@pytest.mark.parametrize("name, draw", [
    ("lognormal 100us", lambda rng: rng.lognormvariate(math.log(100e-6), 0.5)),
    ("exponential 1ms", lambda rng: rng.expovariate(1000)),
    ("uniform 1-2us", lambda rng: rng.uniform(1e-6, 2e-6)),
    ("bimodal 10us/10ms", lambda rng: rng.gauss(10e-6, 1e-6) if rng.random() < 0.9 else rng.gauss(10e-3, 1e-3)),
])
def test_quantiles_read_back_are_within_1_percent_of_the_raw_ones(name, draw):
    rng = random.Random(name)
    raw = [abs(draw(rng)) for _ in range(100_000)]
    summary = Samples.from_json(json.loads(json.dumps(Samples.from_values(raw).bounded().to_json())))
    ordered = sorted(raw)
    for q in QUANTILES:
        assert summary.quantile(q) == pytest.approx(nearest_rank(ordered, q), rel=0.01), q
    # statistics.quantiles interpolates between neighbours; the median agrees with it as well.
    assert summary.median == pytest.approx(statistics.median(raw), rel=0.01)
    assert summary.mean == pytest.approx(statistics.fmean(raw), rel=0.01)
    assert (summary.min, summary.max, summary.count) == (ordered[0], ordered[-1], len(raw))


def test_the_summary_stays_within_8_kib_and_says_how_precise_it_is():
    rng = random.Random(3)
    raw = [10 ** rng.uniform(-9, 3) for _ in range(200_000)]  # 12 decades, every bucket used
    summary = Samples.from_values(raw).bounded()
    text = json.dumps({SAMPLES_KEY: summary.to_json()}, separators=(",", ":"))
    assert len(text) <= MAX_JSON_BYTES
    assert summary.relative_error > 0.005  # it had to merge buckets, and says so
    ordered = sorted(raw)
    for q in QUANTILES:
        assert summary.quantile(q) == pytest.approx(nearest_rank(ordered, q), rel=summary.relative_error * 1.001)


def test_a_typical_benchmark_keeps_the_default_precision_in_a_few_kib():
    rng = random.Random(4)
    raw = [rng.lognormvariate(math.log(2e-6), 0.3) for _ in range(200_000)]
    summary = Samples.from_values(raw).bounded()
    assert summary.relative_error == 0.005
    assert len(json.dumps(summary.to_json())) < 4096


def test_blocks_are_the_medians_of_consecutive_rounds_in_order():
    raw = [1.0] * 160 + [2.0] * 160  # the second half of the run twice as slow
    summary = Samples.from_values(raw)
    assert summary.blocks == (1.0,) * 8 + (2.0,) * 8
    assert Samples.from_values([1.0] * 20).blocks == ()  # too few rounds for 16 blocks


def test_rounds_faster_than_the_clock_count_as_zeros():
    summary = Samples.from_values([0.0, 0.0, 1e-6, 2e-6])
    assert summary.zeros == 2
    assert summary.quantile(0.5) == 0.0
    assert summary.quantile(0.75) == pytest.approx(1e-6, rel=0.005)


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "format is 'other'"),
    ({"count": 5}, "hold 3 values, count says 5"),
    ({"bins": [1, 2, 3]}, "pairs"),
    ({"bins": [10, 1, 0, 2]}, "gaps and counts must be positive"),
    ({"relative_error": "x"}, "relative_error is 'x'"),
    ({"min": 5.0}, "min 5.0 is above max"),
    ({"blocks": ["a"]}, "blocks"),
])
def test_a_damaged_summary_is_refused_naming_the_key(change, message):
    data = Samples.from_values([1e-6, 2e-6, 3e-6]).to_json()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        Samples.from_json(data)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="no values"):
        Samples.from_values([])
    with pytest.raises(ValueError, match="finite"):
        Samples.from_values([1.0, math.nan])
