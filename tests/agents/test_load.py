"""run_load: closed and open loop, sync and async targets, failures, concurrency, resources."""

import asyncio
import time

import pytest

import pyagentbench

if not hasattr(pyagentbench, "Histogram"):
    pytest.skip("the native runtime (Histogram) is not built in", allow_module_level=True)

from pyagentbench import arun_load, run_load
from pyagentbench.mocks import MockTool


def test_closed_loop_sync_runs_each_payload_once():
    tool = MockTool("t", result=1, latency=0.005)
    result = run_load(tool, range(100), concurrency=10, progress=False)
    assert result.mode == "closed"
    assert (result.completed, result.failed, result.error_rate) == (100, 0, 0.0)
    assert tool.call_count == 100
    assert 5_000_000 <= result.latency_p50_ns <= result.latency_p99_ns <= result.latency_max_ns
    assert result.throughput > 500  # 10 workers x 200/s each, ideally 2000/s
    assert 5 < result.achieved_concurrency <= 10.5


def test_closed_loop_async_with_duration_cycles_payloads():
    tool = MockTool("t", latency=0.01)
    result = run_load(tool.acall, ["a", "b"], concurrency=20, duration=0.2, progress=False)
    assert 200 < result.completed < 450  # ideally 20 x 20 = 400
    assert {c.args[0] for c in tool.calls} == {"a", "b"}


def test_open_loop_holds_the_rate_and_measures_from_the_schedule():
    tool = MockTool("t", latency=0.002)
    start = time.perf_counter()
    result = run_load(tool, [0], concurrency=4, duration=0.3, rate=200, progress=False)
    elapsed = time.perf_counter() - start
    assert result.mode == "open"
    assert 55 <= result.completed <= 61 and elapsed >= 0.29


def test_open_loop_latency_includes_queueing_when_overloaded():
    tool = MockTool("t", latency=0.01)
    result = run_load(tool, [0], concurrency=1, duration=0.2, rate=500, progress=False)
    # one worker can serve 100/s; tasks due at 500/s wait longer and longer
    assert result.latency_max_ns > 10 * 10_000_000


def test_failures_are_counted():
    tool = MockTool("t", failure_rate=0.5, seed=3)
    result = run_load(tool, range(400), concurrency=4, progress=False)
    assert result.completed + result.failed == 400
    assert 0.4 < result.error_rate < 0.6


def test_resource_summary_when_a_sampler_exists():
    result = run_load(lambda x: time.sleep(0.01), range(20), concurrency=2, progress=False)
    if hasattr(pyagentbench, "Sampler"):
        assert result.resources is not None and result.resources.peak_rss > 0
    assert result.to_dict()["completed"] == 20


def test_arun_load_inside_a_loop():
    async def work(x):
        await asyncio.sleep(0.001)

    result = asyncio.run(arun_load(work, range(50), concurrency=5, progress=False))
    assert result.completed == 50
    with pytest.raises(TypeError, match="async"):
        asyncio.run(arun_load(lambda x: x, [1]))


def test_progress_line_after_two_seconds(capsys, monkeypatch):
    monkeypatch.setattr(pyagentbench.agents.load, "PROGRESS_AFTER_S", 0.05)
    run_load(lambda x: time.sleep(0.01), [0], concurrency=2, duration=0.7, progress=True)
    err = capsys.readouterr().err
    assert "run_load:" in err and "tasks/s" in err


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"concurrency": 0}, ValueError), ({"concurrency": "2"}, TypeError), ({"duration": -1}, ValueError),
     ({"rate": 0}, ValueError), ({"rate": "fast"}, TypeError)],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        run_load(lambda x: x, [1], **kwargs)
    with pytest.raises(ValueError, match="payloads"):
        run_load(lambda x: x, [])
    with pytest.raises(TypeError, match="target"):
        run_load(3, [1])


class _AsyncSleeper(pyagentbench.Agent):
    async def handle(self, task):
        await asyncio.sleep(0.002)
        return task.payload


