"""Histogram: accuracy against exact percentiles, moments, range policy, merge, JSON, memory."""

from __future__ import annotations

import array
import json
import math
import random
import statistics
import subprocess
import sys
import threading
import tracemalloc

import pytest

from pyagentbench import Histogram
from leakcheck import rss_growth_bytes


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def test_defaults_and_empty_histogram():
    h = Histogram()
    assert (h.lowest, h.highest, h.significant_figures, h.clamp) == (1, 3_600_000_000_000, 3, True)
    assert (h.count, h.min, h.max, h.mean, h.stddev, h.clamped) == (0, 0, 0, 0.0, 0.0, 0)
    assert h.percentile(50) == 0
    assert h.percentiles() == {50: 0, 95: 0, 99.0: 0, 99.9: 0}


@pytest.mark.parametrize("significant_figures", [1, 2, 3, 4])
@pytest.mark.parametrize("distribution", ["uniform", "lognormal", "small"])
def test_percentiles_within_relative_error_of_exact(significant_figures, distribution):
    rng = random.Random(f"{distribution}-{significant_figures}")
    if distribution == "uniform":
        values = [rng.randint(0, 10**9) for _ in range(20_000)]
    elif distribution == "lognormal":
        values = [int(rng.lognormvariate(12, 2)) for _ in range(20_000)]
    else:
        values = [rng.randint(0, 3000) for _ in range(20_000)]
    h = Histogram(significant_figures=significant_figures)
    h.record_many(values)
    values.sort()
    bound = 10.0**-significant_figures
    for p in [0, 0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100]:
        exact = exact_percentile(values, p)
        got = h.percentile(p)
        assert abs(got - exact) <= bound * exact, (p, got, exact)
    assert h.min == values[0] and h.max == values[-1]
    assert h.percentile(100) == values[-1]


def test_mean_and_stddev_match_statistics():
    rng = random.Random(7)
    values = [rng.randint(1, 10**7) for _ in range(10_000)]
    h = Histogram()
    for v in values:
        h.record(v)
    assert h.count == len(values)
    assert h.mean == pytest.approx(statistics.fmean(values), rel=1e-9)
    assert h.stddev == pytest.approx(statistics.pstdev(values), rel=1e-9)


def test_record_count_and_float_values():
    h = Histogram()
    h.record(100, 3)
    h.record(200, count=2)
    h.record(300, 0)
    h.record(150.6)
    assert h.count == 6
    assert h.max == 200 and h.min == 100
    assert h.percentile(50) == 100
    assert h.percentiles([50, 100]) == {50: 100, 100: 200}


def test_bad_arguments_raise_clear_errors():
    h = Histogram()
    with pytest.raises(TypeError, match="value"):
        h.record("12")
    with pytest.raises(ValueError, match="NaN"):
        h.record(float("nan"))
    with pytest.raises(ValueError, match="count"):
        h.record(1, -1)
    with pytest.raises(TypeError, match="count"):
        h.record(1, count="2")
    with pytest.raises(TypeError):
        h.record(1, weight=2)
    with pytest.raises(ValueError, match="between 0 and 100"):
        h.percentile(101)
    with pytest.raises(TypeError, match="p must be a number"):
        h.percentile("50")
    with pytest.raises(TypeError, match="Histogram"):
        h.merge([1, 2])
    with pytest.raises(ValueError, match="lowest"):
        Histogram(lowest=0)
    with pytest.raises(ValueError, match="highest"):
        Histogram(lowest=10, highest=15)
    with pytest.raises(ValueError, match="significant_figures"):
        Histogram(significant_figures=6)
    with pytest.raises(TypeError):
        Histogram(lowest="1")


def test_out_of_range_values_are_clamped_and_counted():
    h = Histogram(highest=1000)
    h.record(5000)
    h.record(-3, 2)
    assert h.clamped == 3
    assert h.max == 1000 and h.min == 0
    assert h.count == 3
    strict = Histogram(highest=1000, clamp=False)
    with pytest.raises(ValueError, match="outside"):
        strict.record(1001)
    with pytest.raises(ValueError, match="outside"):
        strict.record(-1)
    assert strict.count == 0
    h.record(2**80)
    assert h.clamped == 4 and h.max == 1000


