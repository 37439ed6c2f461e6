"""Agent and Task: sync and async handlers, submit/run/process, stop(drain), cache, breaker, metrics."""

import asyncio
import concurrent.futures
import gc
import os
import sys
import threading
import time

import pytest

import pyagentbench

if not all(hasattr(pyagentbench, n) for n in ("TaskQueue", "Histogram", "QueueClosed")):
    pytest.skip("the native runtime (TaskQueue, Histogram) is not built in", allow_module_level=True)

from pyagentbench import Agent, CircuitBreaker, CircuitOpenError, Task
from pyagentbench.instruments import resources as pyagentbench_resources
from pyagentbench.mocks import MockLLM


class Echo(Agent):
    def handle(self, task):
        return task.payload


class Double(Agent):
    def handle(self, task):
        if task.payload == "boom":
            raise ValueError("boom")
        return task.payload * 2


class AsyncDouble(Agent):
    async def handle(self, task):
        await asyncio.sleep(0)
        if task.payload == "boom":
            raise ValueError("boom")
        return task.payload * 2


class Slow(Agent):
    def handle(self, task):
        time.sleep(0.002)
        return task.payload


def make_cache():
    return pyagentbench.Cache(maxsize=100) if hasattr(pyagentbench, "Cache") else None


# ---- Task ----


def test_task_ids_are_unique_and_fields_kept():
    a, b = Task("x"), Task("y", priority=3, kind="search")
    assert a.id != b.id
    assert (b.payload, b.priority, b.kind) == ("y", 3, "search")
    assert Task("z", id="mine").id == "mine"


