"""The timing loop: what measure() reports for a no-op beside what pytest-benchmark's loop reports.

A no-op Python call costs about 16 ns on the reference machine; pytest-benchmark's Python `for`
loop adds about 30 ns of its own to every call it times. measure() calls from C, so it should report
close to the call's own cost. The anchor is pytest-benchmark's `benchmark` fixture on the same
function; ours runs measure() and hands its per-round times to the same fixture's statistics, so
both land in one table.
"""

import pytest

from pyagentbench import measure

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