def test_bound_process_of_an_async_agent_is_awaited():
    agent = _AsyncSleeper(workers=4)
    result = run_load(agent.process, ["a"] * 50, concurrency=8, progress=False)
    assert (result.completed, result.failed) == (50, 0)
    assert agent.metrics().tasks_completed == 50  # the handler really ran
    assert result.latency_p50_ns >= 2_000_000

    async def main():
        return await arun_load(agent.process, ["b"] * 20, concurrency=4, progress=False)

    assert asyncio.run(main()).completed == 20
    assert agent.metrics().tasks_completed == 70


def test_a_sync_target_returning_an_awaitable_fails_loudly():
    import gc
    import warnings

    async def work(payload):
        return payload

    def returns_coroutine(payload):  # a plain function handing back an un-awaited coroutine
        return work(payload)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        with pytest.raises(TypeError, match="awaitable.*async def function, or the Agent"):
            run_load(returns_coroutine, ["a"] * 50, concurrency=8, progress=False)
        gc.collect()


def test_throughput_counts_only_completed_tasks():
    def half_fail(payload):
        time.sleep(0.001)
        if payload % 2:
            raise ValueError(payload)

    result = run_load(half_fail, range(200), concurrency=4, progress=False)
    assert (result.completed, result.failed) == (100, 100)
    assert result.throughput == pytest.approx(100 / result.duration_s)
    assert result.attempted_throughput == pytest.approx(200 / result.duration_s)

    def always_fail(payload):
        raise ValueError(payload)

    failing = run_load(always_fail, range(200), concurrency=4, progress=False)
    assert failing.throughput == 0.0 and failing.attempted_throughput > 0
    assert failing.to_dict()["throughput"] == 0.0


# ---- failures by type, first error, class instead of instance ----

from pyagentbench.agents.load import (  # noqa: E402
    MAX_FAILURE_TYPES,
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    OTHER_FAILURES,
    Failure,
)


def _mixed_failures(payload):
    if payload % 4 == 0:
        raise ValueError(f"no model for payload {payload}")
    if payload % 4 == 1:
        raise KeyError(payload)
    return payload


def test_failures_are_kept_by_type_with_the_first_message():
    result = run_load(_mixed_failures, range(200), concurrency=1, progress=False)
    assert (result.completed, result.failed) == (100, 100)
    # One worker: payload 0 is the first ValueError, payload 1 the first KeyError, in that order.
    assert result.failures == {"ValueError": Failure(50, "no model for payload 0"), "KeyError": Failure(50, "1")}
    assert list(result.failures) == ["ValueError", "KeyError"]
    assert result.errors_by_type == {"ValueError": 50, "KeyError": 50}
    assert result.to_dict()["failures"] == {
        "ValueError": {"count": 50, "message": "no model for payload 0"},
        "KeyError": {"count": 50, "message": "1"},
    }
    # The first failure's traceback starts in the target, not in the load worker.
    assert result.first_error.startswith("Traceback (most recent call last):")
    assert "_mixed_failures" in result.first_error and "load_worker" not in result.first_error
    assert result.first_error.rstrip().endswith("ValueError: no model for payload 0")


def test_failures_from_many_workers_add_up():
    result = run_load(_mixed_failures, range(2000), concurrency=8, progress=False)
    assert result.errors_by_type == {"ValueError": 500, "KeyError": 500}
    assert result.failures["ValueError"].message.startswith("no model for payload ")
    assert result.first_error is not None


def test_no_failures_no_first_error():
    result = run_load(lambda x: x, range(10), concurrency=2, progress=False)
    assert result.failures == {} and result.first_error is None and result.to_dict()["failures"] == {}


def test_user_exception_types_are_named_with_their_module():
    from pyagentbench.mocks import MockTool

    result = run_load(MockTool("t", failure_rate=1.0), range(10), concurrency=2, progress=False)
    assert result.errors_by_type == {"pyagentbench.agents.mocks.MockToolError": 10}


