"""Per-call tails and streams: p95/p99/max are single calls, generators are consumed.

Known answers by construction: when every 50th call busy-waits 0.5 ms and the rest take ~100 ns,
2% of calls are slow, so the 99th percentile of single calls is a slow call (~0.5 ms) while every
round mean stays near 10 us. A generator that sleeps 2 ms before each of 5 items reaches its first
item after ~2 ms, then one item every ~2 ms, and a call lasts ~10 ms. No absolute timing is asserted
beyond those sleeps, with generous bounds.
"""

import array
import asyncio
import json
import math
import time

import pytest

from pyagentbench import _native, measure
from pyagentbench.agents.mocks import MockLLM
from pyagentbench.instruments import timers
from pyagentbench.instruments.timers import Measurement, measure_with_result

SLOW_S = 0.0005


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def two_percent_slow(slow_s=SLOW_S, base_s=0.0):
    """A function whose every 50th call busy-waits slow_s (others base_s, or ~100 ns)."""
    count = [0]

    def lookup():
        count[0] += 1
        if count[0] % 50 == 0:
            busy(slow_s)
        elif base_s:
            busy(base_s)
        return count[0]

    return lookup


def sleepy_items(n=5, sleep_s=0.002):
    for i in range(n):
        time.sleep(sleep_s)
        yield i


async def asleepy_items(n=5, sleep_s=0.002):
    for i in range(n):
        await asyncio.sleep(sleep_s)
        yield i


# ---- per-call tails ----


def test_p99_is_the_slow_calls_time_when_2_percent_of_calls_are_slow():
    m = measure(two_percent_slow(), max_time=0.5)
    assert m.loops > 1  # rounds average many calls: their means all sit near 10 us
    assert max(m.per_call_ns()) < 0.5 * SLOW_S * 1e9 or m.rounds > 100
    assert SLOW_S * 0.9 <= m.p99 <= SLOW_S * 1.1
    assert m.max >= SLOW_S
    assert m.p95 < 0.1 * SLOW_S  # the other 98% are fast
    assert m.calls is not None and m.calls.count >= timers.PER_CALL_PASS_MIN_CALLS
    assert m.per_call_pass  # ~100 ns calls: timed one by one after the rounds, not in them


@pytest.mark.parametrize("in_rounds", [True, False])
def test_slow_calls_are_found_inside_the_rounds_and_in_a_separate_pass(monkeypatch, in_rounds):
    # The factor picks where single calls are timed: 0 times every call inside the rounds,
    # infinity never. Both must find the same known answer.
    monkeypatch.setattr(timers, "PER_CALL_IN_ROUND_FACTOR", 0 if in_rounds else math.inf)
    m = measure(two_percent_slow(SLOW_S), rounds=100, loops=50, warmup_rounds=1)
    assert m.per_call_pass is not in_rounds
    if in_rounds:
        assert m.calls.count == 100 * 50  # every timed call, once
    assert SLOW_S * 0.9 <= m.p99 <= SLOW_S * 1.1
    assert m.max >= SLOW_S
    # The mean still averages the rounds: a fiftieth of the slow call and then some, far below it.
    assert 0.9 * SLOW_S / 50 <= m.mean <= 0.2 * m.p99


def test_async_p99_is_the_slow_calls_time():
    count = [0]

    async def lookup():
        count[0] += 1
        if count[0] % 50 == 0:
            busy(SLOW_S)

    m = measure(lookup, max_time=0.5)
    assert m.loops > 1
    assert SLOW_S * 0.9 <= m.p99 <= SLOW_S * 1.1
    assert m.max >= SLOW_S


@pytest.mark.no_sanitizer(
    reason="a p99/median ratio: ASan's allocator (PYTHONMALLOC=malloc) widens a 100 ns call's tail")
def test_tails_of_a_100ns_function_are_near_its_rounds():
    def about_100ns():
        total = 0
        for i in range(6):
            total += i
        return total

    m = measure(about_100ns, max_time=0.3)
    assert m.loops > 1 and m.per_call_pass
    single_median = m.calls.percentile(50) * 1e-9
    # A constant-time function: single calls read what the rounds read (the clock's own cost is
    # subtracted, so they do not read high), and its tail stays close to its body. The two passes
    # run one after the other: on a machine whose other core is busy (pytest -n 2) one of them can
    # run at half speed, so the bound allows a factor 3, still far from a loop's or a clock's error.
    assert single_median <= 3 * m.median and m.median <= 3 * single_median, (m, single_median)
    assert m.p99 <= 5 * m.median
    assert m.p95 <= m.p99 <= m.max


