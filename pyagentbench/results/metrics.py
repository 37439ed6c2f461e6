"""The per-benchmark metrics pyagentbench stores beside pytest-benchmark's statistics.

A benchmark's metrics live in its JSON entry under ``extra_info["agentbench"]``, a flat dict whose
keys carry their unit. This module names those keys once, for the plugin that writes them and for
the SLO budgets, regression gates and reports that read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .units import format_bytes, format_count, format_duration, format_rate

__all__ = ["EXTRA_INFO_KEY", "Metric", "METRICS", "metric", "metric_value"]

#: Key of our metrics inside a benchmark's ``extra_info``.
EXTRA_INFO_KEY = "agentbench"


def _percent(value: float) -> str:
    return f"{value:.1f} %"


def _ratio(value: float) -> str:
    return f"{value * 100:.3g} %"


@dataclass(frozen=True)
class Metric:
    """A metric users can gate or budget on.

    ``keys`` are the record keys holding it, the first present wins (a load run's latency
    percentile before the timing loop's). ``higher_is_better`` tells which way is a regression.
    """

    name: str
    keys: tuple[str, ...]
    kind: str  # "duration" (s), "size" (bytes), "count", "rate" (per s), "ratio" (0-1), "percent"
    higher_is_better: bool = False

    def format(self, value: float) -> str:
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
        Metric("peak_rss", ("peak_rss_bytes",), "size"),
        Metric("rss_delta", ("rss_delta_bytes",), "size"),
        Metric("cpu_percent", ("cpu_percent",), "percent"),
        Metric("allocs_per_call", ("allocs_per_call",), "count"),
        Metric("bytes_per_call", ("bytes_per_call",), "size"),
        Metric("throughput", ("throughput_per_s",), "rate", higher_is_better=True),
        Metric("error_rate", ("error_rate",), "ratio"),
        Metric("mean", ("latency_mean_s", "mean_s"), "duration"),
        Metric("p50", ("latency_p50_s", "median_s"), "duration"),
        Metric("p95", ("latency_p95_s", "p95_s"), "duration"),
        Metric("p99", ("latency_p99_s", "p99_s"), "duration"),
        Metric("max", ("latency_max_s", "max_s"), "duration"),
    )
}


def metric(name: str) -> Metric:
    """The metric called *name*; ValueError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def metric_value(record: Mapping[str, Any], m: Metric) -> float | None:
    """The metric's value in *record* (an ``extra_info["agentbench"]`` dict), or None if absent."""
    for key in m.keys:
        value = record.get(key)
        if value is not None:
            return float(value)
    return None
