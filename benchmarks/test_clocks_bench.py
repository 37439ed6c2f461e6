"""Clock reads: now_ns() and cycles() beside time.perf_counter_ns(), the clock they must beat.

Each benchmark call reads the clock 100 times in straight-line Python code, so what is compared is
the cost a caller pays per read, not pytest-benchmark's loop around it.
"""

import time

import pytest

from pyagentbench import cycles, now_ns

READS = 100


def unrolled(clock):
    """A function that calls clock() READS times with no loop around the calls."""
    namespace = {"clock": clock}
    exec("def read_clock():\n" + "    clock()\n" * READS, namespace)
    return namespace["read_clock"]


GROUP = f"clock: {READS} reads"


@pytest.mark.benchmark(group=GROUP)
def test_perf_counter_ns(benchmark):
    benchmark.extra_info["anchor"] = True
    benchmark(unrolled(time.perf_counter_ns))


@pytest.mark.benchmark(group=GROUP)
def test_now_ns(benchmark):
    benchmark.extra_info["target"] = "<= 0.9x"
    benchmark(unrolled(now_ns))


@pytest.mark.benchmark(group=GROUP)
def test_cycles(benchmark):
    benchmark.extra_info["target"] = "<= 0.6x"
    benchmark(unrolled(cycles))