def test_tails_memory_is_fixed():
    m = measure(lambda: None, max_time=0.2)
    assert m.calls.count >= timers.PER_CALL_PASS_MIN_CALLS
    whole = _native.Histogram()
    whole.record(whole.highest)  # counts for the whole range: the most a histogram holds
    assert m.calls.memory_bytes <= whole.memory_bytes


def test_per_call_pass_keeps_the_final_timed_calls_result():
    counter = iter(range(10**7))
    m, value = measure_with_result(lambda: next(counter), rounds=3, loops=4, warmup_rounds=0)
    assert m.per_call_pass
    assert value == 1 + 3 * 4 - 1  # after the probe call and 12 timed calls; the pass is later


def test_one_call_rounds_are_the_single_calls():
    rounds_ns = array.array("q", [100, 200, 300, 400, 1000])
    m = Measurement(rounds_ns, loops=1)
    assert m.calls is None and not m.per_call_pass
    assert m.max == pytest.approx(1000e-9)
    assert m.p99 == pytest.approx(976e-9)


def test_measurement_tails_come_from_the_calls_histogram():
    calls = _native.Histogram()
    for _ in range(98):
        calls.record(100)
    calls.record(500_000)
    calls.record(500_000)
    m = Measurement(array.array("q", [10_000] * 5), loops=20, calls=calls)
    assert m.mean == pytest.approx(500e-9)  # rounds: 10 us / 20 calls
    assert m.p99 == pytest.approx(500e-6, rel=1e-3)
    assert m.p95 == pytest.approx(100e-9, rel=1e-2)
    assert m.max == pytest.approx(500e-6, rel=1e-3)
    assert m.to_dict()["tail_calls"] == 100
    # A round slower than any single call timed (a stall during the rounds only) still shows in max.
    stalled = Measurement(array.array("q", [10_000] * 4 + [20_000_000]), loops=20, calls=calls)
    assert stalled.max == pytest.approx(1e-3)
    assert stalled.p99 == pytest.approx(500e-6, rel=1e-3)
    with pytest.raises(TypeError, match="calls must be a Histogram"):
        Measurement(array.array("q", [1]), loops=1, calls=[1, 2])


def test_time_rounds_per_call_arguments_are_checked():
    out = array.array("q", [0])
    with pytest.raises(TypeError, match="calls must be a Histogram or None, not int"):
        _native.time_rounds(lambda: None, (), None, 1, out, 3)
    with pytest.raises(ValueError, match="at least 5 int64 slots"):
        _native.time_rounds(lambda: None, (), None, 1, out, None, array.array("q", [0]))
    with pytest.raises(TypeError, match="streams must be a writable buffer of int64"):
        _native.time_rounds(lambda: None, (), None, 1, out, None, array.array("d", [0.0] * 5))
    with pytest.raises(TypeError, match="returned NoneType, not an iterator"):
        _native.time_rounds(lambda: None, (), None, 1, out, None, array.array("q", bytes(40)))
    with pytest.raises(TypeError, match="takes 5 to 7 arguments"):
        _native.time_rounds(lambda: None, (), None, 1, out, None, None, None)


def test_time_rounds_records_every_call_less_the_clock_cost():
    calls = _native.Histogram()
    out = array.array("q", bytes(8 * 4))
    _native.time_rounds(time.sleep, (0.001,), None, 3, out, calls)
    assert calls.count == 12
    assert calls.min >= 1_000_000  # each call slept at least 1 ms
    assert sum(out) >= calls.count * calls.min  # the rounds hold the calls


# ---- streams ----


def check_stream(m, result):
    assert result == [0, 1, 2, 3, 4]  # the final call's items
    assert m.items_per_call == 5
    assert 1.9e-3 <= m.ttft <= 6e-3
    assert 1.9e-3 <= m.inter_item <= 6e-3
    assert m.median >= 9.5e-3  # the whole stream, not the generator's creation (~150 ns)
    assert m.max >= m.median


