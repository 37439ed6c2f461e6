"""The Sampler's CPU figures leave the sampler thread's own CPU out."""

from __future__ import annotations

import time

import pytest

from pyagentbench import Sampler, process_cpu_ns


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture(params=["native", "psutil"])
def backend(request, monkeypatch):
    monkeypatch.setenv("PYAGENTBENCH_SAMPLER", request.param)
    return request.param


@pytest.mark.no_sanitizer(
    reason="a 1% CPU bound on an idle process: each wake-up of the psutil sampler thread costs "
           "several times more in the instrumented build")
def test_idle_process_reads_near_zero_cpu(backend):
    # An idle process at 1 kHz: what cpu_percent shows is the main thread's sleep, not the
    # sampler's wakeups (those cost a few % of a core on a VM and used to be counted).
    sampler = Sampler(interval=0.001)
    sampler.start()
    time.sleep(0.5)
    summary = sampler.stop()
    assert sampler.source == backend
    assert summary.sampler_cpu_time > 0
    assert summary.cpu_percent < 1.0, summary
    assert summary.cpu_time < summary.sampler_cpu_time + 0.005


def test_cpu_time_plus_sampler_time_is_the_process_cpu(backend):
    sampler = Sampler(interval=0.001)
    before = process_cpu_ns()
    sampler.start()
    spin(0.3)
    summary = sampler.stop()
    process = (process_cpu_ns() - before) * 1e-9
    # the window is inside [before, after]: the sum is at most the process's CPU, and misses
    # only what start() and stop() cost outside the samples
    together = summary.cpu_time + summary.sampler_cpu_time
    assert together <= process + 1e-4
    assert together > process - 0.01


def test_one_busy_thread_reads_at_most_one_core():
    sampler = Sampler(interval=0.001)
    sampler.start()
    spun_from = time.thread_time()
    spin(0.5)
    spun = time.thread_time() - spun_from
    summary = sampler.stop()
    # one thread spinning is at most 100% of a core, and the sampler's own wakeups are not added
    # on top; on a busy machine the thread gets less than a core, and the figure follows its CPU
    assert summary.cpu_percent <= 100.5, summary
    expected = 100.0 * spun / summary.wall_time
    assert abs(summary.cpu_percent - expected) < 5.0, (summary, expected)
