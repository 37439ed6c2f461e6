"""Tests for the resource Sampler, rss()/peak_rss()/reset_peak_rss() and sampler_info()."""

from __future__ import annotations

import array
import dataclasses
import gc
import math
import os
import random
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import pyagentbench
from pyagentbench import _native
from pyagentbench.instruments import resources
from pyagentbench.instruments.resources import ResourceSummary, Sampler, peak_rss, reset_peak_rss, rss

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="procfs")
MiB = 1 << 20
PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


def touched(n_bytes: int) -> bytes:
    """n bytes whose pages are all written (bytes(n) would be calloc'd and never touched)."""
    return b"x" * n_bytes


def busy(seconds: float) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


# ---- rss and peak ----


@linux_only
@pytest.mark.no_sanitizer(
    reason="ASan's allocator maps pages between the three back-to-back RSS reads")
def test_rss_matches_proc_status_and_psutil_within_a_page():
    process = psutil.Process()
    best = None
    for _ in range(20):
        ours = rss()
        kernel = status_bytes("VmRSS")
        theirs = process.memory_info().rss
        spread = max(ours, kernel, theirs) - min(ours, kernel, theirs)
        best = spread if best is None else min(best, spread)
        if spread <= PAGE:
            break
    assert best is not None and best <= PAGE, f"rss readings differ by {best} bytes"


