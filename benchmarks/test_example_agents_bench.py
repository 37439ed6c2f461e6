"""Showcase: three example agents (see example_agents.py) through agent_benchmark.

Each test lands in pytest-benchmark's table and in the agentbench table after it: peak RSS, RSS
delta, CPU %, allocations per call, throughput and p99 latency.
"""

import pytest

from example_agents import PipelineAgent, RetrievalAgent, ToolCallingAgent
from pyagentbench import Task

QUESTIONS = [f"question {i}" for i in range(200)]


@pytest.mark.benchmark(group="example: tool-calling agent", max_time=0.5)
@pytest.mark.slo(p99="50ms")
def test_tool_agent_one_task(agent_benchmark):
    agent = ToolCallingAgent()
    answer = agent_benchmark(agent.process, Task("Oslo"))
    assert answer == "It is mild and dry."


@pytest.mark.benchmark(group="example: tool-calling agent")
@pytest.mark.slo(min_throughput=200, max_error_rate=0)
def test_tool_agent_load(agent_benchmark):
    agent = ToolCallingAgent(workers=8)
    result = agent_benchmark.throughput(agent, ["Oslo", "Lima", "Pune", "Oulu"] * 100, concurrency=8)
    assert result.failed == 0


@pytest.mark.benchmark(group="example: retrieval agent with a cache", max_time=0.5)
def test_retrieval_agent_cold(agent_benchmark):
    agent = RetrievalAgent(cache=None)
    assert agent_benchmark(agent.process, Task("refund policy")).startswith("mock response")


@pytest.mark.benchmark(group="example: retrieval agent with a cache", max_time=0.5)
@pytest.mark.slo(p99="50us")
def test_retrieval_agent_cached(agent_benchmark):
    agent = RetrievalAgent()
    agent.process(Task("refund policy"))  # fill the cache
    agent_benchmark(agent.process, Task("refund policy"))
    assert agent.metrics().cache_hits > 0


@pytest.mark.benchmark(group="example: multi-step pipeline", max_time=0.5)
def test_pipeline_one_task(agent_benchmark):
    agent = PipelineAgent()
    assert agent_benchmark(agent.process, Task("compare flight prices")) == "summary"


@pytest.mark.benchmark(group="example: multi-step pipeline")
def test_pipeline_load(agent_benchmark):
    agent = PipelineAgent()
    result = agent_benchmark.throughput(agent, QUESTIONS, concurrency=50)
    assert result.completed == len(QUESTIONS)
