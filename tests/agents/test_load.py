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
