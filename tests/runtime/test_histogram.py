"""Histogram: accuracy against exact percentiles, moments, range policy, merge, JSON, memory."""

from __future__ import annotations

import array
import json
import math
import os
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


def counts_bytes(largest: int) -> int:
    """What the counts of a Histogram() (3 figures: 2048 sub-buckets, halves of 1024) hold once
    `largest` is recorded, by the layout: values below 2048 sit in the first two halves, one half
    per 1024; a value of bit length L >= 12 sits in bucket b = L - 11, whose half-bucket of 1024
    counts is the (b + 2)nd; the counts reach the end of it, 8 bytes each."""
    halves = largest // 1024 + 1 if largest < 2048 else largest.bit_length() - 11 + 2
    return halves * 1024 * 8


def test_memory_follows_the_largest_value_recorded():
    h = Histogram()
    empty = h.memory_bytes
    assert empty < 512, "a fresh histogram holds no counts"
    assert h.percentile(50) == 0 and h.to_dict()["counts"] == [] and h.copy().memory_bytes == empty
    expected = 0
    for value in (0, 100, 1023, 1024, 2047, 2048, 5000, 10**6, 10**6 - 1, 10**9, 3 * 10**9, 1):
        h.record(value)
        expected = max(expected, counts_bytes(value))
        assert h.memory_bytes - empty == expected, value
    assert h.memory_bytes - empty == 23 * 1024 * 8  # 3 s: bit length 32, bucket 21, 23 halves
    h.record(3_600_000_000_000)  # the whole range: 33 halves, what every Histogram() used to hold
    assert h.memory_bytes - empty == 33 * 1024 * 8 == 270_336
    h.record(10**30)  # clamped to highest: no further
    assert h.memory_bytes - empty == 270_336
    low = Histogram(significant_figures=1)  # 32 sub-buckets, halves of 16 counts
    low.record(3_600_000_000_000)
    assert low.memory_bytes - empty == (42 - 5 + 2) * 16 * 8 < 270_336 // 40
    two = Histogram(significant_figures=2)  # 256 sub-buckets, halves of 128: bucket 34, 36 halves
    two.record(3_600_000_000_000)
    assert two.memory_bytes - empty == 36 * 1024  # docs/runtime.md: 36 KiB
    # docs/runtime.md's figures for the defaults: under 1 us, 1 ms, 1 s, the whole range.
    for value, kib in ((999, 8), (10**6, 88), (10**9, 168), (3_600_000_000_000, 264)):
        one = Histogram()
        one.record(value)
        assert one.memory_bytes - empty == kib * 1024, value


def test_the_counts_grow_at_most_33_times():
    """Values that reach each of the 33 halves in turn: each grows the counts once."""
    h = Histogram()
    sizes = {h.memory_bytes}
    for value in [0, 1024] + [2**bits for bits in range(11, 42)] + [3_600_000_000_000]:
        h.record(value)
        sizes.add(h.memory_bytes)
    assert len(sizes) - 1 == 33


@pytest.mark.no_sanitizer(reason="ASan reserves terabytes of shadow memory: an address-space limit "
                          "stops it from starting")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS as Linux enforces it")
def test_a_record_that_cannot_grow_the_counts_raises_memoryerror_and_records_nothing():
    code = '''
import resource
from pyagentbench import Histogram
h = Histogram()
h.record(5)
held = h.memory_bytes
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 64 * 1024, resource.RLIM_INFINITY))
try:
    h.record(3_600_000_000_000)  # 264 KiB of counts: more than the limit leaves
except MemoryError:
    print("MemoryError", h.count, h.max, h.memory_bytes == held)
'''
    done = run_isolated(code)
    assert done.stdout.split() == ["MemoryError", "1", "5", "True"], done.stderr


def test_recording_within_the_counts_held_allocates_nothing():
    """Only a value beyond the half-bucket reached so far grows the counts: recording values
    below it changes nothing, and neither does reset(), which keeps the counts."""
    h = Histogram()
    h.record(10**6)
    held = h.memory_bytes
    record = h.record
    for value in range(0, 10**6, 97):
        record(value)
    assert h.memory_bytes == held
    h.reset()
    assert h.memory_bytes == held and h.count == 0 and h.percentile(99) == 0
    h.record(5)
    assert h.percentile(100) == 5 and h.memory_bytes == held


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_percentiles_are_exact_to_the_precision_as_the_counts_grow(order):
    """Values over the whole range, recorded so that the counts grow at almost every record
    (ascending), once (descending) or in between, give the same percentiles: the exact ones,
    within 10**-3."""
    values = sorted({int(1.37**k) for k in range(90)} | {0, 3_600_000_000_000})
    if order == "descending":
        values.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(values)
    h = Histogram()
    for v in values:
        h.record(v)
    exact = sorted(values)
    for p in (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100):
        want = exact_percentile(exact, p)
        got = h.percentile(p)
        assert want <= got <= want + want // 1000, (p, want, got)
    assert (h.min, h.max, h.count) == (0, 3_600_000_000_000, len(values))


