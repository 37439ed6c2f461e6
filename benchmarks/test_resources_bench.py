"""Resource metrics beside their anchors: one RSS read vs psutil, the Sampler's cost to a CPU-bound
workload vs a psutil thread, sampling during a GIL-holding sort, and AllocCounter vs tracemalloc.

The slowdown and sort figures are single tests whose pedantic run does the whole comparison (the
runs interleaved, so drift on a shared machine hits both sides alike) and stores the figures in
``extra_info``; their timing stats are of the whole comparison and not a target themselves.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import tracemalloc

import psutil
import pytest

from pyagentbench import AllocCounter, Sampler, rss

# ---- one RSS sample: native vs psutil ----


@pytest.mark.benchmark(group="rss-one-sample", max_time=0.2)
def test_rss_psutil_memory_info(benchmark):
    benchmark.extra_info["anchor"] = True
    process = psutil.Process()
    benchmark(process.memory_info)


@pytest.mark.benchmark(group="rss-one-sample", max_time=0.2)
def test_rss_native(benchmark):
    benchmark.extra_info["target"] = ">= 8x"
    benchmark(rss)


# ---- slowdown of a CPU-bound workload: Sampler at 1 kHz vs none, vs a psutil thread ----


def cpu_bound_workload(n: int = 400_000) -> int:
    """Pure-Python arithmetic in a loop: about 30-50 ms here."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
        if i & 7 == 0:
            total ^= i
    return total


class PsutilThreadSampler:
    """What a Python sampler does: psutil in a thread, at a fixed interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples = 0
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._process.memory_info()
            self._process.cpu_times()
            self.samples += 1

    def __enter__(self) -> "PsutilThreadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def interleaved_overheads(pairs: int) -> dict[str, float]:
    """Median per-pair slowdown (percent) of the workload with each sampler vs none, ABBA-ordered."""
    native_ratios, psutil_ratios = [], []
    for k in range(pairs):
        def bare() -> int:
            return timed(cpu_bound_workload)

        def native() -> int:
            with Sampler(interval=0.001):
                return timed(cpu_bound_workload)

        def python_thread() -> int:
            with PsutilThreadSampler(0.001):
                return timed(cpu_bound_workload)

        if k % 2 == 0:
            base_1, with_native, with_psutil, base_2 = bare(), native(), python_thread(), bare()
        else:
            with_psutil, base_1, base_2, with_native = python_thread(), bare(), bare(), native()
        base = (base_1 + base_2) / 2
        native_ratios.append(with_native / base)
        psutil_ratios.append(with_psutil / base)
    return {
        "pairs": pairs,
        "sampler_overhead_pct": (statistics.median(native_ratios) - 1) * 100,
        "psutil_thread_overhead_pct": (statistics.median(psutil_ratios) - 1) * 100,
    }


@pytest.mark.benchmark(group="sampler-1khz-slowdown")
def test_sampler_slowdown_interleaved_pairs(benchmark):
    cpu_bound_workload(5000)  # warm up
    figures = benchmark.pedantic(interleaved_overheads, args=(21,), rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["target_sampler_overhead_pct"] = "<= +0.5"
    benchmark.extra_info["met"] = figures["sampler_overhead_pct"] <= 0.5


# ---- samples taken while one C call holds the GIL ----


@pytest.fixture(scope="module")
def three_million_floats() -> list[float]:
    rng = random.Random(3)
    return [rng.random() for _ in range(3_000_000)]


def sort_under_samplers(data: list[float]) -> dict[str, float]:
    figures: dict[str, float] = {}
    work = data[:]
    with Sampler(interval=0.001) as sampler:
        t0 = time.perf_counter()
        work.sort()
        elapsed = time.perf_counter() - t0
    summary = sampler.summary()
    # samples strictly inside the sort: all but the one taken at start and the one at stop
    figures["sort_seconds"] = elapsed
    figures["sampler_samples"] = summary.samples
    figures["sampler_fraction_of_expected"] = (summary.samples - 2) / (elapsed / 0.001)
    work = data[:]
    with PsutilThreadSampler(0.001) as python_sampler:
        time.sleep(0.01)
        before = python_sampler.samples
        t0 = time.perf_counter()
        work.sort()
        elapsed = time.perf_counter() - t0
        during = python_sampler.samples - before
    figures["psutil_thread_samples_during_sort"] = during
    figures["psutil_thread_fraction_of_expected"] = during / (elapsed / 0.001)
    return figures


@pytest.mark.benchmark(group="sampler-during-gil-holding-sort")
def test_samples_during_a_gil_holding_sort(benchmark, three_million_floats):
    figures = benchmark.pedantic(sort_under_samplers, args=(three_million_floats,), rounds=1,
                                 iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["target_fraction"] = ">= 0.90"
    benchmark.extra_info["met"] = figures["sampler_fraction_of_expected"] >= 0.90


# ---- AllocCounter vs none vs tracemalloc on allocation-heavy code ----


def build_records(n: int = 300) -> list:
    """Lists and dicts, as an agent's bookkeeping makes them."""
    out = []
    for i in range(n):
        out.append({"id": i, "tags": [i, i + 1, i + 2], "name": "task-%d" % i, "meta": {"i": i}})
    return out