def test_a_generator_is_consumed_inside_the_timed_call():
    m, result = measure_with_result(sleepy_items, max_time=0.2)
    check_stream(m, result)


def test_an_async_generator_is_consumed_inside_the_timed_call():
    m, result = measure_with_result(asleepy_items, max_time=0.2)
    check_stream(m, result)


@pytest.mark.parametrize("make", [lambda: sleepy_items(), lambda: asleepy_items()],
                         ids=["generator", "async generator"])
def test_a_callable_returning_a_stream_is_consumed(make):
    m, result = measure_with_result(make, max_time=0.2)
    check_stream(m, result)


def test_an_async_generator_inside_a_running_event_loop():
    async def main():
        return measure_with_result(asleepy_items, max_time=0.1)

    check_stream(*asyncio.run(main()))


def test_a_fast_generator_gets_item_times_from_the_per_call_pass():
    def three():
        yield from range(3)

    m, result = measure_with_result(three, max_time=0.1)
    assert result == [0, 1, 2]
    assert m.per_call_pass and m.items_per_call == 3
    assert 0 <= m.ttft <= m.max and 0 <= m.inter_item <= m.max


def test_an_empty_generator_has_no_item_times():
    def nothing():
        return
        yield

    m, result = measure_with_result(nothing, rounds=3, loops=2)
    assert result == [] and m.items_per_call == 0
    assert m.ttft is None and m.inter_item is None


def test_an_error_inside_a_stream_propagates():
    class StreamError(Exception):
        pass

    def failing():
        yield 1
        raise StreamError("cut off")

    with pytest.raises(StreamError, match="cut off"):
        measure(failing, rounds=2)


@pytest.mark.parametrize("method", ["stream", "astream"])
def test_mock_llm_streams_time_to_first_token_and_between_tokens(method):
    # 20 characters: five 1-token chunks. The first comes after the 4 ms latency and its own 2 ms
    # (500 tokens/s), the next ones 2 ms apart.
    llm = MockLLM(responses=["x" * 20], latency=0.004, tokens_per_second=500)
    m, result = measure_with_result(getattr(llm, method), ("hi",), max_time=0.2)
    assert result == ["xxxx"] * 5
    assert m.items_per_call == 5
    assert 5.8e-3 <= m.ttft <= 12e-3
    assert 1.9e-3 <= m.inter_item <= 6e-3
    assert m.median >= 13.5e-3


def test_timing_metrics_carry_the_stream_keys():
    from pyagentbench.instruments.observe import observe

    obs = observe(sleepy_items, max_time=0.1, resources_on=False, allocs_on=False)
    assert obs.result == [0, 1, 2, 3, 4]
    for key in ("ttft_s", "inter_item_s", "items_per_call", "p99_s", "max_s"):
        assert key in obs.metrics, key
    assert obs.metrics["items_per_call"] == 5
    assert 1.9e-3 <= obs.metrics["ttft_s"] <= 6e-3

    # Allocations count the consumption: five fresh 1000-item lists, not only the generator.
    def lists():
        for _ in range(5):
            yield [0] * 1000

    counted = observe(lists, max_time=0.05, resources_on=False)
    assert counted.metrics["allocs_per_call"] >= 5
    assert counted.metrics["bytes_per_call"] >= 5 * 8000

    plain = observe(lambda: None, rounds=3, loops=10, resources_on=False, allocs_on=False)
    assert "ttft_s" not in plain.metrics and "items_per_call" not in plain.metrics


# ---- the fixture, run the way a user runs it ----