def test_failure_bookkeeping_is_bounded_whatever_the_failures():
    kinds = [type(f"Error{i}", (Exception,), {}) for i in range(3 * MAX_FAILURE_TYPES)]
    long_message = "x" * (10 * MAX_MESSAGE_CHARS)

    def fail(payload):
        def deep(n):  # a deep stack makes a traceback longer than it may be kept
            if n:
                deep(n - 1)
            raise kinds[payload % len(kinds)](long_message)

        deep(200)

    result = run_load(fail, range(20_000), concurrency=4, progress=False)
    assert result.failed == 20_000
    assert len(result.failures) == MAX_FAILURE_TYPES + 1  # the first types apart, the rest together
    assert sum(f.count for f in result.failures.values()) == 20_000
    assert OTHER_FAILURES in result.failures
    assert all(len(f.message) <= MAX_MESSAGE_CHARS + 64 for f in result.failures.values())
    assert result.failures[f"{__name__}.Error0"].message.endswith("...")
    assert len(result.first_error) <= MAX_TRACEBACK_CHARS


def test_an_exception_with_a_broken_str_is_still_counted():
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no")

    def fail(payload):
        raise Weird()

    result = run_load(fail, range(5), concurrency=1, progress=False)
    name = f"{__name__}.test_an_exception_with_a_broken_str_is_still_counted.<locals>.Weird"
    assert result.failures == {name: Failure(5, "<unprintable Weird>")}


def test_async_failures_are_kept_by_type():
    async def work(payload):
        await asyncio.sleep(0)
        return _mixed_failures(payload)

    result = run_load(work, range(200), concurrency=1, progress=False)
    assert result.failures == {"ValueError": Failure(50, "no model for payload 0"), "KeyError": Failure(50, "1")}
    assert "ValueError: no model for payload 0" in result.first_error


class _Echo(pyagentbench.Agent):
    def handle(self, task):
        return task.payload


def test_an_agent_class_instead_of_an_instance_is_a_type_error():
    # Before: the class was called with each payload, every task failed, and nothing said why.
    with pytest.raises(TypeError, match=r"target is the class _Echo, not an agent: pass an instance, e.g. _Echo\(\)"):
        run_load(_Echo, range(10), progress=False)
    with pytest.raises(TypeError, match="pass an instance"):
        asyncio.run(arun_load(_AsyncSleeper, range(10), progress=False))
    with pytest.raises(TypeError, match="pass an instance"):
        pyagentbench.BatchExecutor(_Echo)
    agent = _Echo()
    try:
        assert run_load(agent, range(10), progress=False).completed == 10
    finally:
        agent.stop()


# ---- per-task timeout ----


@pytest.mark.parametrize(
    "timeout, exc", [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                     ("1", TypeError), (True, TypeError)],
)
def test_timeout_must_be_a_positive_finite_number(timeout, exc):
    with pytest.raises(exc, match="timeout"):
        run_load(lambda x: x, [1], timeout=timeout, progress=False)

    async def work(x):
        return x

    with pytest.raises(exc, match="timeout"):
        asyncio.run(arun_load(work, [1], timeout=timeout, progress=False))


def test_timeout_sync_counts_slow_calls_as_timeout_errors_and_lets_them_finish():
    import threading

    finished = []
    in_flight = [0, 0]  # now, most ever
    lock = threading.Lock()

    def work(payload):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        if payload < 4:
            time.sleep(0.3)  # far beyond the timeout
        finished.append(payload)
        with lock:
            in_flight[0] -= 1
        return payload

    result = run_load(work, range(40), concurrency=4, timeout=0.1, progress=False)
    assert (result.completed, result.failed) == (36, 4)
    assert list(result.failures) == ["TimeoutError"] and result.failures["TimeoutError"].count == 4
    assert "longer than the 0.1 s timeout" in result.failures["TimeoutError"].message
    assert "not interrupted" in result.failures["TimeoutError"].message
    # A thread cannot be interrupted: the slow calls ran to their end, inside the run.
    assert sorted(finished) == list(range(40))
    assert result.latency_max_ns >= 300_000_000  # failed tasks' latencies are counted too
    assert in_flight[1] <= 4  # no worker left a slow call behind to start another


