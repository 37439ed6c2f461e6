"""SLO budgets: ``@pytest.mark.slo(p99="200ms", max_rss="50MB", min_throughput=1000, ...)``.

Each keyword names a budget on one metric. Durations take ns, us, µs, ms or s; sizes B, KB, MB,
GB (powers of 1000) or KiB, MiB, GiB; plain numbers are seconds, bytes or counts. Budgets are
absolute limits: unlike regression gates they have no floor, since nothing is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .metrics import Metric, metric, metric_value
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
    "max_instructions_per_call": ("instructions", "max"),  # under --agentbench-instructions
}


@dataclass(frozen=True)
class Budget:
    """One budget: ``metric`` must stay at most (``bound == "max"``) or at least ``limit``."""

    keyword: str
    metric: Metric
    bound: str
    limit: float
    text: str  # the limit as the user wrote it

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


def _parse_limit(keyword: str, m: Metric, value: Any) -> float:
    if m.kind == "duration":
        return parse_duration(value)
    if m.kind == "size":
        return parse_size(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"must be a number, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    if m.kind == "ratio" and value > 1:
        raise ValueError(f"is a fraction from 0 to 1, got {value!r}")
    return float(value)


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
        if keyword not in BUDGETS:
            raise ValueError(
                f"@pytest.mark.slo: unknown budget {keyword!r}; known: {', '.join(BUDGETS)}"
            )
        if value is None:  # lifts a budget a class or module marker set: no budget here
            continue
        metric_name, bound = BUDGETS[keyword]
        m = metric(metric_name)
        try:
            limit = _parse_limit(keyword, m, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"@pytest.mark.slo({keyword}={value!r}): {exc}") from None
        budgets.append(Budget(keyword, m, bound, limit, str(value)))
    return budgets


def check_budgets(budgets: list[Budget], record: Mapping[str, Any]) -> tuple[list[str], list[Budget]]:
    """Messages for broken budgets, and the budgets whose metric the record does not hold."""
    broken, unmeasured = [], []
    for budget in budgets:
        value = metric_value(record, budget.metric)
        if value is None:
            unmeasured.append(budget)
        elif budget.broken_by(value):
            broken.append(budget.message(value))
    return broken, unmeasured