def test_copy_merge_and_dicts_carry_only_the_counts_recorded():
    small = Histogram()
    small.record(1000)
    wide = Histogram(1, 2**62)
    wide.record(5 * 10**9)
    wide.record(7)
    assert small.copy().memory_bytes == small.memory_bytes
    assert Histogram.from_dict(small.to_dict()).memory_bytes == small.memory_bytes
    merged = Histogram()
    merged.merge(small)
    assert merged.memory_bytes == small.memory_bytes and merged.percentile(100) == 1000
    merged.merge(wide)  # another layout: 5 s lands in bucket 22 of this one
    assert merged.memory_bytes - Histogram().memory_bytes == counts_bytes(5 * 10**9)
    assert merged.count == 3 and merged.max == 5 * 10**9 and merged.percentile(0) == 7
    assert 5 * 10**9 <= merged.percentile(100) <= 5 * 10**9 * 1.001
    merged.merge(merged)
    assert merged.count == 6 and merged.percentile(50) == 1000


def test_from_dict_with_a_max_beyond_its_counts_stays_within_them():
    """A hand-written dict may give a max above its highest count (within highest): percentiles
    walk only the counts held, and still answer within [min, max]."""
    data = Histogram().to_dict()
    data.update(count=1, min=10, max=10**9, counts=[[10, 1]], mean=10.0, m2=0.0)
    h = Histogram.from_dict(data)
    assert h.memory_bytes - Histogram().memory_bytes == counts_bytes(10)
    assert 10 <= h.percentile(100) <= 10**9


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


