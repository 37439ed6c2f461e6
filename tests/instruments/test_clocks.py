"""The native clocks: now_ns, now, CPU clocks, the cycle counter and clock_info."""

import sys
import threading
import time

import pytest

import pyagentbench
from pyagentbench import clock_info, cycles, cycles_to_ns, now, now_ns, process_cpu_ns, thread_cpu_ns


def _busy(seconds):
    """Spins for `seconds` of this thread's CPU time, as the OS counts it (time.thread_time()): a
    wall-time spin got 43 ms of CPU in 100 ms on a loaded machine, and the tests below failed."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_now_ns_is_an_int_on_the_monotonic_timeline():
    value = now_ns()
    assert isinstance(value, int)
    # Anchored to CLOCK_MONOTONIC when the module loaded; the rate is calibrated to ~1e-5.
    assert abs(value - time.monotonic_ns()) < 50_000_000


def test_now_ns_advances_at_the_monotonic_rate():
    a, m_a = now_ns(), time.monotonic_ns()
    time.sleep(0.2)
    b, m_b = now_ns(), time.monotonic_ns()
    assert (b - a) == pytest.approx(m_b - m_a, rel=0.01)


def test_now_is_now_ns_in_seconds():
    before = now_ns()
    value = now()
    after = now_ns()
    assert isinstance(value, float)
    assert before * 1e-9 - 1e-6 <= value <= after * 1e-9 + 1e-6


def test_now_ns_never_goes_backwards_in_two_threads():
    reads = 1_000_000
    failures = []
    lock = threading.Lock()
    shared = {"last": 0}

    def own_sequence():
        last = now_ns()
        for _ in range(reads):
            t = now_ns()
            if t < last:
                failures.append((last, t))
                return
            last = t

    def shared_sequence():
        # Reads ordered by the lock must be ordered in time too, whichever thread takes them.
        for _ in range(100_000):
            with lock:
                t = now_ns()
                if t < shared["last"]:
                    failures.append((shared["last"], t))
                    return
                shared["last"] = t

    threads = [threading.Thread(target=own_sequence) for _ in range(2)]
    threads += [threading.Thread(target=shared_sequence) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_thread_cpu_ns_counts_busy_time_not_sleep():
    start = thread_cpu_ns()
    time.sleep(0.1)
    slept = thread_cpu_ns() - start
    start = thread_cpu_ns()
    _busy(0.1)
    busy = thread_cpu_ns() - start
    assert slept < 20_000_000
    assert busy > 50_000_000


def test_process_cpu_ns_includes_other_threads():
    start_process, start_thread = process_cpu_ns(), thread_cpu_ns()
    worker = threading.Thread(target=_busy, args=(0.1,))
    worker.start()
    worker.join()
    process = process_cpu_ns() - start_process
    thread = thread_cpu_ns() - start_thread
    assert process > thread + 30_000_000


def test_cycles_advance_and_convert_to_ns():
    info = clock_info()["cycles"]
    c0, t0 = cycles(), time.monotonic_ns()
    time.sleep(0.1)
    c1, t1 = cycles(), time.monotonic_ns()
    assert isinstance(c0, int) and c1 > c0
    assert cycles_to_ns(c1 - c0) == pytest.approx(t1 - t0, rel=0.02)
    if info["counter"]:
        assert info["frequency_hz"] > 1e6
        assert info["source"] in ("rdtsc", "cntvct_el0")
    else:
        assert info["source"].startswith("now_ns")


def test_cycles_to_ns_rejects_non_integers():
    with pytest.raises(TypeError, match="n must be an int"):
        cycles_to_ns(1.5)
    with pytest.raises(TypeError):
        cycles_to_ns("100")
    assert cycles_to_ns(0) == 0


def test_clock_info_describes_every_clock():
    info = clock_info()
    assert set(info) == {"now_ns", "thread_cpu_ns", "process_cpu_ns", "cycles"}
    for name, entry in info.items():
        assert isinstance(entry["source"], str) and entry["source"], name
        assert entry["resolution_ns"] > 0, name
        assert entry["overhead_ns"] >= 0, name
    # A cheap clock: reading it costs well under a microsecond.
    assert info["now_ns"]["overhead_ns"] < 1000


def test_clocks_are_exported_from_the_package():
    for name in ("now_ns", "now", "thread_cpu_ns", "process_cpu_ns", "cycles", "cycles_to_ns",
                 "clock_info", "Timer", "measure", "Measurement"):
        assert name in pyagentbench.__all__
        assert getattr(pyagentbench, name).__doc__


BENCH_WITH_NATIVE_TIMER = """
import pyagentbench

def test_sum(benchmark):
    assert benchmark(sum, range(100)) == 4950
"""


def test_now_works_as_pytest_benchmark_timer(pytester):
    pytester.makepyfile(BENCH_WITH_NATIVE_TIMER)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--benchmark-timer", "pyagentbench.now",
        "--benchmark-json", "out.json", "--benchmark-max-time", "0.05",
    )
    result.assert_outcomes(passed=1)
    import json

    data = json.loads((pytester.path / "out.json").read_text())
    bench = data["benchmarks"][0]
    assert bench["options"]["timer"] in ("now", "pyagentbench.now")
    assert 0 < bench["stats"]["min"] < 0.01


def test_importing_the_package_loads_only_the_clocks(pytester):
    # pytest imports the package for the plugin in every suite; the rest must wait until used.
    result = pytester.run(
        sys.executable, "-c",
        "import sys, pyagentbench; "
        "print(sorted(m for m in sys.modules if m.startswith('pyagentbench')), 'asyncio' in sys.modules); "
        "pyagentbench.TaskQueue; print('pyagentbench.runtime.taskqueue' in sys.modules)",
    )
    assert result.ret == 0
    assert result.stdout.lines == ["['pyagentbench', 'pyagentbench._native'] False", "True"]


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pyagentbench.nope
    assert "TaskQueue" in dir(pyagentbench)
