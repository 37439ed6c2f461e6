"""Timer, measure() and Measurement."""

import array
import asyncio
import math
import os
import signal
import statistics
import threading
import time

import pytest

from pyagentbench import Measurement, Timer, measure, now_ns


def _busy(seconds):
    """Spin until this thread has used ``seconds`` of CPU (not of wall time: on a busy machine
    the thread may get less than a core)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


# ---- Timer ----


def test_timer_as_context_manager_times_the_block():
    with Timer() as timer:
        assert timer.running
        time.sleep(0.05)
    assert not timer.running
    assert 45_000_000 <= timer.elapsed_ns < 500_000_000
    assert timer.elapsed == pytest.approx(timer.elapsed_ns * 1e-9)


def test_timer_start_stop_returns_elapsed_ns():
    timer = Timer()
    assert timer.start() is timer
    time.sleep(0.01)
    elapsed = timer.stop()
    assert elapsed == timer.elapsed_ns
    assert elapsed >= 9_000_000


def test_timer_elapsed_grows_while_running():
    timer = Timer().start()
    first = timer.elapsed_ns
    time.sleep(0.005)
    assert timer.elapsed_ns > first
    timer.stop()
    frozen = timer.elapsed_ns
    time.sleep(0.005)
    assert timer.elapsed_ns == frozen


def test_timer_cpu_clock_choices():
    with Timer() as process_timer:
        _busy(0.05)
    assert process_timer.cpu == "process"
    assert process_timer.cpu_ns >= 30_000_000

    with Timer(cpu="thread") as thread_timer:
        time.sleep(0.05)
    assert thread_timer.cpu == "thread"
    assert thread_timer.cpu_ns < 20_000_000

    with Timer(cpu=None) as bare:
        pass
    assert bare.cpu is None and bare.cpu_ns is None


def test_timer_rejects_unknown_cpu_clock():
    with pytest.raises(ValueError, match="cpu must be"):
        Timer(cpu="wall")
    with pytest.raises(ValueError):
        Timer(cpu=3)


def test_timer_laps():
    timer = Timer().start()
    time.sleep(0.01)
    first = timer.lap()
    time.sleep(0.02)
    second = timer.lap()
    total = timer.stop()
    assert timer.laps == (first, second)
    assert first >= 9_000_000 and second >= 19_000_000
    assert first + second <= total


def test_timer_is_reusable_and_each_start_begins_a_new_span():
    timer = Timer()
    with timer:
        time.sleep(0.03)
        timer.lap()
    long_span = timer.elapsed_ns
    with timer:
        pass
    assert timer.elapsed_ns < long_span
    assert timer.laps == ()


def test_timers_nest():
    with Timer() as outer:
        time.sleep(0.005)
        with Timer() as inner:
            time.sleep(0.01)
        time.sleep(0.005)
    assert inner.elapsed_ns >= 9_000_000
    assert outer.elapsed_ns >= inner.elapsed_ns + 9_000_000


def test_timer_misuse_raises_runtime_error():
    timer = Timer()
    with pytest.raises(RuntimeError, match="before start"):
        timer.stop()
    with pytest.raises(RuntimeError, match="running"):
        timer.lap()
    timer.start()
    with pytest.raises(RuntimeError, match="already running"):
        timer.start()
    with pytest.raises(RuntimeError, match="already running"):
        with timer:
            pass
    timer.stop()


def test_timer_stops_when_the_block_raises():
    timer = Timer()
    with pytest.raises(ZeroDivisionError):
        with timer:
            1 / 0
    assert not timer.running


def test_timer_repr_is_readable():
    timer = Timer()
    with timer:
        timer.lap()
    text = repr(timer)
    assert text.startswith("<Timer stopped elapsed=")
    assert "laps=1" in text


# ---- measure() ----


def test_measure_sleep_reports_its_duration():
    result = measure(time.sleep, (0.001,), max_time=0.3)
    assert isinstance(result, Measurement)
    assert result.loops == 1
    assert 1.0e-3 <= result.median <= 1.3e-3
    assert 1.0e-3 <= result.min <= result.median <= result.max


def test_measure_calls_fn_with_args_and_kwargs_exactly_as_asked():
    seen = []

    def record(a, b, *, c):
        seen.append((a, b, c))

    result = measure(record, [1, 2], {"c": 3}, rounds=4, loops=5, warmup_rounds=2)
    assert result.rounds == 4 and result.loops == 5
    # One probe call, then the warmup and timed rounds, then the per-call pass of a fast call
    # (as many calls as the timed rounds made, being fewer than PER_CALL_PASS_MIN_CALLS).
    assert len(seen) == 1 + (2 + 4) * 5 + 4 * 5
    assert set(seen) == {(1, 2, 3)}


def test_measure_calibrates_loops_to_the_minimum_round_time():
    result = measure(lambda: None, rounds=5, min_round_time=2e-4)
    assert result.loops > 1
    assert min(result.rounds_ns) >= 0.5 * 2e-4 * 1e9


def test_measure_fits_max_time():
    start = time.perf_counter()
    result = measure(time.sleep, (0.002,), max_time=0.1)
    elapsed = time.perf_counter() - start
    assert 5 <= result.rounds <= 60
    assert elapsed < 1.0


def test_measure_statistics_match_the_rounds():
    result = measure(lambda: sum(range(50)), max_time=0.05)
    per_call = sorted(ns * 1e-9 / result.loops for ns in result.rounds_ns)
    assert result.rounds == len(result.rounds_ns)
    assert result.min == per_call[0]
    assert result.max >= per_call[-1]  # the slowest single call: at least the slowest round mean
    assert result.mean == pytest.approx(statistics.fmean(per_call))
    assert result.median == pytest.approx(statistics.median(per_call))
    assert result.stddev == pytest.approx(statistics.stdev(per_call))
    assert result.ops == pytest.approx(1 / result.mean)
    assert result.p95 <= result.p99 <= result.max


def test_measurement_statistics_on_known_rounds():
    rounds_ns = array.array("q", [100, 200, 300, 400, 1000])
    result = Measurement(rounds_ns, loops=10)
    assert result.min == pytest.approx(10e-9)
    assert result.max == pytest.approx(100e-9)
    assert result.mean == pytest.approx(40e-9)
    assert result.median == pytest.approx(30e-9)
    assert result.iqr == pytest.approx(20e-9)  # 40 ns - 20 ns
    assert result.p95 == pytest.approx(88e-9)
    assert result.stddev == pytest.approx(statistics.stdev([10e-9, 20e-9, 30e-9, 40e-9, 100e-9]))
    assert result.ops == pytest.approx(25e6)
    assert result.total == pytest.approx(2000e-9)


def test_measurement_rounds_ns_supports_the_buffer_protocol():
    result = measure(lambda: None, rounds=7, loops=3)
    view = memoryview(result.rounds_ns)
    assert view.format == "q" and view.itemsize == 8 and len(view) == 7
    assert all(ns > 0 for ns in view)
    assert result.per_call_ns() == [ns / 3 for ns in result.rounds_ns]


def test_measurement_to_dict_and_repr():
    result = measure(lambda: None, rounds=5, loops=100)
    data = result.to_dict()
    for key in ("loops", "rounds", "min", "max", "mean", "median", "stddev", "iqr", "p95", "p99", "ops"):
        assert isinstance(data[key], (int, float)), key
    assert "rounds_ns" not in data
    assert result.to_dict(include_rounds=True)["rounds_ns"] == list(result.rounds_ns)
    text = repr(result)
    assert text.startswith("<Measurement 5 rounds x 100 loops: mean ")
    assert "ops/s" in text


def test_measure_awaits_coroutine_functions_on_one_event_loop():
    loops_seen = set()

    async def agent_step(delay):
        loops_seen.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(delay)

    result = measure(agent_step, (0.001,), rounds=10, loops=2)
    assert result.rounds == 10
    assert len(loops_seen) == 1
    assert result.median >= 1e-3


def test_measure_awaits_what_a_plain_callable_returns():
    calls = []

    async def step():
        calls.append(1)

    result = measure(lambda: step(), rounds=3, loops=4, warmup_rounds=0)
    assert result.rounds == 3
    # The probe's coroutine is closed, never run; 12 timed awaits, 12 more in the per-call pass.
    assert len(calls) == 12 + 12


def test_measure_inside_a_running_event_loop():
    async def step():
        await asyncio.sleep(0)

    async def main():
        return measure(step, rounds=3, loops=10)

    assert asyncio.run(main()).rounds == 3


class AgentError(Exception):
    pass


def test_exception_from_fn_propagates_unchanged():
    error = AgentError("tool failed")
    calls = []

    def failing_step():
        calls.append(1)
        if len(calls) == 5:
            raise error

    with pytest.raises(AgentError) as excinfo:
        measure(failing_step, rounds=3, loops=10)
    assert excinfo.value is error
    assert any(entry.name == "failing_step" for entry in excinfo.traceback)


def test_exception_from_async_fn_propagates_unchanged():
    error = AgentError("llm failed")

    async def failing_step():
        raise error

    with pytest.raises(AgentError) as excinfo:
        measure(failing_step, rounds=2)
    assert excinfo.value is error


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_sigint_interrupts_measure_of_a_fast_c_function():
    fired = {}

    def interrupt():
        time.sleep(0.2)
        fired["at"] = now_ns()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = threading.Thread(target=interrupt)
    killer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # len(()) never enters the eval loop; without our own signal checks this would run
            # for minutes.
            measure(len, ((),), rounds=10, loops=10**10, warmup_rounds=0)
        delay_ns = now_ns() - fired["at"]
    finally:
        killer.join()
    assert delay_ns < 500_000_000


def _noop():
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fn": 42}, TypeError, "fn must be callable"),
        ({"args": 5}, TypeError, "args must be a tuple or list"),
        ({"args": "ab"}, TypeError, "args must be a tuple or list"),
        ({"kwargs": [("a", 1)]}, TypeError, "kwargs must be a mapping"),
        ({"rounds": 0}, ValueError, "rounds must be >= 1"),
        ({"rounds": -3}, ValueError, "rounds must be >= 1"),
        ({"rounds": 2.5}, TypeError, "rounds must be an int"),
        ({"rounds": True}, TypeError, "rounds must be an int"),
        ({"loops": 0}, ValueError, "loops must be >= 1"),
        ({"loops": "10"}, TypeError, "loops must be an int"),
        ({"warmup_rounds": -1}, ValueError, "warmup_rounds must be >= 0"),
        ({"min_round_time": -1.0}, ValueError, "min_round_time must be >= 0"),
        ({"min_round_time": math.nan}, ValueError, "min_round_time must be finite"),
        ({"min_round_time": "1ms"}, TypeError, "min_round_time must be a number"),
        ({"max_time": 0}, ValueError, "max_time must be > 0"),
        ({"max_time": -1}, ValueError, "max_time must be > 0"),
        ({"max_time": math.inf}, ValueError, "max_time must be finite"),
        ({"max_time": math.nan}, ValueError, "max_time must be finite"),
    ],
)
def test_measure_rejects_bad_input(kwargs, error, match):
    call = {"fn": _noop, **kwargs}
    fn = call.pop("fn")
    with pytest.raises(error, match=match):
        measure(fn, **call)


def test_time_rounds_checks_its_output_buffer():
    from pyagentbench import _native

    with pytest.raises(TypeError, match="int64"):
        _native.time_rounds(_noop, (), None, 1, array.array("d", [0.0]))
    with pytest.raises((TypeError, BufferError)):
        _native.time_rounds(_noop, (), None, 1, bytes(8))
    with pytest.raises(ValueError, match="loops must be >= 1"):
        _native.time_rounds(_noop, (), None, 0, array.array("q", [0]))
    with pytest.raises(TypeError, match="keywords must be strings"):
        _native.time_rounds(_noop, (), {1: 2}, 1, array.array("q", [0]))


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_measure_does_not_leak():
    import gc

    def fn(x, *, y):
        return [x, y]

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    measure(fn, (1,), {"y": 2}, rounds=10, loops=1000)
    gc.collect()
    before = rss()
    for _ in range(300):
        measure(fn, (1,), {"y": 2}, rounds=10, loops=1000, warmup_rounds=0)
    gc.collect()
    assert rss() - before < 4 * 2**20


def test_measure_with_result_returns_the_final_calls_result():
    from pyagentbench.instruments.timers import measure_with_result

    counter = iter(range(10**6))
    result, value = measure_with_result(lambda: next(counter), rounds=3, loops=4, warmup_rounds=0)
    assert value == 1 + 3 * 4 - 1  # after the probe call and 12 timed calls

    async def answer():
        return 42

    assert measure_with_result(answer, rounds=2, loops=2)[1] == 42


def test_min_rounds_raises_the_floor():
    result = measure(time.sleep, (0.001,), max_time=0.001, min_rounds=12)
    assert result.rounds == 12
    with pytest.raises(ValueError, match="min_rounds must be >= 1"):
        measure(_noop, min_rounds=0)