FIXTURE_TESTS = """
import asyncio, time
import pytest

count = [0]

def lookup():
    count[0] += 1
    if count[0] % 50 == 0:
        end = time.perf_counter() + 0.0005
        while time.perf_counter() < end:
            pass
    return 1

def items():
    for i in range(5):
        time.sleep(0.002)
        yield i

async def aitems():
    for i in range(5):
        await asyncio.sleep(0.002)
        yield i

@pytest.mark.slo(p99="100us")
def test_cache_call(agent_benchmark):
    agent_benchmark(lookup)

@pytest.mark.slo(p99="100us")
def test_cache_pedantic(agent_benchmark):
    agent_benchmark.pedantic(lookup, rounds=20, iterations=100)

def test_stream(agent_benchmark):
    assert agent_benchmark(items) == [0, 1, 2, 3, 4]

def test_astream_pedantic(agent_benchmark):
    assert agent_benchmark.pedantic(aitems, rounds=3) == [0, 1, 2, 3, 4]

def test_stream_pedantic_setup(agent_benchmark):
    assert agent_benchmark.pedantic(items, setup=lambda: ((), {}), rounds=2) == [0, 1, 2, 3, 4]

def test_stream_pedantic_lambda(agent_benchmark):
    assert agent_benchmark.pedantic(lambda: items(), rounds=2, iterations=2, warmup_rounds=1) == [0, 1, 2, 3, 4]
"""


def test_fixture_tails_and_streams_end_to_end(pytester):
    pytester.makepyfile(test_agent=FIXTURE_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--benchmark-max-time=0.2", "--benchmark-json=out.json"
    )
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*SLO budget p99='100us' broken: measured p99 = * us*"])
    benches = {b["name"]: b["extra_info"]["agentbench"]
               for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]}
    for name in ("test_cache_call", "test_cache_pedantic"):
        record = benches[name]
        assert record["loops"] > 1, name
        assert SLOW_S * 0.9 <= record["p99_s"] <= SLOW_S * 1.1, name
        assert record["max_s"] >= SLOW_S, name
    assert benches["test_cache_pedantic"]["tail_calls"] >= 2000
    for name in ("test_stream", "test_astream_pedantic", "test_stream_pedantic_lambda",
                 "test_stream_pedantic_setup"):
        record = benches[name]
        assert record["items_per_call"] == 5, name
        # Each is one 2 ms sleep of the five in a call. On a loaded machine every sleep runs long,
        # so the upper bound is the call's own mean time, not a fixed one.
        assert 1.9e-3 <= record["ttft_s"] < record["mean_s"] / 2, name
        assert 1.9e-3 <= record["inter_item_s"] < record["mean_s"] / 2, name
        assert record["median_s"] >= 9.5e-3, name
    assert benches["test_stream_pedantic_lambda"]["tail_calls"] == 4  # warm-up left out
    assert benches["test_astream_pedantic"]["tail_calls"] == 3
    setup_run = benches["test_stream_pedantic_setup"]
    assert setup_run["tail_calls"] == 2 and setup_run["per_call_pass"] is False


def test_the_notebook_table_shows_the_per_call_tail_and_stream_times():
    from pyagentbench.instruments.observe import observe
    from pyagentbench.integrations.ipython import AbenchResult

    shown = AbenchResult("llm.stream('hi')", observe(sleepy_items, max_time=0.05,
                                                      resources_on=False, allocs_on=False))
    names = [name for name, _ in shown.rows()]
    assert "p99 (per call)" in names
    assert "first item" in names and "between items" in names
    plain = AbenchResult("f()", observe(lambda: None, rounds=3, loops=10, resources_on=False,
                                        allocs_on=False))
    assert "first item" not in [name for name, _ in plain.rows()]


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_per_call_and_stream_loops_do_not_leak():
    from leakcheck import rss_growth_bytes

    calls = _native.Histogram()
    slots = array.array("q", bytes(8 * 5))
    out = array.array("q", bytes(8 * 10))

    def three(x, *, y):
        yield x
        yield [y]
        yield x

    def op(n):
        # n calls a batch: per-call timing, streams kept on the final call, and raised errors.
        _native.time_rounds(three, ("a",), {"y": 2}, n // 10, out, calls, slots)
        _native.time_rounds(lambda: [1], (), None, n // 10, out, calls)
        try:
            _native.time_rounds(lambda: 5, (), None, 1, out, None, slots)
        except TypeError:
            pass

    assert rss_growth_bytes(op, 1_000_000) < 4 * 2**20
    whole = _native.Histogram()
    whole.record(whole.highest)  # counts for the whole range: the most a histogram holds
    assert calls.memory_bytes <= whole.memory_bytes