@pytest.mark.benchmark(group="alloc-counting", max_time=0.3)
def test_allocs_none(benchmark):
    benchmark.extra_info["anchor"] = True
    benchmark(build_records)


@pytest.mark.benchmark(group="alloc-counting", max_time=0.3)
def test_allocs_alloc_counter(benchmark):
    benchmark.extra_info["target"] = "<= 1.10x"
    with AllocCounter() as counter:
        benchmark(build_records)
    benchmark.extra_info["allocs"] = counter.allocs


@pytest.mark.benchmark(group="alloc-counting", max_time=0.3)
def test_allocs_tracemalloc(benchmark):
    tracemalloc.start()
    try:
        benchmark(build_records)
    finally:
        tracemalloc.stop()


def interleaved_alloc_ratios(pairs: int) -> dict[str, float]:
    def run(wrapper) -> int:
        best = None
        for _ in range(5):
            t = wrapper()
            best = t if best is None else min(best, t)
        return best

    def bare() -> int:
        return timed(build_records)

    def counted() -> int:
        with AllocCounter():
            return timed(build_records)

    def traced() -> int:
        tracemalloc.start()
        try:
            return timed(build_records)
        finally:
            tracemalloc.stop()

    counter_ratios, trace_ratios = [], []
    for _ in range(pairs):
        base = run(bare)
        counter_ratios.append(run(counted) / base)
        trace_ratios.append(run(traced) / base)
    return {
        "pairs": pairs,
        "alloc_counter_ratio": statistics.median(counter_ratios),
        "tracemalloc_ratio": statistics.median(trace_ratios),
    }


@pytest.mark.benchmark(group="alloc-counting-interleaved")
def test_alloc_counter_interleaved_pairs(benchmark):
    figures = benchmark.pedantic(interleaved_alloc_ratios, args=(15,), rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["target_alloc_counter_ratio"] = "<= 1.10"
    benchmark.extra_info["met"] = figures["alloc_counter_ratio"] <= 1.10


# ---- the sampler thread's own CPU at 1 kHz, beside a thread that only wakes up ----


def sleeper_thread_cpu(ticks: int, interval: float) -> float:
    """CPU seconds a Python thread spends waking up `ticks` times on a fixed grid (and nothing
    else): a Python-side stand-in for the floor, one wakeup per tick."""
    out: list[float] = []

    def run() -> None:
        start = time.thread_time()
        deadline = time.monotonic()
        for _ in range(ticks):
            deadline += interval
            time.sleep(max(0.0, deadline - time.monotonic()))
        out.append(time.thread_time() - start)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def sampler_own_cpu(seconds: float, interval: float) -> dict[str, float]:
    sampler = Sampler(interval=interval)
    sampler.start()
    time.sleep(seconds)
    summary = sampler.stop()
    ticks = max(1, summary.samples - 2)
    floor = sleeper_thread_cpu(ticks, interval)
    return {
        "sampler_cpu_pct_of_core": 100.0 * summary.sampler_cpu_time / summary.wall_time,
        "sampler_cpu_us_per_sample": 1e6 * summary.sampler_cpu_time / ticks,
        "sleeper_thread_cpu_us_per_wakeup": 1e6 * floor / ticks,
        "cpu_percent_idle_process": summary.cpu_percent,
    }


@pytest.mark.benchmark(group="sampler-own-cpu")
def test_sampler_own_cpu_at_1khz(benchmark):
    figures = benchmark.pedantic(sampler_own_cpu, args=(0.5, 0.001), rounds=3, iterations=1)
    benchmark.extra_info.update(figures)
    benchmark.extra_info["target_sampler_cpu_pct_of_core"] = "<= 0.5"
    benchmark.extra_info["met"] = figures["sampler_cpu_pct_of_core"] <= 0.5
