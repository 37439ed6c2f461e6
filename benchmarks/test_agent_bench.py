"""The agent layer: per-task overhead of Agent.run() and of a cache hit, and concurrency with mocks.

Each comparison reports time per task, ours beside the anchor a Python developer would write:

* Agent.run() with a trivial sync handler vs concurrent.futures.ThreadPoolExecutor.map on the same
  number of threads. Absolute target: >= 200,000 tasks/s, i.e. <= 5 us per task.
* Agent.process() on a cache hit vs the same handler behind functools.lru_cache (a bare dict
  lookup, no metrics). Absolute target: <= 2 us per task.
* An async agent calling MockLLM (50 ms) at concurrency 100 vs the ideal: 100 bare asyncio.sleep(0.05)
  at a time. Target: within 10% of the ideal's 2,000 tasks/s (time ratio <= 1.11).
* BatchExecutor, 1,000 tasks of 10 ms mock latency on 10 workers vs a serial loop. The serial
  baseline is measured on 30 tasks (0.3 s, rather than 10 s for all 1,000) and both are reported per
  task. Target: >= 9x.

Figures per task are put into pytest-benchmark's statistics with the same helper as the timing
loop's benchmark (one value per round: round time / tasks in the round).
"""

import asyncio
import concurrent.futures
import functools
import time

import pytest

import pyagentbench

if not all(hasattr(pyagentbench, n) for n in ("TaskQueue", "Histogram", "Cache")):
    pytest.skip("the native runtime (TaskQueue, Histogram, Cache) is not built in", allow_module_level=True)

from pyagentbench import Agent, BatchExecutor
from pyagentbench.mocks import MockLLM, MockTool

RUN_TASKS = 100_000
RUN_WORKERS = 4


def per_task(benchmark, seconds_per_task, label):
    """Put per-task times (one per round) into this test's pytest-benchmark statistics."""
    stats = benchmark._make_stats(1)
    for value in seconds_per_task:
        stats.update(value)
    benchmark._mode = label
    median = sorted(seconds_per_task)[len(seconds_per_task) // 2]
    benchmark.extra_info["tasks_per_s"] = round(1 / median)


def timed_rounds(fn, tasks, rounds):
    fn()  # warm-up
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) / tasks)
    return out


class Trivial(Agent):
    def handle(self, task):
        return task.payload


def trivial(payload):
    return payload


# ---- Agent.run(), trivial handler ----

GROUP_RUN = "agent: run() trivial sync handler, per task"


@pytest.mark.benchmark(group=GROUP_RUN)
def test_threadpool_map_trivial(benchmark):
    benchmark.extra_info["anchor"] = True
    data = list(range(RUN_TASKS // 10))
    with concurrent.futures.ThreadPoolExecutor(RUN_WORKERS) as pool:
        per_task(benchmark, timed_rounds(lambda: list(pool.map(trivial, data)), len(data), 5), "ThreadPoolExecutor.map")


@pytest.mark.benchmark(group=GROUP_RUN)
def test_agent_run_trivial(benchmark):
    benchmark.extra_info["target"] = ">= 3x"
    benchmark.extra_info["absolute_target"] = ">= 200000 tasks/s"
    data = list(range(RUN_TASKS))
    with Trivial(workers=RUN_WORKERS) as agent:
        per_task(benchmark, timed_rounds(lambda: agent.run(data), len(data), 7), "Agent.run")


# ---- cache hit ----

GROUP_CACHE = "agent: cache hit, per task"


@pytest.mark.benchmark(group=GROUP_CACHE)
def test_lru_cache_hit(benchmark):
    benchmark.extra_info["anchor"] = True
    cached = functools.lru_cache(maxsize=1024)(trivial)
    cached("question")
    benchmark(cached, "question")


@pytest.mark.benchmark(group=GROUP_CACHE)
def test_agent_cache_hit(benchmark):
    benchmark.extra_info["absolute_target"] = "<= 2 us"
    agent = Trivial(cache=pyagentbench.Cache(maxsize=1024))
    agent.process("question")
    benchmark(agent.process, "question")
    assert agent.metrics().cache_hits > 0


# ---- async agent, MockLLM 50 ms, concurrency 100 ----

GROUP_ASYNC = "agent: async MockLLM 50 ms x concurrency 100, per task"
ASYNC_TASKS = 1000  # 10 waves of 100: about 0.5 s per round


class LLMAgent(Agent):
    def __init__(self, llm, **options):
        super().__init__(**options)
        self.llm = llm

    async def handle(self, task):
        return await self.llm.acomplete(task.payload)


@pytest.mark.benchmark(group=GROUP_ASYNC)
def test_ideal_asyncio_sleep_50ms(benchmark):
    benchmark.extra_info["anchor"] = True

    async def main():
        sem = asyncio.Semaphore(100)

        async def one():
            async with sem:
                await asyncio.sleep(0.05)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(ASYNC_TASKS)))
        return (time.perf_counter() - start) / ASYNC_TASKS

    per_task(benchmark, [asyncio.run(main()) for _ in range(2)], "asyncio.sleep ideal")


@pytest.mark.benchmark(group=GROUP_ASYNC)
def test_async_agent_mock_llm(benchmark):
    benchmark.extra_info["target"] = "<= 1.11x"
    prompts = [f"prompt {i}" for i in range(ASYNC_TASKS)]

    async def main():
        agent = LLMAgent(MockLLM(latency=0.05), workers=100)
        async with agent:
            await agent.run(prompts[:100])
            start = time.perf_counter()
            await agent.run(prompts)
            return (time.perf_counter() - start) / ASYNC_TASKS

    per_task(benchmark, [asyncio.run(main()) for _ in range(2)], "Agent (async) + MockLLM")


# ---- BatchExecutor, 1,000 x 10 ms, 10 workers ----

GROUP_BATCH = "agent: BatchExecutor 10 ms tasks x 10 workers, per task"
SERIAL_SAMPLE = 30


@pytest.mark.benchmark(group=GROUP_BATCH)
def test_serial_loop_10ms(benchmark):
    benchmark.extra_info["anchor"] = True
    tool = MockTool("tool", latency=0.01)
    per_task(benchmark, timed_rounds(lambda: [tool(i) for i in range(SERIAL_SAMPLE)], SERIAL_SAMPLE, 2), "serial loop")


@pytest.mark.benchmark(group=GROUP_BATCH)
def test_batch_executor_10ms(benchmark):
    benchmark.extra_info["target"] = ">= 9x"
    tool = MockTool("tool", latency=0.01)
    executor = BatchExecutor(tool, max_concurrency=10)
    per_task(benchmark, timed_rounds(lambda: executor.execute(range(1000)), 1000, 2), "BatchExecutor")
