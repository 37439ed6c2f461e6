"""BatchExecutor: order, concurrency bound, continue vs fail_fast, timeout, sync and async streams."""

import asyncio
import concurrent.futures
import threading
import time

import pytest

import pyagentbench

from pyagentbench import BatchExecutor
from pyagentbench.mocks import MockTool


def double(x):
    if x == "boom":
        raise ValueError("boom")
    return x * 2


async def adouble(x):
    await asyncio.sleep(0.001)
    return double(x)


@pytest.mark.parametrize("target", [double, adouble])
def test_execute_keeps_input_order_and_counts(target):
    result = BatchExecutor(target, max_concurrency=4).execute([1, 2, "boom", 4])
    assert result.results == [2, 4, None, 8]
    assert list(result.errors) == [2] and isinstance(result.errors[2], ValueError)
    assert (result.total, result.success, result.failed, result.cancelled) == (4, 3, 1, 0)
    assert result.duration_s > 0 and result.throughput > 0 and not result.ok
    with pytest.raises(ValueError):
        result.raise_first()


def test_concurrency_is_bounded_and_used():
    active = [0]
    peak = [0]
    lock = threading.Lock()

    def work(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.005)
        with lock:
            active[0] -= 1
        return x

    start = time.perf_counter()
    result = BatchExecutor(work, max_concurrency=5).execute(range(50))
    assert time.perf_counter() - start < 50 * 0.005 / 2
    assert peak[0] == 5 and result.ok


@pytest.mark.parametrize("tool_call", ["sync", "async"])
def test_fail_fast_cancels_what_has_not_started(tool_call):
    tool = MockTool("t", result=1, latency=0.002)

    def sync_work(x):
        if x == 3:
            raise ValueError
        return tool(x)

    async def async_work(x):
        if x == 3:
            raise ValueError
        return await tool.acall(x)

    target = sync_work if tool_call == "sync" else async_work
    result = BatchExecutor(target, max_concurrency=2, error_policy="fail_fast").execute(range(100))
    assert isinstance(result.errors[3], ValueError)
    assert result.cancelled > 80
    assert tool.call_count < 15
    assert all(isinstance(result.errors[i], concurrent.futures.CancelledError) for i in result.errors if i != 3)
    cont = BatchExecutor(target, max_concurrency=2).execute(range(20))
    assert cont.failed == 1 and cont.success == 19


@pytest.mark.parametrize("target_kind", ["sync", "async"])
def test_timeout_reports_unfinished_tasks(target_kind):
    tool = MockTool("slow", latency=0.05)
    target = tool if target_kind == "sync" else tool.acall
    start = time.perf_counter()
    result = BatchExecutor(target, max_concurrency=2, timeout=0.12).execute(range(20))
    assert time.perf_counter() - start < 0.5
    timeouts = [i for i, e in result.errors.items() if isinstance(e, TimeoutError)]
    assert 12 <= len(timeouts) <= 18 and result.success == 20 - len(timeouts)


@pytest.mark.parametrize("target", [double, adouble])
def test_stream_sync_iteration_yields_every_index_once(target):
    seen = dict(BatchExecutor(target, max_concurrency=3).stream([1, 2, "boom", 3]))
    assert sorted(seen) == [0, 1, 2, 3]
    assert seen[0] == 2 and isinstance(seen[2], ValueError)


@pytest.mark.parametrize("target", [double, adouble])
def test_stream_async_iteration_and_aexecute(target):
    async def main():
        executor = BatchExecutor(target, max_concurrency=3)
        seen = {i: r async for i, r in executor.stream(range(10))}
        result = await executor.aexecute(range(5))
        return seen, result

    seen, result = asyncio.run(main())
    assert seen == {i: 2 * i for i in range(10)}
    assert result.results == [0, 2, 4, 6, 8]


def test_stream_yields_as_tasks_complete():
    def work(x):
        time.sleep(0.05 if x == 0 else 0.0)
        return x

    order = [i for i, _ in BatchExecutor(work, max_concurrency=2).stream(range(5))]
    assert order[-1] == 0


def test_with_an_agent():
    import pyagentbench

    if not hasattr(pyagentbench, "TaskQueue"):
        pytest.skip("needs the native runtime")

    class Doubler(pyagentbench.Agent):
        def handle(self, task):
            return task.payload * 2

    agent = Doubler()
    result = BatchExecutor(agent, max_concurrency=4).execute(range(100))
    assert result.results == [2 * i for i in range(100)]
    assert agent.metrics().tasks_completed == 100


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"max_concurrency": 0}, ValueError), ({"max_concurrency": 1.0}, TypeError),
     ({"error_policy": "stop"}, ValueError), ({"timeout": 0}, ValueError), ({"timeout": "1"}, TypeError)],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        BatchExecutor(double, **kwargs)
    with pytest.raises(TypeError, match="callable"):
        BatchExecutor(3)


def test_bound_process_of_an_async_agent_is_awaited_by_the_batch():
    import asyncio

    class AsyncEcho(pyagentbench.Agent):
        async def handle(self, task):
            await asyncio.sleep(0)
            return task.payload * 2

    agent = AsyncEcho(workers=2)
    result = BatchExecutor(agent.process, max_concurrency=4).execute([1, 2, 3])
    assert result.results == [2, 4, 6] and result.ok


def test_batch_throughput_counts_only_successes():
    def always_fail(x):
        raise ValueError(x)

    result = BatchExecutor(always_fail, max_concurrency=2).execute(range(20))
    assert result.failed == 20 and result.duration_s > 0
    assert result.throughput == 0.0
    assert result.attempted_throughput == pytest.approx(20 / result.duration_s)
    assert result.stats()["attempted_throughput"] == result.attempted_throughput
