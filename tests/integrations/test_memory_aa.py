"""Memory gates in a MockLLM-driven suite: an A/A run passes, and a test's own peak does not depend
on what earlier tests left resident or on which tests ran."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

AGENT_SUITE = """
import asyncio
import os

from pyagentbench import Agent
from pyagentbench.mocks import MockLLM, MockTool

llm = MockLLM(latency=0.0002, seed=7)
search = MockTool("search", result="three hits", latency=0.0001, seed=7)


def answer(question):
    hits = search(query=question)
    return llm.complete(f"answer {question} with {hits}")


class Support(Agent):
    def handle(self, task):
        return answer(task)


def test_big_buffer_first():
    # a test that leaves freed memory behind in glibc's heap, as a real suite's fixtures do
    blocks = [b"x" * 1024 for _ in range(30_000)]
    del blocks


def test_answer(agent_benchmark):
    assert agent_benchmark(answer, "refund policy")


def test_answer_async(agent_benchmark):
    async def ask(question):
        return await llm.acomplete(question)

    assert agent_benchmark(ask, "refund policy")


def test_agent_load(agent_benchmark):
    agent = Support(workers=4)
    result = agent_benchmark.throughput(agent, [f"q{i}" for i in range(400)], concurrency=4)
    agent.stop()
    assert result.failed == 0
"""

GATES = "--agentbench-compare-fail=peak_rss:20%,rss_delta:50%,allocs_per_call:10%"


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-only",
                                         "--benchmark-max-time=0.05", *args)


def own_peaks(path) -> dict[str, int]:
    data = json.loads(path.read_text())
    return {b["name"]: b["extra_info"]["agentbench"]["peak_rss_bytes"] for b in data["benchmarks"]}


def test_a_mockllm_suite_passes_its_memory_gates_a_a(pytester):
    pytester.makepyfile(test_support=AGENT_SUITE)
    run(pytester, "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    for _ in range(2):
        result = run(pytester, "--benchmark-compare", GATES)
        result.assert_outcomes(passed=3, skipped=1)
        assert result.ret == 0, result.stdout.str()
        assert "regressions against the baseline" not in result.stdout.str()


@pytest.mark.no_sanitizer(reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_own_peak_does_not_depend_on_earlier_tests_or_on_k(pytester):
    pytester.makepyfile(test_support=AGENT_SUITE)
    # baseline: the benchmarks alone (-k), without the 30 MB test before them
    run(pytester, "-k", "not big", "--benchmark-autosave").assert_outcomes(passed=3)
    # now the whole suite, big buffer first, and gated against the -k baseline
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-max-time=0.05",
                                           "--benchmark-compare", GATES, "--benchmark-json=all.json")
    result.assert_outcomes(passed=4)
    assert result.ret == 0, result.stdout.str()
    peaks = own_peaks(pytester.path / "all.json")
    # the benchmarks' own peaks are far below the 30 MB the first test made resident
    assert all(peak < 8 << 20 for peak in peaks.values()), peaks
