"""Three example agents built on pyagentbench's agent base, with mocked LLM and tool dependencies.

They are what the showcase benchmarks in test_example_agents_bench.py measure, and a template for
benchmarking an agent of your own: keep the agent's logic real and mock only what is slow, costly
or non-deterministic (the LLM and remote tools), with seeded latency so runs repeat.
"""

from __future__ import annotations

import hashlib
import math
import re

from pyagentbench import Agent, BatchExecutor, Cache
from pyagentbench.mocks import Fixed, LogNormal, MockLLM, MockTool

# ---- a tool-calling agent ----

TOOL_CALL = re.compile(r"CALL (\w+) (.+)")


class ToolCallingAgent(Agent):
    """Asks the LLM which tool to use, calls it, then asks the LLM to answer with the tool's result."""

    def __init__(self, latency_scale: float = 1.0, **options):
        super().__init__(**options)
        self.llm = MockLLM(
            responses=lambda prompt: (
                f"CALL weather {prompt.split()[-1]}" if prompt.startswith("user:") else "It is mild and dry."
            ),
            latency=LogNormal(median=0.0008, sigma=0.3),
            seed=1,
            latency_scale=latency_scale,
        )
        self.tools = {
            "weather": MockTool("weather", result=lambda city: {"city": city, "temp_c": 14},
                                latency=Fixed(0.0005), seed=2, latency_scale=latency_scale),
        }

    def handle(self, task):
        decision = self.llm.complete(f"user: what is the weather in {task.payload}")
        match = TOOL_CALL.match(decision)
        if match is None:
            return decision
        name, argument = match.groups()
        observation = self.tools[name](argument)
        return self.llm.complete(f"tool {name} returned {observation}; answer the user")


# ---- a retrieval agent with a cache ----


def embed(text: str, dims: int = 64) -> list[float]:
    """A deterministic stand-in embedding: real CPU work, no model download."""
    digest = hashlib.sha256(text.encode()).digest() * (dims // 32 + 1)
    vector = [b / 255.0 - 0.5 for b in digest[:dims]]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class RetrievalAgent(Agent):
    """Embeds the query, scores a small in-memory corpus, and answers from the top passages.
    Answers are cached by query (the Agent's LRU+TTL Cache), so repeated questions are cheap."""

    def __init__(self, corpus_size: int = 500, latency_scale: float = 1.0, **options):
        options.setdefault("cache", Cache(maxsize=10_000, ttl=300))
        super().__init__(**options)
        self.passages = [f"passage {i} about topic {i % 37}" for i in range(corpus_size)]
        self.vectors = [embed(p) for p in self.passages]
        self.llm = MockLLM(latency=Fixed(0.001), seed=3, latency_scale=latency_scale)

    def handle(self, task):
        query = embed(task.payload)
        scored = sorted(
            ((sum(q * v for q, v in zip(query, vector)), i) for i, vector in enumerate(self.vectors)),
            reverse=True,
        )[:3]
        context = " | ".join(self.passages[i] for _, i in scored)
        return self.llm.complete(f"context: {context}\nquestion: {task.payload}")


# ---- a multi-step pipeline ----


class PipelineAgent(Agent):
    """Plan -> fan out to tools in parallel (a BatchExecutor) -> summarise. Async end to end."""

    def __init__(self, latency_scale: float = 1.0, **options):
        super().__init__(**options)
        self.llm = MockLLM(
            responses=lambda prompt: "search;fetch;rank" if prompt.startswith("plan") else "summary",
            latency=Fixed(0.002),
            seed=4,
            latency_scale=latency_scale,
        )
        self.tool = MockTool("step", result=lambda step, query: f"{step}({query})",
                             latency=LogNormal(median=0.001, sigma=0.4), seed=5,
                             latency_scale=latency_scale)
        self.fan_out = BatchExecutor(self._run_step, max_concurrency=4)

    async def _run_step(self, step_query):
        return await self.tool.acall(*step_query)

    async def handle(self, task):
        plan = await self.llm.acomplete(f"plan: {task.payload}")
        steps = [(step, task.payload) for step in plan.split(";")]
        results = await self.fan_out.aexecute(steps)
        return await self.llm.acomplete(f"summarise: {results.results}")
