"""The timing loop: what measure() reports for a no-op beside what pytest-benchmark's loop reports.

A no-op Python call costs about 16 ns on the reference machine; pytest-benchmark's Python `for`
loop adds about 30 ns of its own to every call it times. measure() calls from C, so it should report
close to the call's own cost. The anchor is pytest-benchmark's `benchmark` fixture on the same
function; ours runs measure() and hands its per-round times to the same fixture's statistics, so
both land in one table.
"""

import array
import statistics

import pytest

from pyagentbench import _native, measure

GROUP = "timing loop: no-op per call"


def noop():
    pass


def record_rounds(benchmark, measurement):
    """Put a Measurement's rounds into pytest-benchmark's statistics for this test."""
    stats = benchmark._make_stats(measurement.loops)
    for round_ns in measurement.rounds_ns:
        stats.update(round_ns * 1e-9)
    benchmark._mode = "pyagentbench.measure(...)"


@pytest.mark.benchmark(group=GROUP)
def test_pytest_benchmark_loop(benchmark):
    benchmark.extra_info["anchor"] = True
    benchmark(noop)


@pytest.mark.benchmark(group=GROUP)
def test_measure_loop(benchmark):
    benchmark.extra_info["target"] = "<= 0.4x"
    record_rounds(benchmark, measure(noop, max_time=1.0))


# ---- what per-call tails cost ----
#
# p95/p99/max are taken over single calls, each timed on its own (two now_ns() reads around the call
# and a Histogram record). Here is that per-call loop beside today's loop on the same no-op: both
# report ns per call, and the per-call test saves the ns it adds to every call in extra_info
# ("added_ns_per_call", from interleaved runs of both loops). measure() keeps that cost out of its
# means: calls under PER_CALL_IN_ROUND_FACTOR x the cost get a separate per-call pass instead.

TAILS_GROUP = "timing loop: per-call tails cost, no-op per call"
TAILS_LOOPS = 2000
TAILS_ROUNDS = 300


def native_rounds(per_call: bool, rounds: int = TAILS_ROUNDS) -> array.array:
    out = array.array("q", bytes(8 * rounds))
    if per_call:
        _native.time_rounds(noop, (), None, TAILS_LOOPS, out, _native.Histogram())
    else:
        _native.time_rounds(noop, (), None, TAILS_LOOPS, out)
    return out


def record_native_rounds(benchmark, rounds_ns, mode):
    stats = benchmark._make_stats(TAILS_LOOPS)
    for round_ns in rounds_ns:
        stats.update(round_ns * 1e-9)
    benchmark._mode = mode


@pytest.mark.benchmark(group=TAILS_GROUP)
def test_round_loop(benchmark):
    benchmark.extra_info["anchor"] = True
    native_rounds(False, 20)  # warm-up
    record_native_rounds(benchmark, native_rounds(False), "time_rounds(...)")


@pytest.mark.benchmark(group=TAILS_GROUP)
def test_per_call_loop(benchmark):
    native_rounds(True, 20)  # warm-up
    plain, per_call = [], []
    for _ in range(10):  # interleaved, so both see the same machine
        plain.append(statistics.median(native_rounds(False, 30)) / TAILS_LOOPS)
        per_call.append(statistics.median(native_rounds(True, 30)) / TAILS_LOOPS)
    benchmark.extra_info["plain_ns_per_call"] = statistics.median(plain)
    benchmark.extra_info["per_call_ns_per_call"] = statistics.median(per_call)
    benchmark.extra_info["added_ns_per_call"] = statistics.median(per_call) - statistics.median(plain)
    record_native_rounds(benchmark, native_rounds(True), "time_rounds(..., calls)")