def test_agent_needs_a_handle():
    with pytest.raises(TypeError, match="handle"):
        Agent()


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"workers": 0}, ValueError), ({"workers": "2"}, TypeError), ({"maxsize": -1}, ValueError),
     ({"cache": 3}, TypeError), ({"breaker": "b"}, TypeError), ({"name": 1}, TypeError)],
)
def test_bad_options_are_named(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        Echo(**kwargs)


# ---- sync ----


@pytest.mark.parametrize("workers", [1, 3])
def test_run_returns_results_in_submission_order(workers):
    with Double(workers=workers) as agent:
        data = list(range(10_000))
        assert agent.run(data) == [x * 2 for x in data]
        assert agent.run([]) == []
        assert agent.run(iter([1, 2])) == [2, 4]
    m = agent.metrics()
    assert m.tasks_completed == 10_002 and m.tasks_failed == 0
    assert m.latency.count == 10_002 and m.queue_wait.count == 10_002
    assert m.throughput > 0 and m.latency_max_ns >= m.latency_p50_ns > 0


def test_run_spreads_work_across_workers():
    with Slow(workers=4) as agent:
        start = time.perf_counter()
        agent.run(range(200))
        elapsed = time.perf_counter() - start
    assert elapsed < 200 * 0.002 / 2  # at least 2x from 4 sleeping workers


def test_run_failures_raise_the_first_or_are_returned():
    with Double(workers=2) as agent:
        with pytest.raises(ValueError, match="boom"):
            agent.run([1, "boom", 3])
        results = agent.run([1, "boom", 3], return_exceptions=True)
        assert results[0] == 2 and results[2] == 6 and isinstance(results[1], ValueError)
        assert agent.run([5]) == [10]  # workers survived
    m = agent.metrics()
    assert (m.tasks_completed, m.tasks_failed) == (5, 2)
    assert m.error_rate == pytest.approx(2 / 7)


def test_submit_returns_futures_and_priority_orders_the_queue():
    order = []
    gate = threading.Event()

    class Recorder(Agent):
        def handle(self, task):
            gate.wait()
            order.append(task.payload)
            return task.payload

    agent = Recorder(workers=1)
    first = agent.submit("first")
    time.sleep(0.05)  # the worker is now blocked on the gate
    futures = [agent.submit(p, priority=pr) for p, pr in [("low", 5), ("high", -1), ("mid", 0), ("mid2", 0)]]
    gate.set()
    assert first.result(timeout=5) == "first"
    assert [f.result(timeout=5) for f in futures] == ["low", "high", "mid", "mid2"]
    assert order == ["first", "high", "mid", "mid2", "low"]
    agent.stop()
    assert isinstance(first, concurrent.futures.Future)


def test_handler_exception_goes_to_its_future_and_worker_survives():
    with Double(workers=1) as agent:
        bad = agent.submit("boom")
        good = agent.submit(4)
        with pytest.raises(ValueError):
            bad.result(timeout=5)
        assert good.result(timeout=5) == 8


def test_stop_drain_loses_no_task():
    agent = Slow(workers=2)
    futures = [agent.submit(i) for i in range(100)]
    agent.stop(drain=True)
    assert [f.result(timeout=0) for f in futures] == list(range(100))
    assert agent.metrics().tasks_completed == 100
    assert agent.state == "stopped"
    with pytest.raises(RuntimeError, match="stopped"):
        agent.submit(1)


def test_stop_without_drain_cancels_queued_tasks():
    agent = Slow(workers=1)
    futures = [agent.submit(i) for i in range(200)]
    time.sleep(0.01)
    agent.stop(drain=False)
    cancelled = sum(f.cancelled() for f in futures)
    done = sum(f.done() and not f.cancelled() for f in futures)
    assert cancelled > 100 and cancelled + done == 200


def test_restart_after_stop():
    agent = Echo(workers=1)
    agent.start()
    agent.stop()
    agent.start()
    assert agent.run([1]) == [1]
    agent.stop()


def test_process_runs_inline_with_metrics():
    agent = Double()
    assert agent.process(21) == 42
    assert agent.process(Task(1)) == 2
    with pytest.raises(ValueError):
        agent.process("boom")
    m = agent.metrics()
    assert (m.tasks_completed, m.tasks_failed) == (2, 1)
    assert agent.state == "created"  # no workers needed


def test_status_reports_queue_depth_and_busy_workers():
    gate = threading.Event()

    class Gate(Agent):
        def handle(self, task):
            gate.wait()

    agent = Gate(workers=2)
    for i in range(5):
        agent.submit(i)
    time.sleep(0.05)
    status = agent.status()
    assert status == {"state": "running", "queue_depth": 3, "busy_workers": 2, "workers": 2}
    gate.set()
    agent.stop()
    assert agent.status()["busy_workers"] == 0


def test_cache_hits_skip_the_handler_and_count_tokens_saved():
    if not hasattr(pyagentbench, "Cache"):
        pytest.skip("needs pyagentbench.Cache")
    calls = []
    llm = MockLLM(responses=["x" * 40])

    class Cached(Agent):
        def handle(self, task):
            calls.append(task.payload)
            return llm.complete(str(task.payload))

    agent = Cached(cache=pyagentbench.Cache(maxsize=10))
    for _ in range(3):
        agent.process("abcdefgh")  # 2 tokens in, 10 out
    agent.process({"q": 1})
    agent.process({"q": 1})
    assert calls == ["abcdefgh", {"q": 1}]
    m = agent.metrics()
    assert (m.cache_hits, m.cache_misses) == (3, 2)
    assert (m.tokens_in, m.tokens_out) == (4, 20)
    assert m.tokens_saved == 2 * 12 + 12


def test_run_with_cache_and_breaker_uses_the_full_path():
    if not hasattr(pyagentbench, "Cache"):
        pytest.skip("needs pyagentbench.Cache")
    with Double(workers=2, cache=pyagentbench.Cache(maxsize=1000), breaker=CircuitBreaker()) as agent:
        assert agent.run([1, 2, 1, 2] * 50) == [2, 4, 2, 4] * 50
    m = agent.metrics()
    assert m.cache_misses == 2 and m.cache_hits == 198


def test_breaker_opens_and_rejections_count_as_failures():
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    agent = Double(breaker=breaker)
    for _ in range(2):
        with pytest.raises(ValueError):
            agent.process("boom")
    with pytest.raises(CircuitOpenError):
        agent.process(1)
    assert breaker.state == "open"
    assert agent.metrics().tasks_failed == 3


def test_record_tokens_from_the_handler_and_from_mock_llm_in_workers():
    llm = MockLLM(responses=["abcd" * 3])

    class Tokens(Agent):
        def handle(self, task):
            self.record_tokens(5, 7)
            return llm.complete("abcd")

    with Tokens(workers=3) as agent:
        agent.run(range(30))
        agent.submit(0).result(timeout=5)
    m = agent.metrics()
    assert (m.tokens_in, m.tokens_out) == (31 * 6, 31 * 10)


def test_exact_counts_with_many_threads_calling_process():
    agent = Double()

    def hammer():
        for i in range(2000):
            agent.process(i)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert agent.metrics().tasks_completed == 8000


def test_sync_agent_refuses_async_with():
    async def main():
        async with Echo():
            pass

    with pytest.raises(TypeError, match="with"):
        asyncio.run(main())


# ---- async ----


def test_async_run_submit_process_and_metrics():
    async def main():
        async with AsyncDouble(workers=8) as agent:
            results = await agent.run(range(500))
            future = agent.submit(21)
            assert isinstance(future, asyncio.Future)
            assert await future == 42
            assert await agent.process(5) == 10
            with pytest.raises(ValueError):
                await agent.run([1, "boom"])
            mixed = await agent.run([1, "boom"], return_exceptions=True)
            bad = agent.submit("boom")
            with pytest.raises(ValueError):
                await bad
        return agent, results, mixed

    agent, results, mixed = asyncio.run(main())
    assert results == [x * 2 for x in range(500)]
    assert mixed[0] == 2 and isinstance(mixed[1], ValueError)
    m = agent.metrics()
    assert (m.tasks_completed, m.tasks_failed) == (504, 3)
    assert agent.state == "stopped"


def test_async_agent_runs_concurrently_and_counts_mock_tokens():
    llm = MockLLM(responses=["abcdefgh"], latency=0.05)

    class Caller(Agent):
        async def handle(self, task):
            return await llm.acomplete("abcd")

    async def main():
        async with Caller(workers=50) as agent:
            start = time.perf_counter()
            await agent.run(range(100))
            return agent, time.perf_counter() - start

    agent, elapsed = asyncio.run(main())
    assert elapsed < 0.5  # 100 x 50 ms on 50 workers: about 0.1 s
    m = agent.metrics()
    assert (m.tokens_in, m.tokens_out) == (100, 200)


def test_async_stop_drain_and_no_drain():
    class Sleepy(Agent):
        async def handle(self, task):
            await asyncio.sleep(0.001)
            return task.payload

    async def main():
        agent = Sleepy(workers=2)
        agent.start()
        futures = [agent.submit(i) for i in range(50)]
        await agent.stop(drain=True)
        drained = [f.result() for f in futures]
        agent2 = Sleepy(workers=1)
        agent2.start()
        futures2 = [agent2.submit(i) for i in range(50)]
        await asyncio.sleep(0.005)
        await agent2.stop(drain=False)
        return drained, futures2

    drained, futures2 = asyncio.run(main())
    assert drained == list(range(50))
    assert sum(f.cancelled() for f in futures2) > 25
    assert all(f.done() for f in futures2)


def test_async_agent_refuses_plain_with():
    with pytest.raises(TypeError, match="async with"):
        with AsyncDouble():
            pass


# ---- async agents across event loops ----


@pytest.fixture
def loop_complaints(monkeypatch):
    """What asyncio and the interpreter would print about tasks and coroutines left on a loop."""
    import gc
    import logging
    import sys
    import warnings

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Catch()
    logging.getLogger("asyncio").addHandler(handler)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(f"unraisable: {u.exc_value!r} in {u.object!r}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
        gc.collect()
        gc.collect()
    logging.getLogger("asyncio").removeHandler(handler)
    seen.extend(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))


def test_async_agent_moves_to_a_new_event_loop_with_asyncio_run(loop_complaints):
    agent = AsyncDouble(workers=4)
    assert asyncio.run(agent.run([1, 2])) == [2, 4]
    assert asyncio.run(asyncio.wait_for(agent.run([3]), 5)) == [6]  # new loop: workers restarted there

    async def submit_on_a_third_loop():
        return await asyncio.wait_for(agent.submit(5), 5)

    assert asyncio.run(submit_on_a_third_loop()) == 10
    m = agent.metrics()
    assert (m.tasks_completed, m.tasks_failed) == (4, 0)  # metrics of every loop kept
    assert agent.state == "running"

    async def stop_on_a_fourth_loop():
        await agent.stop()

    asyncio.run(stop_on_a_fourth_loop())
    assert agent.state == "stopped"
    del agent
    assert loop_complaints == []


def test_async_agent_survives_two_measure_calls(loop_complaints):
    """measure() runs an async function on a loop of its own, closed at the end (whether or not it
    cancels the tasks left on it first)."""
    from pyagentbench import measure

    agent = AsyncDouble(workers=4)
    measure(agent.run, (["x"],), rounds=3, loops=1)
    measure(agent.run, (["x"],), rounds=3, loops=1)
    assert agent.metrics().tasks_completed >= 6
    del agent
    assert loop_complaints == []


def test_async_agent_restarts_workers_cancelled_with_their_loop(loop_complaints):
    agent = AsyncDouble(workers=3)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(agent.run([1])) == [2]
        workers = list(agent._tasks)
        for task in workers:  # what asyncio.run does with the tasks left when it closes a loop
            task.cancel()
        loop.run_until_complete(asyncio.gather(*workers, return_exceptions=True))
        assert loop.run_until_complete(asyncio.wait_for(agent.run([2, 3]), 5)) == [4, 6]  # same loop, new workers
    finally:
        loop.close()
    assert asyncio.run(asyncio.wait_for(agent.run([4]), 5)) == [8]
    assert agent.metrics().tasks_completed == 4
    del agent, workers
    assert loop_complaints == []


def test_async_agent_bounded_queue_and_many_workers_still_stop():
    async def main():
        async with AsyncDouble(workers=8, maxsize=2) as agent:
            return await agent.run(range(50))

    assert asyncio.run(main()) == [x * 2 for x in range(50)]


def test_the_documented_ways_to_call_the_mocks_work():
    """docs/agents.md, 'How to call them': every form in the table."""
    from pathlib import Path

    from pyagentbench.mocks import MockTool

    doc = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    for form in ("llm.complete(prompt)", "await llm.acomplete(prompt)", "llm.stream(prompt)",
                 "llm.astream(prompt)", "tool(q)", "await tool.acall(q)", "AgentPool", "reap()"):
        assert form in doc
    llm = MockLLM(responses=["abcdefgh"], stream_chunk_tokens=1)
    tool = MockTool("search", result=lambda q: [q])
    assert llm.complete("p") == "abcdefgh"
    assert "".join(llm.stream("p")) == "abcdefgh"
    assert tool("q") == ["q"]

    async def main():
        chunks = [c async for c in llm.astream("p")]
        return await llm.acomplete("p"), chunks, await tool.acall("r")

    text, chunks, found = asyncio.run(main())
    assert (text, "".join(chunks), found) == ("abcdefgh", "abcdefgh", ["r"])
    assert len(chunks) == 2  # 2 tokens of 4 characters, one per chunk
    assert (llm.call_count, tool.call_count) == (4, 2)
    assert not hasattr(tool, "call") and not hasattr(tool, "run")


def test_metrics_throughput_counts_successes_only():
    class HalfFailing(Agent):
        def handle(self, task):
            if task.payload % 2:
                raise ValueError("odd")
            return task.payload

    agent = HalfFailing(workers=2)
    agent.run(range(200), return_exceptions=True)
    m = agent.metrics()
    assert m.tasks_completed == 100 and m.tasks_failed == 100
    assert m.attempted_throughput == pytest.approx(2 * m.throughput)
    agent.stop()


# ---- the agent's own memory ----

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="procfs")