def test_timeout_sync_wins_over_the_calls_own_exception():
    def work(payload):
        time.sleep(0.2)
        raise ValueError("late")

    result = run_load(work, range(2), concurrency=2, timeout=0.05, progress=False)
    assert result.errors_by_type == {"TimeoutError": 2}


def test_timeout_async_cancels_the_task():
    cancelled = []

    async def work(payload):
        try:
            await asyncio.sleep(30 if payload < 3 else 0.001)
        except asyncio.CancelledError:
            cancelled.append(payload)
            raise
        return payload

    result = run_load(work, range(30), concurrency=3, timeout=0.1, progress=False)
    assert (result.completed, result.failed) == (27, 3)
    assert sorted(cancelled) == [0, 1, 2]
    assert result.failures["TimeoutError"].count == 3
    assert "longer than the 0.1 s timeout and was cancelled" in result.failures["TimeoutError"].message
    # Cancelled at the timeout: the slow tasks' latency is about the 0.1 s timeout, not 30 s.
    assert 100_000_000 <= result.latency_max_ns < 1_000_000_000

    async def main():
        return await arun_load(work, range(6), concurrency=3, timeout=0.1, progress=False)

    assert asyncio.run(main()).errors_by_type == {"TimeoutError": 3}


def test_timeout_does_not_count_the_wait_for_a_turn_in_an_open_loop():
    # One worker serving 5 ms tasks due at 500/s (2 ms apart): they queue, and their latency (from
    # when they were due) grows to ~0.3 s, far past the timeout, but no task runs 50 ms itself.
    result = run_load(lambda p: time.sleep(0.005), [0], concurrency=1, duration=0.2, rate=500,
                      timeout=0.05, progress=False)
    assert result.failed == 0 and result.completed >= 90
    assert result.latency_max_ns > 2 * 50_000_000
    # The mean grows with the queue as the percentiles do: far above the 5 ms of service.
    assert result.latency_mean_ns > 10 * 5_000_000


def test_timeout_async_keeps_the_targets_own_timeout_error():
    async def work(payload):
        raise TimeoutError("upstream LLM timed out")

    result = run_load(work, range(5), concurrency=1, timeout=10, progress=False)
    assert result.failures == {"TimeoutError": Failure(5, "upstream LLM timed out")}


# ---- latency mean ----


def test_latency_mean_of_ten_ms_tasks_is_ten_ms():
    own_ns = []

    def work(payload):
        start = time.perf_counter_ns()
        time.sleep(0.01)
        own_ns.append(time.perf_counter_ns() - start)

    result = run_load(work, range(60), concurrency=4, progress=False)
    assert 10_000_000 <= result.latency_mean_ns
    # The mean is the mean of the calls' own times (plus the worker's few microseconds a call).
    assert result.latency_mean_ns == pytest.approx(sum(own_ns) / len(own_ns), rel=0.05)
    assert result.to_dict()["latency_mean_ns"] == result.latency_mean_ns


def test_latency_mean_is_the_mean_not_the_median():
    # 1 call in 4 sleeps 40 ms, the rest ~0: the median is ~0 and the mean ~10 ms.
    def work(payload):
        if payload % 4 == 0:
            time.sleep(0.04)

    result = run_load(work, range(80), concurrency=1, progress=False)
    assert result.latency_p50_ns < 1_000_000
    # 20 calls of at least 40 ms each: the mean of the 80 is at least 10 ms (however long the sleeps
    # overran on a loaded machine), and at most the max.
    assert 10_000_000 <= result.latency_mean_ns <= result.latency_max_ns


def test_latency_mean_async():
    async def work(payload):
        await asyncio.sleep(0.01)

    result = run_load(work, range(40), concurrency=8, progress=False)
    assert result.latency_p50_ns <= result.latency_max_ns
    assert result.latency_mean_ns == pytest.approx(result.latency_p50_ns, rel=0.2)
    assert result.latency_mean_ns >= 10_000_000
