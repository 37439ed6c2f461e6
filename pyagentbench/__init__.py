"""pyagentbench: benchmark Python AI agents inside pytest.

Native clocks and a native timing loop; resource metrics; an agent runtime (task queue, cache,
histogram); a pytest plugin on top of pytest-benchmark. Everything public is re-exported here.
"""

from ._native import (
    clock_info,
    cycles,
    cycles_to_ns,
    now,
    now_ns,
    process_cpu_ns,
    thread_cpu_ns,
)
from .timers import Measurement, Timer, measure
from .resources import (
    AllocCounter,
    ResourceSummary,
    Sampler,
    SampleSeries,
    count_allocs,
    peak_rss,
    reset_peak_rss,
    rss,
    sampler_info,
)
# runtime data structures
from .cache import Cache, cache_key, cached
from .histogram import Histogram
from .taskqueue import QueueClosed, TaskQueue
# agent layer (mocks live in pyagentbench.mocks)
from .agent import Agent, AgentMetrics, Task
from .batch import BatchExecutor, BatchResult
from .breaker import CircuitBreaker, CircuitOpenError
from .load import LoadResult, arun_load, run_load
from .pool import AgentPool

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext pyagentbench``: register the ``%abench`` / ``%%abench`` magics."""
    from .ipython import load_ipython_extension as load

    load(ipython)


__all__ = [
    "__version__",
    # clocks and timing
    "now_ns",
    "now",
    "thread_cpu_ns",
    "process_cpu_ns",
    "cycles",
    "cycles_to_ns",
    "clock_info",
    "Timer",
    "measure",
    "Measurement",
    # resource metrics
    "Sampler",
    "ResourceSummary",
    "SampleSeries",
    "sampler_info",
    "rss",
    "peak_rss",
    "reset_peak_rss",
    "AllocCounter",
    "count_allocs",
    # runtime data structures
    "Histogram",
    "TaskQueue",
    "QueueClosed",
    "Cache",
    "cached",
    "cache_key",
    # agent layer
    "Task",
    "Agent",
    "AgentMetrics",
    "AgentPool",
    "BatchExecutor",
    "BatchResult",
    "CircuitBreaker",
    "CircuitOpenError",
    "run_load",
    "arun_load",
    "LoadResult",
]