def _statm_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class AsyncEcho(Agent):
    async def handle(self, task):
        return task.payload


class Spread(Agent):
    """An async handler whose latency (and so queue waits) spreads over two decades: payload % 40
    trips round the event loop."""

    async def handle(self, task):
        for _ in range(task.payload % 40):
            await asyncio.sleep(0)
        return task.payload


@linux_only
@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_an_async_agent_used_from_many_event_loops_does_not_grow():
    """Each new loop starts 64 new workers. They used to bring 64 new counters with two native
    histograms each: 0.55 to 17 MiB a loop, by the allocator's state (measured in this test
    before: 5.1 GiB over 300 loops); now the workers reuse their predecessors' counters and the
    agent's one pair of histograms. Bound: 2 MiB, the two histograms' whole 528 KiB plus room for
    the allocator and the event loops' own churn."""
    agent = AsyncEcho()
    for _ in range(20):
        asyncio.run(agent.run([1, 2, 3, 4]))
    gc.collect()
    pyagentbench_resources.trim_heap()
    before = _statm_rss()
    for _ in range(300):
        asyncio.run(agent.run([1, 2, 3, 4]))
    gc.collect()
    pyagentbench_resources.trim_heap()
    assert _statm_rss() - before < 2 * MiB
    assert agent.metrics().tasks_completed == 320 * 4


