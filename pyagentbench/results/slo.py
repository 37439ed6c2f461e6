"""SLO budgets: ``@pytest.mark.slo(p99="200ms", max_rss="50MB", min_throughput=1000, ...)``.

Each keyword names a budget on one metric. Durations take ns, us, µs, ms or s; sizes B, KB, MB,
GB (powers of 1000) or KiB, MiB, GiB; plain numbers are seconds, bytes or counts. Budgets are
absolute limits: unlike regression gates they have no floor, since nothing is compared.

Usage budgets (``max_tokens_per_call``, ``max_llm_calls_per_call``, ``max_cost_per_call``, ...)
bound the largest counted call, not the mean: every call must fit. ``metrics={"hit_rate": ">=0.9",
"retries": "<=2"}`` budgets custom metrics (their mean over the counted calls, or their value
when recorded once per test); the operator says which bound it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from .metrics import (
    Metric,
    custom_metric,
    custom_metric_kind,
    metric,
    metric_value,
    resolve_metric,
    short_repr,
)
from .units import parse_duration, parse_size

__all__ = ["Budget", "BUDGETS", "merge_markers", "parse_budgets", "check_budgets"]

# budget keyword -> (metric name, "max" or "min")
BUDGETS: dict[str, tuple[str, str]] = {
    "mean": ("mean", "max"),
    "p50": ("p50", "max"),
    "p95": ("p95", "max"),
    "p99": ("p99", "max"),
    "max_latency": ("max", "max"),
    "ttft": ("ttft", "max"),
    "inter_item": ("inter_item", "max"),
    "max_rss": ("peak_rss", "max"),
    "max_process_rss": ("process_peak_rss", "max"),
    "max_rss_delta": ("rss_delta", "max"),
    "max_allocs_per_call": ("allocs_per_call", "max"),
    "max_bytes_per_call": ("bytes_per_call", "max"),
    "max_cpu_percent": ("cpu_percent", "max"),
    "min_throughput": ("throughput", "min"),
    "max_error_rate": ("error_rate", "max"),
    # usage: the largest counted call
    "max_llm_calls_per_call": ("llm_calls_per_call_max", "max"),
    "max_tool_calls_per_call": ("tool_calls_per_call_max", "max"),
    "max_tokens_per_call": ("tokens_per_call_max", "max"),
    "max_tokens_in_per_call": ("tokens_in_per_call_max", "max"),
    "max_tokens_out_per_call": ("tokens_out_per_call_max", "max"),
    "max_cost_per_call": ("cost_per_call_max", "max"),
    # where the time goes (means over the counted calls) and the garbage collector (per test)
    "max_wall_per_call": ("wall_per_call", "max"),
    "max_cpu_per_call": ("cpu_per_call", "max"),
    "max_wait_per_call": ("wait_per_call", "max"),
    "max_gc_pause": ("gc_pause", "max"),
    "max_gc_pause_once": ("gc_pause_max", "max"),
    "max_gc_collections": ("gc_collections", "max"),
    "max_instructions_per_call": ("instructions", "max"),  # under --agentbench-instructions
}
#: The keyword of custom metric budgets: ``metrics={"hit_rate": ">=0.9"}``.
CUSTOM_BUDGETS = "metrics"
_CUSTOM_LIMIT = re.compile(r"^\s*(<=|>=)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Budget:
    """One budget: ``metric`` must stay at most (``bound == "max"``) or at least ``limit``."""

    keyword: str
    metric: Metric
    bound: str
    limit: float
    text: str  # the limit as the user wrote it
    #: A custom metric's budget: the kind its limit was written in ("" for a plain number).
    limit_kind: str = ""

    def broken_by(self, value: float) -> bool:
        return value > self.limit if self.bound == "max" else value < self.limit

    def message(self, value: float) -> str:
        relation = "above" if self.bound == "max" else "below"
        measured, limit = self.metric.format(value), self.metric.format(self.limit)
        if measured == limit:  # too close to tell apart in rounded units: show the exact values
            unit = _BASE_UNITS.get(self.metric.kind, "")
            measured, limit = f"{value:.17g}{unit}", f"{self.limit:.17g}{unit}"
        return (
            f"SLO budget {self.keyword}={self.text!r} broken: measured {self.metric.name} = "
            f"{measured}, {relation} the budget of {limit}"
        )


_BASE_UNITS = {"size": " B", "duration": " s"}


def _custom_budget(name: str, text: Any) -> Budget:
    """``metrics={name: ">=0.9"}``: one budget on a custom metric."""
    where = f"@pytest.mark.slo(metrics={{{name!r}: {text!r}}})"
    try:
        m = custom_metric(name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    match = _CUSTOM_LIMIT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{where}: write the bound and the limit, e.g. '>=0.9' or '<=200ms'")
    operator, number = match.groups()
    unit = re.sub(r"^[+-]?[\d.eE+-]*\d\.?\s*", "", number)
    kind = custom_metric_kind(unit) if unit else ""
    try:
        if kind == "duration":
            limit = parse_duration(number)
        elif kind == "size":
            limit = parse_size(number)
        else:
            limit = float(number[: len(number) - len(unit)] if unit else number)
            if not math.isfinite(limit):
                raise ValueError(f"the limit must be a finite number, got {number!r}")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Budget(f"metrics[{name!r}]", m, "max" if operator == "<=" else "min", limit, text.strip(),
                  limit_kind=kind)


def _parse_limit(keyword: str, m: Metric, value: Any) -> float:
    if m.kind == "duration":
        return parse_duration(value)
    if m.kind == "size":
        return parse_size(value)
    if m.kind == "cost" and isinstance(value, str):  # "0.002": a decimal written exactly
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"must be a number, e.g. '0.002', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"must be a number, not {type(value).__name__}")
    try:
        limit = float(value)
    except OverflowError:  # an int past a float's range
        raise ValueError(f"must be a finite number, got an integer of {value.bit_length()} bits") from None
    if not math.isfinite(limit):
        raise ValueError(f"must be a finite number, got {value!r}")
    if limit < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    if m.kind == "ratio" and limit > 1:
        raise ValueError(f"is a fraction from 0 to 1, got {value!r}")
    return limit


def merge_markers(markers: Iterable[tuple[tuple, Mapping[str, Any]]]) -> tuple[tuple, dict[str, Any]]:
    """One marker's (args, kwargs) from stacked ``slo`` markers given nearest first (method, class,
    module): every keyword of each, the nearest marker's value winning where two set the same one.
    ValueError when one of them takes positional arguments or sets no budget."""
    merged: dict[str, Any] = {}
    for args, kwargs in markers:
        if args:
            raise ValueError("@pytest.mark.slo takes keyword arguments only, e.g. slo(p99='200ms')")
        if not kwargs:
            raise ValueError("@pytest.mark.slo needs at least one budget, e.g. slo(p99='200ms')")
        for keyword, value in kwargs.items():
            merged.setdefault(keyword, value)
    return (), merged


def parse_budgets(args: tuple, kwargs: Mapping[str, Any]) -> list[Budget]:
    """Budgets from an slo marker's arguments; ValueError with a clear message on bad input. A
    keyword set to None sets no budget: on a method, ``slo(max_rss=None)`` lifts the one its class
    or module marker set (markers merge first, nearest winning)."""
    if args:
        raise ValueError("@pytest.mark.slo takes keyword arguments only, e.g. slo(p99='200ms')")
    if not kwargs:
        raise ValueError("@pytest.mark.slo needs at least one budget, e.g. slo(p99='200ms')")
    budgets = []
    for keyword, value in kwargs.items():
        if keyword == CUSTOM_BUDGETS and value is not None:
            if not isinstance(value, Mapping) or not value:
                raise ValueError("@pytest.mark.slo(metrics=...) takes a dict of custom metric "
                                 "budgets, e.g. metrics={'hit_rate': '>=0.9'}")
            budgets += [_custom_budget(name, text) for name, text in value.items()]
            continue
        if keyword not in BUDGETS:
            raise ValueError(
                f"@pytest.mark.slo: unknown budget {keyword!r}; known: {', '.join(BUDGETS)}, "
                f"{CUSTOM_BUDGETS}"
            )
        if value is None:  # lifts a budget a class or module marker set: no budget here
            continue
        metric_name, bound = BUDGETS[keyword]
        m = metric(metric_name)
        try:
            limit = _parse_limit(keyword, m, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"@pytest.mark.slo({keyword}={short_repr(value)}): {exc}") from None
        budgets.append(Budget(keyword, m, bound, limit, str(value)))
    return budgets


def check_budgets(budgets: list[Budget], record: Mapping[str, Any]) -> tuple[list[str], list[Budget]]:
    """Messages for broken budgets, and the budgets whose metric the record does not hold."""
    broken, unmeasured = [], []
    for budget in budgets:
        value = metric_value(record, budget.metric)
        if value is None:
            unmeasured.append(budget)
            continue
        if budget.metric.custom:
            budget = replace(budget, metric=resolve_metric(budget.metric, record))
            if budget.limit_kind and budget.limit_kind != budget.metric.kind:
                broken.append(f"SLO budget {budget.keyword}={budget.text!r} cannot be checked: the "
                              f"test records {budget.metric.header} as a {budget.metric.kind}, not "
                              f"a {budget.limit_kind}")
                continue
        if budget.broken_by(value):
            broken.append(budget.message(value))
    return broken, unmeasured
