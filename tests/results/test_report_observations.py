"""The report's observations: each rule speaks when its numbers are there, and only then."""

from __future__ import annotations

from typing import Any

import pytest

from pyagentbench.results.compare import Gate
from pyagentbench.results.metrics import RSS_DELTA_FLOOR_BYTES, metric
from pyagentbench.results.report import BenchmarkResult, observations
from pyagentbench.results.verdicts import Change

TEST = "t.py::test_a"


def bench(record: dict[str, Any], iqr: float = 0.0, median: float = 1e-3, rounds: int = 20) -> BenchmarkResult:
    stats = {"mean": median, "median": median, "iqr": iqr, "rounds": rounds}
    return BenchmarkResult(TEST, "test_a", None, None, stats, record)


def change(metric_name: str, base: float, now: float, verdict: str = "regressed") -> Change:
    gate = Gate(metric(metric_name), 10.0)
    return Change(TEST, gate, base, now, (now - base) / base * 100, verdict)


def notes_with(word: str, b: BenchmarkResult, changes: list[Change] = ()) -> list[str]:
    return [note for note in observations(b, changes) if word in note]


def test_cpu_bound_with_a_throughput_fall():
    notes = notes_with("CPU-bound", bench({"cpu_percent": 98.0}), [change("throughput", 1000, 800)])
    assert notes == ["CPU 98% while throughput fell 20%: CPU-bound, the time went to computing"]


def test_cpu_bound_with_a_mean_rise():
    notes = notes_with("CPU-bound", bench({"cpu_percent": 95.0}), [change("mean", 1e-3, 1.5e-3)])
    assert notes == ["CPU 95% while the mean rose 50%: CPU-bound, the time went to computing"]


def test_cpu_bound_without_a_baseline():
    assert notes_with("CPU-bound", bench({"cpu_percent": 99.6})) == [
        "CPU 100% of a core over the run: CPU-bound"]


@pytest.mark.parametrize("record", [{"cpu_percent": 60.0}, {}])
def test_not_cpu_bound_below_90_percent_or_unmeasured(record):
    assert notes_with("CPU-bound", bench(record), [change("throughput", 1000, 800)]) == []


def test_waiting_when_cpu_is_low_and_calls_take_milliseconds():
    notes = notes_with("waiting", bench({"cpu_percent": 5.0, "latency_p50_s": 0.02}))
    assert notes == ["CPU 5% at 20 ms per call (p50): most of the time is spent waiting "
                     "(I/O, sleeps, locks), not computing"]


def test_waiting_when_throughput_fell_with_cpu_low():
    notes = notes_with("waiting", bench({"cpu_percent": 8.0, "latency_p50_s": 0.02}),
                       [change("throughput", 100, 70)])
    assert notes[0].startswith("CPU 8% while throughput fell 30%: the time went to waiting")


@pytest.mark.parametrize("record", [
    {"cpu_percent": 50.0, "latency_p50_s": 0.02},  # busy enough
    {"cpu_percent": 5.0, "latency_p50_s": 2e-6},  # microsecond calls: the sampler's CPU share says little
])
def test_not_waiting(record):
    assert notes_with("waiting", bench(record)) == []


def test_a_heavy_tail_when_p99_is_five_times_the_median_or_more():
    notes = notes_with("tail", bench({"latency_p50_s": 0.001, "latency_p99_s": 0.006}))
    assert notes == ["p99 (6 ms) is 6x the median (1 ms): a few slow calls make the tail"]


def test_no_heavy_tail_below_five_times():
    assert notes_with("tail", bench({"latency_p50_s": 0.001, "latency_p99_s": 0.0049})) == []


def test_errors_with_their_types():
    notes = notes_with("failed", bench({"error_rate": 0.025, "errors_by_type": {"TimeoutError": 3,
                                                                              "ValueError": 2}}))
    assert notes == ["2.5% of tasks failed (TimeoutError: 3, ValueError: 2)"]


def test_no_error_note_without_errors():
    assert notes_with("failed", bench({"error_rate": 0.0, "errors_by_type": {}})) == []


def test_memory_kept_after_the_run_above_the_floor():
    notes = notes_with("RSS ended", bench({"rss_delta_bytes": 50 << 20}))
    assert notes == ["RSS ended 50 MiB above its start: memory held after the run (a cache, a "
                     "leak, or freed memory the allocator kept)"]


def test_no_memory_note_within_the_floor():
    assert notes_with("RSS ended", bench({"rss_delta_bytes": RSS_DELTA_FLOOR_BYTES})) == []


def test_noisy_timings_when_the_iqr_is_a_quarter_of_the_median_or_more():
    notes = notes_with("noisy", bench({}, iqr=0.4e-3, median=1e-3))
    assert notes == ["the middle half of the rounds spans 40% of the median: noisy timings, so a "
                     "smaller change is not evidence"]


@pytest.mark.parametrize("iqr, rounds", [(0.1e-3, 20), (0.4e-3, 4)])
def test_not_noisy_with_a_narrow_iqr_or_too_few_rounds(iqr, rounds):
    assert notes_with("noisy", bench({}, iqr=iqr, median=1e-3, rounds=rounds)) == []


def test_allocations_that_rose_with_the_time():
    notes = notes_with("allocations", bench({}), [change("allocs_per_call", 100, 300),
                                                  change("mean", 1e-3, 1.5e-3)])
    assert notes == ["allocations per call rose 200% along with the mean (50%): the added time "
                     "comes with added allocation"]


def test_no_allocation_note_when_only_allocations_rose():
    assert notes_with("allocations", bench({}), [change("allocs_per_call", 100, 300),
                                                 change("mean", 1.5e-3, 1e-3, "improved")]) == []


def test_a_quiet_healthy_benchmark_gets_no_observation():
    record = {"cpu_percent": 60.0, "latency_p50_s": 0.001, "latency_p99_s": 0.002,
              "error_rate": 0.0, "rss_delta_bytes": 0}
    assert observations(bench(record, iqr=0.05e-3)) == []
