"""pyagentbench: benchmark Python AI agents inside pytest.

Native clocks and a native timing loop; resource metrics; an agent runtime (task queue, cache,
histogram) and agent layer; a pytest plugin on top of pytest-benchmark. Everything public is
re-exported here.

The clocks load with the package; every other name loads its module on first use, so importing
the package (as pytest does for the plugin) stays cheap for suites that use little of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._native import (
    clock_info,
    cycles,
    cycles_to_ns,
    now,
    now_ns,
    process_cpu_ns,
    thread_cpu_ns,
)

__version__ = "0.1.0"

# public name -> the module (under pyagentbench) that defines it
_LAZY: dict[str, str] = {
    # clocks and timing
    "Timer": "instruments.timers",
    "measure": "instruments.timers",
    "Measurement": "instruments.timers",
    # resource metrics
    "Sampler": "instruments.resources",
    "ResourceSummary": "instruments.resources",
    "SampleSeries": "instruments.resources",
    "sampler_info": "instruments.resources",
    "rss": "instruments.resources",
    "peak_rss": "instruments.resources",
    "trim_heap": "instruments.resources",
    "HeapTrim": "instruments.resources",
    "reset_peak_rss": "instruments.resources",
    "AllocCounter": "instruments.resources",
    "count_allocs": "instruments.resources",
    # runtime data structures
    "Histogram": "runtime.histogram",
    "TaskQueue": "runtime.taskqueue",
    "QueueClosed": "runtime.taskqueue",
    "Cache": "runtime.cache",
    "cached": "runtime.cache",
    "cache_key": "runtime.cache",
    # agent layer (mocks live in pyagentbench.mocks)
    "Task": "agents.agent",
    "Agent": "agents.agent",
    "AgentMetrics": "agents.agent",
    "AgentPool": "agents.pool",
    "BatchExecutor": "agents.batch",
    "BatchResult": "agents.batch",
    "CircuitBreaker": "agents.breaker",
    "CircuitOpenError": "agents.breaker",
    "run_load": "agents.load",
    "arun_load": "agents.load",
    "LoadResult": "agents.load",
    "Failure": "agents.load",
    # usage of LLMs and tools
    "record_usage": "agents.usage",
    "record_tool_call": "agents.usage",
    "UsageWindow": "agents.usage",
    "instrument_openai": "agents.adapters",
    "record_openai_usage": "agents.adapters",
    "LangChainUsageHandler": "agents.adapters",
    "record_pydantic_ai_usage": "agents.adapters",
}

__all__ = [
    "__version__",
    "now_ns",
    "now",
    "thread_cpu_ns",
    "process_cpu_ns",
    "cycles",
    "cycles_to_ns",
    "clock_info",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pyagentbench``: register the ``%abench`` / ``%%abench`` magics."""
    from .integrations.ipython import load_ipython_extension as load

    load(ipython)


if TYPE_CHECKING:
    from .agents.agent import Agent, AgentMetrics, Task
    from .agents.batch import BatchExecutor, BatchResult
    from .agents.breaker import CircuitBreaker, CircuitOpenError
    from .agents.load import Failure, LoadResult, arun_load, run_load
    from .agents.pool import AgentPool
    from .agents.adapters import (
        LangChainUsageHandler,
        instrument_openai,
        record_openai_usage,
        record_pydantic_ai_usage,
    )
    from .agents.usage import UsageWindow, record_tool_call, record_usage
    from .instruments.resources import (
        AllocCounter,
        HeapTrim,
        ResourceSummary,
        Sampler,
        SampleSeries,
        count_allocs,
        peak_rss,
        reset_peak_rss,
        rss,
        sampler_info,
        trim_heap,
    )
    from .instruments.timers import Measurement, Timer, measure
    from .runtime.cache import Cache, cache_key, cached
    from .runtime.histogram import Histogram
    from .runtime.taskqueue import QueueClosed, TaskQueue