def test_record_many_buffers_and_iterables():
    values = [1, 10, 100, 1000, 10_000]
    for source in (
        values,
        iter(values),
        array.array("q", values),
        array.array("Q", values),
        array.array("i", values),
        array.array("d", [float(v) for v in values]),
        memoryview(array.array("q", values)),
    ):
        h = Histogram()
        h.record_many(source)
        assert (h.count, h.min, h.max) == (5, 1, 10_000), source
    with pytest.raises(TypeError, match="format"):
        Histogram().record_many(array.array("f", [1.0]))
    with pytest.raises(TypeError, match="iterable"):
        Histogram().record_many(5)
    with pytest.raises(TypeError, match="value"):
        Histogram().record_many([1, "x"])


def test_merge_equals_recording_everything():
    rng = random.Random(3)
    a_values = [rng.randint(1, 10**6) for _ in range(5000)]
    b_values = [rng.randint(1, 10**9) for _ in range(5000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    a.record_many(a_values)
    b.record_many(b_values)
    both.record_many(a_values + b_values)
    a.merge(b)
    assert a.to_dict()["counts"] == both.to_dict()["counts"]
    assert (a.count, a.min, a.max) == (both.count, both.min, both.max)
    assert a.mean == pytest.approx(both.mean, rel=1e-9)
    assert a.stddev == pytest.approx(both.stddev, rel=1e-9)
    a.merge(a)
    assert a.count == 2 * both.count


def test_merge_across_layouts_keeps_precision_of_the_coarser():
    fine = Histogram(significant_figures=4)
    coarse = Histogram(significant_figures=2, highest=10**6)
    values = list(range(1, 2_000_000, 997))
    fine.record_many(values)
    coarse.merge(fine)
    assert coarse.count == len(values)
    assert coarse.clamped == sum(1 for v in values if v > 10**6)
    inside = sorted(min(v, 10**6) for v in values)
    for p in [10, 50, 90]:
        exact = exact_percentile(inside, p)
        assert abs(coarse.percentile(p) - exact) <= 0.011 * exact


def test_reset_and_copy_are_independent():
    h = Histogram()
    h.record_many(range(1, 1000))
    copy = h.copy()
    h.reset()
    assert h.count == 0 and h.percentile(99) == 0
    assert copy.count == 999 and copy.max == 999


def test_to_dict_round_trips_through_json():
    h = Histogram(lowest=10, highest=10**10, significant_figures=2)
    rng = random.Random(11)
    h.record_many(rng.randint(0, 10**8) for _ in range(3000))
    h.record(10**11)
    data = json.loads(json.dumps(h.to_dict()))
    back = Histogram.from_dict(data)
    assert back.to_dict() == h.to_dict()
    assert back.percentiles([1, 50, 99]) == h.percentiles([1, 50, 99])
    assert (back.mean, back.stddev, back.clamped) == (h.mean, h.stddev, h.clamped)


def test_from_dict_rejects_inconsistent_data():
    data = Histogram().to_dict()
    data["count"] = 5
    with pytest.raises(ValueError, match="disagree"):
        Histogram.from_dict(data)
    with pytest.raises(ValueError, match="lowest"):
        Histogram.from_dict({"counts": []})
    with pytest.raises(TypeError, match="dict"):
        Histogram.from_dict([1])
    good = Histogram().to_dict()
    good["counts"] = [[10**9, 1]]
    good["count"] = 1
    with pytest.raises(ValueError, match="counts entry"):
        Histogram.from_dict(good)


def test_memory_is_fixed_and_recording_does_not_allocate():
    h = Histogram()
    size = h.memory_bytes
    record = h.record
    tracemalloc.start()
    try:
        record(100)
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(10_000):
            record(100)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024
    assert h.memory_bytes == size
    assert Histogram(significant_figures=1).memory_bytes < size


def test_threads_recording_concurrently_lose_nothing():
    h = Histogram()

    def work():
        record = h.record
        for i in range(50_000):
            record(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.count == 200_000
    assert h.mean == pytest.approx(24_999.5, rel=1e-9)
    assert h.max == 49_999 and h.min == 0


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_one_million_records_keep_rss_flat():
    h = Histogram()
    record = h.record

    def op(n):
        for i in range(n):
            record(i)
        h.percentile(99)

    assert rss_growth_bytes(op, 1_000_000) < 4 * 1024 * 1024


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_many_histograms_created_and_freed_keep_rss_flat():
    def op(n):
        for _ in range(n):
            h = Histogram(significant_figures=2)
            h.record(5)
            h.copy()
            h.to_dict()

    assert rss_growth_bytes(op, 20_000, batch=2_000) < 4 * 1024 * 1024


# ---- Python code run mid-call, and count overflow (regressions) ----


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (a crash must not take pytest down with it)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": ":".join(sys.path), "PYTHONFAULTHANDLER": "1"},
    )


@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_percentiles_holds_its_ps_while_their_float_runs():
    # A p whose __float__ empties the list it came from drops the last reference to itself.
    code = """if True:
        from pyagentbench import Histogram
        h = Histogram()
        h.record(5)
        class P:
            def __float__(self):
                ps.clear()
                return 50.0
            def __hash__(self):
                return 1
            def __eq__(self, other):
                return self is other
        ps = [P(), P()]
        result = h.percentiles(ps)
        assert sorted(result.values()) == [5, 5], result
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_from_dict_holds_counts_while_entries_run_python_code():
    # An entry's __index__ drops data["counts"] (and the entries with it) mid-iteration.
    code = """if True:
        from pyagentbench import Histogram
        d = Histogram().to_dict()
        class Evil:
            def __index__(self):
                d.pop("counts", None)
                [[object()] * 50 for _ in range(100)]
                return 0
        class Shrinking(list):
            def __getitem__(self, i):
                d["counts"].clear()
                return list.__getitem__(self, i)
        d["counts"] = [[Evil(), 1]] + [[0, 1] for _ in range(1000)]
        d["count"], d["min"], d["max"] = 1001, 0, 0
        h = Histogram.from_dict(d)
        assert (h.count, h.min, h.max) == (1001, 0, 0), h
        d = Histogram().to_dict()
        d["counts"] = [Shrinking([0, 1])] + [[0, 1] for _ in range(100)]
        d["count"], d["min"], d["max"] = 101, 0, 0
        h = Histogram.from_dict(d)
        assert h.count == 101, h
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_from_dict_validates_significant_figures_before_narrowing():
    d = Histogram(significant_figures=3).to_dict()
    for bad in (2**32 + 3, -(2**32) + 3, 0, 6):
        with pytest.raises(ValueError, match="significant_figures"):
            Histogram.from_dict({**d, "significant_figures": bad})
    assert Histogram.from_dict(d).significant_figures == 3


def test_count_overflow_raises_and_changes_nothing():
    h = Histogram()
    h.record(5, count=2**62)
    with pytest.raises(OverflowError):
        h.record(5, count=2**62)
    with pytest.raises(OverflowError):
        h.record(7, count=2**62)
    assert (h.count, h.min, h.max, h.percentile(50)) == (2**62, 5, 5, 5)
    h.record(5, count=2**62 - 1)  # up to the int64 maximum is fine
    assert h.count == 2**63 - 1
    with pytest.raises(OverflowError):
        h.record(5)
    with pytest.raises(OverflowError):
        h.record_many([5])
    with pytest.raises(OverflowError):
        h.record_many(array.array("q", [5]))
    assert h.count == 2**63 - 1 and h.clamped == 0

    clamped = Histogram(highest=1000)
    clamped.record(10**6, count=2**62)
    with pytest.raises(OverflowError):
        clamped.record(10**6, count=2**62)
    assert (clamped.count, clamped.clamped) == (2**62, 2**62)

    a, b = Histogram(), Histogram()
    a.record(3, count=2**62)
    b.record(4, count=2**62)
    before = a.to_dict()
    with pytest.raises(OverflowError):
        a.merge(b)
    with pytest.raises(OverflowError):
        a.merge(a)
    with pytest.raises(OverflowError):
        a.merge(Histogram.from_dict({**b.to_dict()}))
    other_layout = Histogram(highest=10**6, significant_figures=2)
    other_layout.record(4, count=2**62)
    with pytest.raises(OverflowError):
        a.merge(other_layout)
    assert a.to_dict() == before

    d = Histogram().to_dict()
    d["counts"] = [[1, 2**62], [1, 2**62]]
    d["count"], d["min"], d["max"] = 0, 1, 1
    with pytest.raises(OverflowError):
        Histogram.from_dict(d)


def test_out_of_range_message_reports_the_value_passed_not_a_saturated_int64():
    import array

    h = Histogram(clamp=False)
    with pytest.raises(ValueError, match=r"^Histogram\.record\(\): value 100000000000000000000 is outside"):
        h.record(10**20)
    with pytest.raises(ValueError, match=r"value -1e\+30 is outside"):
        h.record(-1e30)
    with pytest.raises(ValueError, match=r"^Histogram\.record_many\(\): value 100000000000000000000 is outside"):
        h.record_many([1, 10**20])
    with pytest.raises(ValueError, match=r"value 18446744073709551615 is outside"):
        h.record_many(array.array("Q", [2**64 - 1]))
    assert h.count == 1  # only the 1 before the bad value