@linux_only
@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_many_async_runs_keep_the_agents_memory_flat():
    """2,000 run() calls of 16 tasks whose latencies spread over two decades, on one loop, from a
    fresh agent. Each of 64 workers' own pair of histograms used to be touched page by page as
    new values landed, or memset whole (measured before: 16 MiB of growth). Now one pair: at most
    2 x 264 KiB however many workers and runs. Bound: 1.5 MiB (that, the 64 workers' ~100 KiB of
    tasks and frames, and slack for the allocator)."""

    async def main():
        agent = Spread()
        payloads = list(range(16))
        for _ in range(5):  # the loop's own warm-up, not the agent's
            await asyncio.sleep(0)
        gc.collect()
        pyagentbench_resources.trim_heap()
        before = _statm_rss()
        for i in range(2000):
            await agent.run([p + i for p in payloads])
        gc.collect()
        pyagentbench_resources.trim_heap()
        growth = _statm_rss() - before
        m = agent.metrics()
        await agent.stop()
        return growth, m

    growth, m = asyncio.run(main())
    assert m.tasks_completed == 32_000
    assert growth < 1.5 * MiB


@linux_only
def test_a_fresh_async_agent_with_64_workers_is_small():
    """RSS per agent, 20 agents each having run 64 tasks, after a freed 1 MiB block raised glibc's
    mmap threshold (as any benchmark may), so the histograms' 264 KiB callocs come from the heap
    and are zeroed, every page touched: the worst case. Measured: ~350 KiB (~125 KiB without the
    raised threshold); before, two histograms per worker: 17.4 MiB (654 KiB). Bound: 768 KiB, the
    agent's two histograms whole (528 KiB), its 64 worker tasks (~1.5 KiB each) and slack."""
    block = b"x" * MiB
    del block

    async def main():
        warm = AsyncEcho()
        await warm.run(list(range(64)))
        await warm.stop()
        gc.collect()
        before = _statm_rss()
        agents = [AsyncEcho() for _ in range(20)]
        for agent in agents:
            await agent.run(list(range(64)))
        gc.collect()
        per_agent = (_statm_rss() - before) / len(agents)
        assert all(agent.workers == 64 for agent in agents)
        for agent in agents:
            await agent.stop()
        return per_agent

    assert asyncio.run(main()) < 768 * 1024


def test_workers_share_the_agents_histograms_and_keep_their_counters_across_restarts():
    agent = Echo(workers=3)
    agent.run(range(30))
    agent.stop()
    agent.start()
    agent.run(range(30))
    agent.stop()
    m = agent.metrics()
    assert m.tasks_completed == 60 and m.latency.count == 60 and m.queue_wait.count == 60
    # metrics() is a snapshot: later tasks do not change it.
    agent.start()
    agent.run(range(5))
    agent.stop()
    assert m.latency.count == 60 and agent.metrics().latency.count == 65
