"""The per-benchmark metrics pyagentbench stores beside pytest-benchmark's statistics.

A benchmark's metrics live in its JSON entry under ``extra_info["agentbench"]``, a flat dict whose
keys carry their unit. This module names those keys once, for the plugin that writes them and for
the SLO budgets, regression gates and reports that read them. Each metric knows which way is worse
(``higher_is_better``) and, for memory, the absolute floor below which a change is noise.
"""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from .units import format_bytes, format_count, format_duration, format_rate

__all__ = [
    "EXTRA_INFO_KEY",
    "Metric",
    "METRICS",
    "metric",
    "metric_value",
    "metric_key",
    "resolve_metric",
    "custom_metric",
    "custom_metric_kind",
    "CUSTOM_KEY_PREFIX",
    "CUSTOM_INFO_KEY",
    "number_problem",
    "short_repr",
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
    kind: str  # "duration" (s), "size" (bytes), "count", "rate" (per s), "ratio" (0-1), "percent", "cost"
    higher_is_better: bool = False
    floor: float = 0.0
    #: Title of its column in the summary table.
    header: str = ""
    #: When the summary table shows it unasked: "present" (a test recorded it), "" (only when
    #: --agentbench-columns names it). The columns the table always showed stay in the plugin.
    column: str = ""
    #: A label after a count ("tokens"), or the unit a custom metric was recorded in.
    unit: str = ""
    #: A metric a test recorded with agent_benchmark.metric(); its direction and unit are in the
    #: record (:func:`resolve_metric`).
    custom: bool = False
    deterministic: bool = False

    @property
    def worse(self) -> str:
        """Which way is a regression, in words: ``"fall"`` or ``"growth"``."""
        return "fall" if self.higher_is_better else "growth"

    def format(self, value: float, label: bool = True) -> str:
        """*value* in the metric's unit, for people (``label=False``: without a count's label,
        for a table whose header names it)."""
        text = _FORMATTERS[self.kind](value)
        return f"{text} {self.unit}" if label and self.unit and self.kind == "count" else text


_FORMATTERS: dict[str, Callable[[float], str]] = {
    "duration": format_duration,
    "size": format_bytes,
    "count": format_count,
    "rate": lambda v: format_rate(v, "tasks"),
    "ratio": _ratio,
    "percent": _percent,
    "cost": lambda v: f"{v:.4g}",
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
        # usage of LLMs and tools, per counted call of the benchmarked function (mean; *_max: max)
        Metric("llm_calls_per_call", ("llm_calls_per_call",), "count", header="LLM calls",
               column="present"),
        Metric("llm_calls_per_call_max", ("llm_calls_per_call_max",), "count"),
        Metric("tool_calls_per_call", ("tool_calls_per_call",), "count", header="tool calls",
               column="present"),
        Metric("tool_calls_per_call_max", ("tool_calls_per_call_max",), "count"),
        Metric("tokens_per_call", ("tokens_per_call",), "count", unit="tokens", header="tokens/call",
               column="present"),
        Metric("tokens_per_call_max", ("tokens_per_call_max",), "count", unit="tokens"),
        Metric("tokens_in_per_call", ("tokens_in_per_call",), "count", unit="tokens", header="tokens in"),
        Metric("tokens_in_per_call_max", ("tokens_in_per_call_max",), "count", unit="tokens"),
        Metric("tokens_out_per_call", ("tokens_out_per_call",), "count", unit="tokens", header="tokens out"),
        Metric("tokens_out_per_call_max", ("tokens_out_per_call_max",), "count", unit="tokens"),
        Metric("tokens_saved_per_call", ("tokens_saved_per_call",), "count", unit="tokens", higher_is_better=True,
               header="tokens saved"),
        Metric("cost_per_call", ("cost_per_call",), "cost", header="cost/call", column="present"),
        Metric("cost_per_call_max", ("cost_per_call_max",), "cost"),
        # where the time of a counted call goes
        Metric("wall_per_call", ("wall_per_call_s",), "duration", header="wall/call"),
        Metric("cpu_per_call", ("cpu_per_call_s",), "duration", header="CPU/call"),
        Metric("wait_per_call", ("wait_per_call_s",), "duration", header="wait/call"),
        # the cyclic garbage collector over the test's timed runs
        Metric("gc_collections", ("gc_collections",), "count", header="GC runs"),
        Metric("gc_pause", ("gc_pause_s",), "duration", header="GC pause"),
        Metric("gc_pause_max", ("gc_pause_max_s",), "duration"),
        Metric("instructions", ("instructions_per_call",), "count", deterministic=True),
        Metric("est_cycles", ("est_cycles_per_call",), "count", deterministic=True),
    )
}