@linux_only
@pytest.mark.no_sanitizer(
    reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_peak_rss_sees_a_100_mb_spike_inside_one_call():
    if not reset_peak_rss():
        pytest.skip("this kernel does not permit resetting VmHWM")
    start = rss()
    assert peak_rss() - start < 8 * MiB  # the reset took: the old peak is gone
    assert len(touched(100 * MiB)) == 100 * MiB  # allocated, touched and freed in one call
    peak = peak_rss()
    assert peak - start >= 95e6
    assert rss() - start < 50 * MiB  # it was freed again
    assert peak == status_bytes("VmHWM") or peak >= status_bytes("VmHWM") - PAGE


def test_peak_rss_falls_back_to_the_sampler_where_the_reset_is_refused(monkeypatch):
    monkeypatch.setattr(resources, "_reset_kernel_peak", lambda: False)
    try:
        assert reset_peak_rss() is False
        assert resources.sampler_info()["peak"] == "sampler"
        start = rss()
        block = touched(100 * MiB)
        time.sleep(0.05)  # the 1 ms fallback sampler sees it
        del block
        assert peak_rss() - start >= 95e6
    finally:
        monkeypatch.undo()
        reset_peak_rss()  # back to the kernel's mark; stops the fallback sampler
    if sys.platform == "linux" and resources._reset_kernel_peak():
        assert resources.sampler_info()["peak"] == "VmHWM"


def test_sampler_info_names_the_sources():
    info = pyagentbench.sampler_info()
    assert info["source"] in ("native", "psutil")
    assert info["page_size"] == PAGE
    assert info["min_interval"] == pytest.approx(100e-6)
    assert info["max_interval"] == 10.0
    if sys.platform == "linux":
        assert info["source"] == "native"
        assert "statm" in info["rss"]
        assert info["thread"] == "pthread, no GIL"


# ---- the sampler ----


@pytest.mark.no_sanitizer(
    reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_summary_and_series_see_a_50_mb_touched_allocation():
    with Sampler(interval=0.001) as sampler:
        time.sleep(0.02)
        block = touched(50 * MiB)
        time.sleep(0.05)
        del block
        time.sleep(0.02)
    summary = sampler.summary()
    assert summary.peak_rss - summary.start_rss >= 48 * MiB
    assert abs(summary.rss_delta) < 16 * MiB
    assert summary.start_rss <= summary.mean_rss <= summary.peak_rss
    series = sampler.series()
    assert isinstance(series.rss_bytes, array.array) and series.rss_bytes.typecode == "q"
    assert len(series.timestamps_ns) == len(series.rss_bytes) == len(series.cpu_ns) == summary.samples
    assert max(series.rss_bytes) == summary.peak_rss
    assert series.rss_bytes[0] == summary.start_rss and series.rss_bytes[-1] == summary.end_rss
    assert list(series.timestamps_ns) == sorted(series.timestamps_ns)
    assert list(series.cpu_ns) == sorted(series.cpu_ns)
    assert memoryview(series.rss_bytes).format == "q"  # the buffer protocol, no numpy


@pytest.mark.no_sanitizer(
    reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_peak_stays_exact_when_the_ring_wraps():
    with Sampler(interval=0.001, capacity=4) as sampler:
        block = touched(50 * MiB)
        time.sleep(0.03)
        del block
        time.sleep(0.05)
    summary = sampler.summary()
    series = sampler.series()
    assert len(series.rss_bytes) == 4 < summary.samples
    assert summary.peak_rss - summary.start_rss >= 48 * MiB
    assert max(series.rss_bytes) < summary.peak_rss - 40 * MiB


def test_cpu_percent_near_100_when_busy_and_near_0_when_sleeping():
    # A thread spinning for 0.3 s of wall time reads 100% of a core only when the machine gives it
    # one: under load it gets less, so the figure is checked against the CPU the OS says it got.
    with Sampler(interval=0.002) as sampler:
        spun_from = time.thread_time()
        busy(0.3)
        spun = time.thread_time() - spun_from
    busy_summary = sampler.summary()
    expected = 100.0 * spun / busy_summary.wall_time
    assert abs(busy_summary.cpu_percent - expected) < 10, (busy_summary, expected)
    assert busy_summary.cpu_time == pytest.approx(spun, abs=0.02), (busy_summary, spun)
    with Sampler(interval=0.002) as sampler:
        time.sleep(0.3)
    assert sampler.summary().cpu_percent < 10, sampler.summary()


def test_sample_count_matches_wall_time_over_interval():
    interval = 0.002
    with Sampler(interval=interval) as sampler:
        time.sleep(0.3)
    s = sampler.summary()
    ticks = s.wall_time / interval
    # Every tick of the grid, from the first sample to the sampler thread's last, is either a sample
    # or a missed sample. The sample stop() takes after joining the thread is off the grid, and the
    # join can take a while (14 ms once in the sanitizer build), so the grid ends at the sample
    # before it.
    stamps = sampler.series().timestamps_ns
    assert len(stamps) == s.samples
    grid_ticks = (stamps[-2] - stamps[0]) / (interval * 1e9)
    assert abs(s.samples - 1 + s.missed_samples - (grid_ticks + 1)) <= 3, (s, grid_ticks)
    assert s.samples >= 0.5 * ticks
    assert s.interval == pytest.approx(interval)
    assert s.wall_time == pytest.approx(0.3, abs=0.1)


def test_sampler_keeps_sampling_while_a_c_call_holds_the_gil():
    rng = random.Random(8)
    keyed = [rng.random() for _ in range(600_000)]
    with Sampler(interval=0.001) as sampler:
        t0 = time.perf_counter()
        keyed.sort()  # one C call that never releases the GIL
        elapsed = time.perf_counter() - t0
    s = sampler.summary()
    assert elapsed > 0.05, "the sort was too quick to tell"
    assert s.samples >= 0.5 * elapsed / 0.001, (s, elapsed)


def test_summary_while_running_grows_and_stop_returns_the_summary():
    sampler = Sampler(interval=0.001)
    assert sampler.summary().samples == 0 and not sampler.running
    sampler.start()
    assert sampler.running
    time.sleep(0.02)
    first = sampler.summary().samples
    time.sleep(0.02)
    assert sampler.summary().samples > first >= 1
    summary = sampler.stop()
    assert isinstance(summary, ResourceSummary) and not sampler.running
    assert summary.samples >= first
    assert sampler.start() is sampler  # restartable; counts begin again
    assert sampler.summary().samples < summary.samples + 5
    sampler.stop()


@pytest.mark.no_sanitizer(reason="ASan's shadow memory puts the process's RSS in GiB, not the MiB it reads")
def test_resource_summary_is_frozen_readable_and_serialisable():
    with Sampler(interval=0.001) as sampler:
        time.sleep(0.01)
    summary = sampler.summary()
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.peak_rss = 0  # type: ignore[misc]
    text = repr(summary)
    assert "MiB" in text and "samples" in text and "%" in text
    data = summary.to_dict()
    assert set(data) == {
        "start_rss", "end_rss", "rss_delta", "peak_rss", "mean_rss", "cpu_time", "wall_time",
        "cpu_percent", "samples", "missed_samples", "interval", "sampler_cpu_time",
    }
    assert "Sampler stopped" in repr(sampler)


@pytest.mark.parametrize("interval", [0, -1, 5e-5, 10.5, math.nan, math.inf])
def test_bad_interval_is_a_value_error(interval):
    with pytest.raises(ValueError, match="interval"):
        Sampler(interval=interval)


@pytest.mark.parametrize("interval", ["1ms", None, True, [0.001]])
def test_non_numeric_interval_is_a_type_error(interval):
    with pytest.raises(TypeError, match="interval"):
        Sampler(interval=interval)


def test_interval_bounds_are_accepted():
    assert Sampler(interval=100e-6).interval == pytest.approx(100e-6)
    assert Sampler(interval=10).interval == 10.0


@pytest.mark.parametrize("capacity", [0, 1, -5, 2**27])
def test_bad_capacity_is_a_value_error(capacity):
    with pytest.raises(ValueError, match="capacity"):
        Sampler(capacity=capacity)


@pytest.mark.parametrize("capacity", [1.5, "10", True])
def test_non_integer_capacity_is_a_type_error(capacity):
    with pytest.raises(TypeError, match="capacity"):
        Sampler(capacity=capacity)


def test_start_twice_and_stop_before_start_are_runtime_errors():
    sampler = Sampler()
    with pytest.raises(RuntimeError, match="not running"):
        sampler.stop()
    sampler.start()
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start()
    sampler.stop()
    with pytest.raises(RuntimeError, match="not running"):
        sampler.stop()


@linux_only
def test_native_type_checks_its_own_arguments():
    with pytest.raises(ValueError):
        _native.Sampler(50, 10)
    with pytest.raises(ValueError):
        _native.Sampler(1_000_000, 1)
    with pytest.raises(TypeError):
        _native.Sampler(1e6, 10)
    with pytest.raises(ValueError):
        _native.Sampler(2**70, 10)


@linux_only
def test_dropping_a_running_sampler_stops_its_thread():
    before = task_count()
    sampler = Sampler(interval=0.001).start()
    assert task_count() == before + 1
    del sampler
    gc.collect()
    assert task_count() == before


@linux_only
def test_a_long_interval_still_stops_promptly():
    sampler = Sampler(interval=10).start()
    t0 = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - t0 < 1.0


@linux_only
@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_ten_thousand_start_stop_cycles_leak_neither_memory_nor_threads_nor_fds():
    sampler = Sampler(interval=0.001, capacity=16)
    tasks = task_count()

    def cycles(n: int) -> None:
        for _ in range(n):
            sampler.start()
            sampler.stop()
            fresh = Sampler(interval=0.01, capacity=16)
            fresh.start()
            fresh.stop()

    cycles(1000)
    before = rss()  # the sampler and rss() each keep one statm descriptor open from here on
    fds = len(os.listdir("/proc/self/fd"))
    cycles(10_000)
    gc.collect()
    assert rss() - before < 512 * 1024
    assert len(os.listdir("/proc/self/fd")) == fds
    assert task_count() == tasks


@linux_only
def test_fork_leaves_the_child_without_a_sampler_thread_and_the_parent_running():
    sampler = Sampler(interval=0.001).start()
    time.sleep(0.01)
    rss()  # the cached statm descriptor now exists in the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code
        code = 0
        try:
            os.close(read_end)
            if len(os.listdir("/proc/self/task")) != 1:
                code = 2  # some thread survived the fork
            elif sampler.running:
                code = 3
            else:
                own = Sampler(interval=0.001).start()
                time.sleep(0.03)
                summary = own.stop()
                inherited = sampler.start()  # the parent's object can be started afresh too
                time.sleep(0.01)
                inherited.stop()
                if summary.samples < 5 or sampler.summary().samples < 2:
                    code = 4
                elif abs(own.summary().end_rss - rss()) > 8 * MiB:
                    code = 5
                else:
                    before = rss()
                    block = touched(64 * MiB)
                    if rss() - before < 60 * MiB:  # rss() must read the child, not the parent
                        code = 6
                    del block
                os.write(write_end, str(summary.samples).encode())
        except BaseException:
            code = 9
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child_samples = os.read(read_end, 64)
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(child_samples) >= 5
    assert sampler.running
    before = sampler.summary().samples
    time.sleep(0.02)
    assert sampler.summary().samples > before
    sampler.stop()


@pytest.mark.parametrize(
    "body",
    [
        "s = Sampler(interval=0.0001).start()",
        "s = Sampler(interval=0.001).start(); cycle = [s]; cycle.append(cycle); del s, cycle",
        "import threading\n"
        "def hold():\n"
        "    s = Sampler(interval=0.001).start()\n"
        "    threading.Event().wait()\n"
        "threading.Thread(target=hold, daemon=True).start()\n"
        "import time; time.sleep(0.05)",
    ],
    ids=["global", "in-a-cycle", "daemon-thread"],
)
def test_interpreter_exit_with_a_sampler_running_neither_hangs_nor_crashes(body):
    script = "from pyagentbench import Sampler\n" + textwrap.dedent(body) + "\nprint('done')\n"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"


# ---- the portable fallback ----


def test_psutil_fallback_has_the_same_api(monkeypatch):
    monkeypatch.setenv("PYAGENTBENCH_SAMPLER", "psutil")
    assert pyagentbench.sampler_info()["source"] == "psutil"
    sampler = Sampler(interval=0.002, capacity=8)
    assert sampler.source == "psutil"
    with pytest.raises(RuntimeError):
        sampler.stop()
    with sampler:
        with pytest.raises(RuntimeError):
            sampler.start()
        block = touched(50 * MiB)
        time.sleep(0.05)
        del block
        time.sleep(0.02)
    s = sampler.summary()
    assert s.peak_rss - s.start_rss >= 48 * MiB
    assert s.samples > 8
    series = sampler.series()
    assert len(series.rss_bytes) == 8
    assert list(series.timestamps_ns) == sorted(series.timestamps_ns)
    assert abs(rss() - psutil.Process().memory_info().rss) < 4 * MiB


def test_unknown_sampler_source_is_a_value_error(monkeypatch):
    monkeypatch.setenv("PYAGENTBENCH_SAMPLER", "bogus")
    with pytest.raises(ValueError, match="PYAGENTBENCH_SAMPLER"):
        Sampler()


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_a_million_rss_reads_and_many_summaries_keep_rss_flat():
    sampler = Sampler(interval=0.001, capacity=64).start()
    try:
        for _ in range(100_000):
            rss()
        for _ in range(2_000):
            sampler.summary()
            sampler.series()
        before = rss()
        for _ in range(1_000_000):
            rss()
        for _ in range(20_000):
            sampler.summary()
            sampler.series()
        assert rss() - before < 256 * 1024
    finally:
        sampler.stop()