#: Passed on to child interpreters, so that a sanitizer build's children load its runtime too.
SANITIZER_VARIABLES = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (a crash must not take pytest down with it)."""
    env = {"PYTHONPATH": ":".join(sys.path), "PYTHONFAULTHANDLER": "1"}
    env.update({name: os.environ[name] for name in SANITIZER_VARIABLES if name in os.environ})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
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


# ---- merge from a wider histogram, and bounds near 2**63 (issue 19) ----


def test_merge_from_a_wider_histogram_counts_each_clamped_value_once():
    wide = Histogram(1, 10**9)
    wide.record(10**12)  # clamped by wide itself
    wide.record(10**8)  # clamped by the merge
    wide.record(-5)  # clamped up to 0 by wide
    narrow = Histogram(1, 1000)
    narrow.merge(wide)
    assert (narrow.count, narrow.clamped, narrow.min, narrow.max) == (3, 3, 0, 1000)

    # Through a wider histogram in between: A clamps 10**5 to 1000, B (wider) holds it at 1000,
    # C (narrower than both) clamps it again. Still one value, clamped once.
    a = Histogram(1, 1000)
    a.record(10**5)
    b = Histogram(1, 10**6)
    b.merge(a)
    b.record(5000)
    c = Histogram(1, 500)
    c.merge(b)
    assert (a.clamped, b.clamped, c.clamped, c.count) == (1, 1, 2, 2)

    same = Histogram(highest=1000)
    same.merge(narrow)
    same.merge(same)
    assert (same.count, same.clamped) == (6, 6)


def test_merge_from_a_wider_histogram_moves_mean_and_stddev_with_the_clamped_values():
    # Issue 19: the mean stayed that of the unclamped values (50,000,005 with max 1000).
    wide = Histogram(1, 10**9)
    wide.record(10**8)
    narrow = Histogram(1, 1000)
    narrow.record(10)
    narrow.merge(wide)
    assert (narrow.max, narrow.mean, narrow.stddev) == (1000, 505.0, 495.0)  # of [10, 1000]

    wide = Histogram(1, 10**9)
    wide.record(100)
    wide.record(10**8)
    narrow = Histogram(1, 1000)
    narrow.merge(wide)
    assert (narrow.mean, narrow.stddev) == (550.0, 450.0)  # of [100, 1000]

    rng = random.Random(19)
    values = [rng.randint(1, 3000) for _ in range(20_000)] + [rng.randint(10**6, 10**9) for _ in range(500)]
    wide = Histogram(1, 10**9)
    wide.record_many(values)
    narrow = Histogram(1, 2000)
    narrow.merge(wide)
    held = [min(v, 2000) for v in values]
    assert narrow.clamped == sum(1 for v in values if v > 2000)
    assert narrow.mean == pytest.approx(statistics.fmean(held), rel=1e-3)
    assert narrow.stddev == pytest.approx(statistics.pstdev(held), rel=1e-3)
    assert narrow.min <= narrow.mean <= narrow.max == 2000


def test_merge_from_a_narrower_or_equal_range_keeps_the_exact_moments():
    values = [3, 5, 1_000_000, 77]
    a = Histogram(significant_figures=2)
    a.record_many(values)
    b = Histogram(significant_figures=4)
    b.merge(a)
    assert b.mean == statistics.fmean(values) and b.stddev == pytest.approx(statistics.pstdev(values), rel=1e-12)


def test_clamped_above_round_trips_and_is_inferred_for_older_dicts():
    wide = Histogram(1, 10**9)
    wide.record_many([10**12, 10**12, 500])
    data = wide.to_dict()
    assert (data["clamped"], data["clamped_above"], data["clamped_above_at"]) == (2, 2, 10**9)
    assert Histogram.from_dict(json.loads(json.dumps(data))).to_dict() == data
    older = {k: v for k, v in data.items() if k not in ("clamped_above", "clamped_above_at")}
    assert Histogram.from_dict(older).to_dict() == data  # min > 0: every clamped value was above
    narrow = Histogram(1, 1000)
    narrow.merge(Histogram.from_dict(older))
    assert (narrow.count, narrow.clamped) == (3, 2)
    for bad in ({"clamped": 4}, {"clamped": -1}, {"clamped_above": 3}, {"clamped_above_at": 10**10},
                {"clamped_above": 1, "clamped_above_at": 0}):
        with pytest.raises(ValueError, match="clamped"):
            Histogram.from_dict({**data, **bad})


def test_lowest_above_2_62_is_refused_without_overflowing():
    # highest < 2 * lowest was computed as 2 * lowest, which overflows int64 for lowest > 2**62.
    for lowest in (2**62 + 1, 2**63 - 1):
        with pytest.raises(ValueError, match=r"highest must be >= 2 \* lowest"):
            Histogram(lowest, 2**63 - 1)
    h = Histogram(2**58 - 1, 2**63 - 1, 1)  # the widest unit that leaves room for 1 figure
    h.record(2**63 - 1)
    assert h.percentile(100) == 2**63 - 1
    for lowest, figures in [(2**58, 1), (2**52, 3), (2**45, 5)]:
        with pytest.raises(ValueError, match="leave no room"):
            Histogram(lowest, 2**63 - 1, figures)
        assert Histogram(lowest - 1, 2**63 - 1, figures).lowest == lowest - 1


def test_the_top_of_an_int64_range_and_int64_counts_give_exact_percentiles():
    h = Histogram(1, 2**63 - 1)
    h.record(2**63 - 1)  # its sub-bucket ends at 2**63 - 1: the end used to overflow
    h.record(2**62 + 12345)
    assert h.percentile(100) == 2**63 - 1
    assert abs(h.percentile(50) - (2**62 + 12345)) <= (2**62 + 12345) / 1000
    # 2**63 - 1 values: the rank of p=100 is 2**63 - 1, which a double rounds to 2**63; converting
    # that to int64 is undefined (on x86 it gave INT64_MIN, and p100 the smallest value).
    counts = Histogram()
    counts.record(1, count=2**62)
    counts.record(1000, count=2**62 - 1)
    assert counts.count == 2**63 - 1
    assert (counts.percentile(100), counts.percentile(50), counts.percentile(99.9)) == (1000, 1, 1000)


def test_extreme_ranges_and_values_answer_within_min_and_max():
    """Ranges and values at the int64 edges (the sanitizer stage runs this under UBSan): each
    histogram is made or refused (ValueError; OverflowError beyond int64), every record is kept or clamped, and every
    percentile lies within the exact [min, max]; merges between them keep the count."""
    top = 2**63 - 1
    values = [0, 1, 2**31, 2**53 + 1, 2**62, top - 1, top, top + 1, 2**64, -1, -(2**70), 1.5, 1e300,
              -1e300, float("inf"), float("-inf")]
    made = []
    for lowest in (1, 3, 2**31, 2**52, 2**58 - 1, 2**62, top):
        for highest in (2 * lowest, 2**62, top - 1, top):
            for figures in (1, 3):
                try:
                    h = Histogram(lowest, highest, figures)
                except (ValueError, OverflowError):  # OverflowError: highest beyond int64
                    continue
                for v in values:
                    h.record(v)
                assert h.count == len(values) and h.min == 0 and h.max == highest
                for p in (0, 1e-300, 50, 99.9999999, 100):
                    assert 0 <= h.percentile(p) <= highest
                assert h.percentile(100) == highest
                made.append(h)
    assert len(made) > 20
    for a, b in zip(made, made[1:]):
        a.merge(b)
        assert a.count == 2 * len(values) and 0 <= a.percentile(50) <= a.max <= a.highest