#: Prefix of a custom metric's record keys: ``metric.hit_rate`` holds its mean (or its value when
#: recorded once per test), ``metric.hit_rate.p95`` and so on its statistics over calls.
CUSTOM_KEY_PREFIX = "metric."
#: Record key of the custom metrics' descriptions: name -> {"unit", "kind", "better", "per_call",
#: "calls"}.
CUSTOM_INFO_KEY = "metric_info"
_CUSTOM_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Units a custom metric may be recorded in, and the kind each makes it; other units label a count.
_UNIT_KINDS = {
    "s": "duration", "ms": "duration", "us": "duration", "µs": "duration", "ns": "duration",
    "B": "size", "KB": "size", "MB": "size", "GB": "size", "KiB": "size", "MiB": "size",
    "GiB": "size", "%": "percent", "ratio": "ratio",
}


def custom_metric_kind(unit: str | None) -> str:
    """The kind a custom metric recorded in *unit* has: durations and sizes are stored in seconds
    and bytes; ``"%"`` is a percentage, ``"ratio"`` a fraction; any other unit labels a count."""
    return _UNIT_KINDS.get(unit or "", "count")


def custom_metric(name: str, higher_is_better: bool = False, kind: str = "count",
                  unit: str = "") -> Metric:
    """The metric a test records as *name* with ``agent_benchmark.metric()``, named
    ``metric.<name>`` in gates; ValueError for a name that is not lowercase letters, digits and
    underscores, or that a built-in metric has."""
    if not isinstance(name, str) or not _CUSTOM_NAME.match(name):
        raise ValueError(f"a custom metric's name must be lowercase letters, digits and underscores, "
                         f"starting with a letter or underscore, e.g. 'hit_rate'; got {name!r}")
    if name in METRICS:
        raise ValueError(f"{name!r} is a built-in metric; give your own metric another name")
    label = unit if kind == "count" else ""
    return Metric(CUSTOM_KEY_PREFIX + name, (CUSTOM_KEY_PREFIX + name,), kind, higher_is_better,
                  header=name, column="present", unit=label or "", custom=True)


def resolve_metric(m: Metric, record: Mapping[str, Any]) -> Metric:
    """*m* with the direction, kind and unit *record* gives it (a custom metric's, as the test
    recorded it); a built-in metric as it is."""
    if not m.custom:
        return m
    infos = record.get(CUSTOM_INFO_KEY)
    info = infos.get(m.header) if isinstance(infos, Mapping) else None
    if not isinstance(info, Mapping):
        return m
    kind = info.get("kind") if info.get("kind") in _FORMATTERS else m.kind
    unit = info.get("unit") if isinstance(info.get("unit"), str) and kind == "count" else ""
    return replace(m, higher_is_better=info.get("better") == "higher", kind=kind, unit=unit)


def metric(name: str) -> Metric:
    """The metric called *name*: a built-in one, or ``metric.<name>`` for a custom metric a test
    records with ``agent_benchmark.metric(name, ...)`` (its direction and unit come from the
    record, see :func:`resolve_metric`). ValueError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        pass
    if isinstance(name, str) and name.startswith(CUSTOM_KEY_PREFIX):
        return custom_metric(name[len(CUSTOM_KEY_PREFIX):])
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}, or metric.NAME for "
                     "a metric of your own (agent_benchmark.metric)") from None


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
            return f"is a {_digits(value)}-digit integer, too large for a float"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value!r}, not a finite number"
    kinds = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    shown = short_repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"is {kinds.get(type(value), type(value).__name__)} ({shown}), not a number"


def _digits(value: int) -> int:
    """How many decimal digits abs(value) has, without str() (refused past 4300 digits)."""
    value = abs(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return digits - 1 if digits > 1 and value < 10 ** (digits - 1) else digits


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80


def short_repr(value: Any) -> str:
    """repr() of a value read from a file, for a message: bounded in length and in depth, so a
    50 MB string or a list nested 100000 deep gives a short line, not a huge one or a
    RecursionError."""
    try:
        return _SHORT_REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an int too long for str() inside a list
        return f"<{type(value).__name__}>"


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
