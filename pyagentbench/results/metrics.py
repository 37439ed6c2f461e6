"""The per-benchmark metrics pyagentbench stores beside pytest-benchmark's statistics.

A benchmark's metrics live in its JSON entry under ``extra_info["agentbench"]``, a flat dict whose
keys carry their unit. This module names those keys once, for the plugin that writes them and for
the SLO budgets, regression gates and reports that read them. Each metric knows which way is worse
(``higher_is_better``) and, for memory, the absolute floor below which a change is noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .units import format_bytes, format_count, format_duration, format_rate

__all__ = [
    "EXTRA_INFO_KEY",
    "Metric",
    "METRICS",
    "metric",
    "metric_value",
    "metric_key",
    "number_problem",
    "PEAK_RSS_FLOOR_BYTES",
    "PROCESS_PEAK_RSS_FLOOR_BYTES",
    "RSS_DELTA_FLOOR_BYTES",
    "BYTES_PER_CALL_FLOOR_BYTES",
]

#: Key of our metrics inside a benchmark's ``extra_info``.
EXTRA_INFO_KEY = "agentbench"

# Default absolute floors of the memory gates: a change smaller than this is not a regression,
# whatever its percentage (a test whose own peak moves from 4 KiB to 8 KiB is +100% of nothing).
# Each is set above the widest spread that four A/A runs of the project's own benchmark suite
# (42 benchmarks, `pytest benchmarks --benchmark-only`, same code, back to back) showed for it.

#: The test's own peak RSS: page-granular, moved by allocator arenas and interpreter caches.
#: A/A spread: at most 660 KiB (a 400-task threaded load; 2.6-7.6 MiB own peaks).
PEAK_RSS_FLOOR_BYTES = 1 << 20
#: The whole process's peak RSS. A/A spread: at most 6.3 MiB (of ~68 MiB).
PROCESS_PEAK_RSS_FLOOR_BYTES = 8 << 20
#: RSS at the end of the rounds minus at their start. A/A spread: at most 1.2 MiB.
RSS_DELTA_FLOOR_BYTES = 2 << 20
#: Bytes allocated per call: exact counts, but an async target's event-loop bookkeeping and a
#: dict resize or a cache fill can land in the pass. A/A spread: at most 4.05 KiB (of 31-35 KiB).
BYTES_PER_CALL_FLOOR_BYTES = 8 << 10


def _percent(value: float) -> str:
    return f"{value:.1f} %"


def _ratio(value: float) -> str:
    return f"{value * 100:.3g} %"


@dataclass(frozen=True)
class Metric:
    """A metric users can gate or budget on.

    ``keys`` are the record keys holding it, the first present wins (a load run's latency
    percentile before the timing loop's). ``higher_is_better`` tells which way is a regression.
    ``floor`` is the default absolute floor of a gate on it (0: none), in the metric's unit.
    ``deterministic`` metrics (callgrind's instruction counts) repeat exactly on the same code, so
    a change needs no significance test: any change beyond the gate's percentage is real.
    """

    name: str
    keys: tuple[str, ...]
    kind: str  # "duration" (s), "size" (bytes), "count", "rate" (per s), "ratio" (0-1), "percent"
    higher_is_better: bool = False
    floor: float = 0.0
    deterministic: bool = False

    @property
    def worse(self) -> str:
        """Which way is a regression, in words: ``"fall"`` or ``"growth"``."""
        return "fall" if self.higher_is_better else "growth"

    def format(self, value: float) -> str:
        """*value* in the metric's unit, for people."""
        return _FORMATTERS[self.kind](value)


_FORMATTERS: dict[str, Callable[[float], str]] = {
    "duration": format_duration,
    "size": format_bytes,
    "count": format_count,
    "rate": lambda v: format_rate(v, "tasks"),
    "ratio": _ratio,
    "percent": _percent,
}

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("peak_rss", ("peak_rss_bytes",), "size", floor=PEAK_RSS_FLOOR_BYTES),
        Metric("process_peak_rss", ("process_peak_rss_bytes",), "size",
               floor=PROCESS_PEAK_RSS_FLOOR_BYTES),
        Metric("rss_delta", ("rss_delta_bytes",), "size", floor=RSS_DELTA_FLOOR_BYTES),
        Metric("cpu_percent", ("cpu_percent",), "percent"),
        Metric("allocs_per_call", ("allocs_per_call",), "count"),
        Metric("bytes_per_call", ("bytes_per_call",), "size", floor=BYTES_PER_CALL_FLOOR_BYTES),
        Metric("throughput", ("throughput_per_s",), "rate", higher_is_better=True),
        Metric("error_rate", ("error_rate",), "ratio"),
        Metric("mean", ("latency_mean_s", "mean_s"), "duration"),
        Metric("p50", ("latency_p50_s", "median_s"), "duration"),
        Metric("p95", ("latency_p95_s", "p95_s"), "duration"),
        Metric("p99", ("latency_p99_s", "p99_s"), "duration"),
        Metric("max", ("latency_max_s", "max_s"), "duration"),
        Metric("ttft", ("ttft_s",), "duration"),
        Metric("inter_item", ("inter_item_s",), "duration"),
        Metric("instructions", ("instructions_per_call",), "count", deterministic=True),
        Metric("est_cycles", ("est_cycles_per_call",), "count", deterministic=True),
    )
}


def metric(name: str) -> Metric:
    """The metric called *name*; ValueError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def number_problem(value: Any) -> str | None:
    """Why *value* is not a usable metric value (a finite real number), or None if it is.

    JSON gives strings, lists, objects, booleans, NaN, Infinity and integers too large for a
    float; each gets a phrase a user can act on.
    """
    if isinstance(value, bool):
        return f"is {str(value).lower()}, not a number"
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return f"is a {len(str(abs(value)))}-digit integer, too large for a float"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value!r}, not a finite number"
    kinds = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"is {kinds.get(type(value), type(value).__name__)} ({shown}), not a number"


def metric_value(record: Mapping[str, Any], m: Metric) -> float | None:
    """The metric's value in *record* (an ``extra_info["agentbench"]`` dict), or None if absent.

    ValueError naming the key when the value is not a finite number.
    """
    key = metric_key(record, m)
    if key is None:
        return None
    value = record[key]
    problem = number_problem(value)
    if problem is not None:
        raise ValueError(f"{key} {problem}")
    return float(value)


def metric_key(record: Mapping[str, Any], m: Metric) -> str | None:
    """The first of the metric's keys that *record* holds (not null), or None."""
    for key in m.keys:
        if record.get(key) is not None:
            return key
    return None
