"""Regression gates on what pytest-benchmark does not compare: memory, allocations, throughput and
latency percentiles.

Each metric knows which way is worse, so a gate is the allowed worsening: ``peak_rss:20%`` fails
when a benchmark's peak RSS grew by more than 20% over the baseline, ``throughput:10%`` when
throughput fell by more than 10%. A sign that agrees with the metric is accepted
(``peak_rss:+20%``, ``throughput:-10%``); one that contradicts it is an error whose message gives the
fix. Memory gates carry an absolute floor (``peak_rss:20%:floor=2MiB``, defaults in
:mod:`.metrics`): a change smaller than the floor is not a regression, whatever its percentage.

Baselines are pytest-benchmark JSON files; our metrics sit in each entry's
``extra_info["agentbench"]``. This module reads JSON and never imports the pytest plugin.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .baseline import BaselineError, document_problems, read_document, saved_tests
from .metrics import Metric, metric, metric_value, resolve_metric
from .units import parse_duration, parse_size

__all__ = [
    "Gate",
    "Regression",
    "parse_gates",
    "check_gates",
    "load_records",
    "records_from_json",
    "format_regressions",
]

_GATE = re.compile(
    r"^\s*([a-z_0-9.]+)\s*:\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*%\s*(?::\s*([a-z_]+)\s*=\s*(\S.*?))?\s*$"
)
_EXAMPLE = "e.g. peak_rss:20%, throughput:10% or peak_rss:20%:floor=2MiB"


@dataclass(frozen=True)
class Gate:
    """Fail when ``metric`` worsens by more than ``percent`` and by more than ``floor``.

    ``percent`` (>= 0) is the allowed worsening: growth for most metrics, a fall where higher is
    better (throughput); 0 fails on any worsening beyond the floor. ``floor`` is absolute, in the
    metric's unit (bytes, seconds, ...): a change no larger than it is never a regression.
    ``floor_text`` is the floor as the user wrote it ("" when the metric's default applies).
    """

    metric: Metric
    percent: float
    floor: float = 0.0
    floor_text: str = ""

    def __str__(self) -> str:
        text = f"{self.metric.name}:{self.percent:g}%"
        return f"{text}:floor={self.floor_text}" if self.floor_text else text

    def change(self, baseline: float, now: float) -> float:
        """Relative change in percent, signed as the value moved (inf when a zero baseline moved)."""
        if baseline == 0:
            return 0.0 if now == 0 else math.copysign(math.inf, now)
        return (now - baseline) / abs(baseline) * 100.0

    def worsening(self, baseline: float, now: float) -> float:
        """How much worse *now* is than *baseline*, in the metric's unit (< 0: it improved)."""
        return baseline - now if self.metric.higher_is_better else now - baseline

    def fails(self, baseline: float, now: float) -> bool:
        """True when *now* is worse than *baseline* by more than the percentage and the floor."""
        worse = self.worsening(baseline, now)
        if worse <= 0 or worse <= self.floor:
            return False
        if baseline == 0:
            return True
        return worse / abs(baseline) * 100.0 > self.percent


@dataclass(frozen=True)
class Regression:
    """One failed gate for one benchmark."""

    test: str
    gate: Gate
    baseline: float
    now: float

    @property
    def change(self) -> float:
        """The relative change in percent, as :meth:`Gate.change`."""
        return self.gate.change(self.baseline, self.now)


def _parse_floor(entry: str, m: Metric, text: str) -> float:
    try:
        if m.kind == "size":
            return parse_size(text)
        if m.kind == "duration":
            return parse_duration(text)
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad gate {entry!r}: floor {exc}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bad gate {entry!r}: the floor must be a number >= 0, got {text!r}")
    return value


def _parse_gate(entry: str) -> Gate:
    match = _GATE.match(entry)
    if match is None:
        raise ValueError(f"bad gate {entry!r}: expected METRIC:PERCENT%, {_EXAMPLE}")
    name, sign, number, option, option_value = match.groups()
    m = metric(name)
    if sign == "-" and not m.higher_is_better and not m.custom:  # custom: direction in the record
        raise ValueError(
            f"{entry.strip()}: a fall in {name} is an improvement; "
            f"write {name}:{number}% to allow {number}% growth"
        )
    if sign == "+" and m.higher_is_better and not m.custom:
        raise ValueError(
            f"{entry.strip()}: a rise in {name} is an improvement; "
            f"write {name}:{number}% to allow a {number}% fall"
        )
    if not math.isfinite(float(number)):  # digits past a float's range
        raise ValueError(f"bad gate {entry!r}: the percentage must be a finite number, {_EXAMPLE}")
    if option is None:
        return Gate(m, float(number), m.floor)
    if option != "floor":
        raise ValueError(f"bad gate {entry!r}: unknown option {option!r}; the only one is floor=, {_EXAMPLE}")
    return Gate(m, float(number), _parse_floor(entry, m, option_value), option_value)


def parse_gates(text: str) -> list[Gate]:
    """``"peak_rss:20%,throughput:10%"`` -> gates; ValueError naming the bad entry and the fix."""
    gates = [_parse_gate(entry) for entry in text.split(",") if entry.strip()]
    if not gates:
        raise ValueError(f"no gates given: expected METRIC:PERCENT%, {_EXAMPLE}")
    return gates


def check_gates(
    gates: Iterable[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
) -> list[Regression]:
    """Every gate failed by a benchmark present in both; both map test name -> metrics record.

    A gate whose metric either record lacks is skipped (see
    :func:`pyagentbench.results.baseline.missing_gated_metrics` for telling a user why).
    ValueError naming the test and key when a value is not a finite number.
    """
    regressions = []
    gates = list(gates)
    for test, record in current.items():
        base = baseline.get(test)
        if base is None:
            continue
        for gate in gates:
            if gate.metric.custom:  # its direction is the one the test recorded it with
                gate = replace(gate, metric=resolve_metric(gate.metric, record))
            try:
                now_value = metric_value(record, gate.metric)
                base_value = metric_value(base, gate.metric)
            except ValueError as exc:
                raise ValueError(f"{test}: {exc}") from None
            if now_value is None or base_value is None:
                continue
            if gate.fails(base_value, now_value):
                regressions.append(Regression(test, gate, base_value, now_value))
    return regressions


def records_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a loaded pytest-benchmark JSON document.

    :class:`pyagentbench.results.baseline.BaselineError` naming the test and key when the document
    is not a pytest-benchmark run.
    """
    problems = document_problems(data, (), need_machine_info=False)
    if problems:
        raise BaselineError("<document>", problems)
    return {test: dict(saved.record) for test, saved in saved_tests("", data["benchmarks"]).items()
            if saved.record}


def load_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a pytest-benchmark JSON file.

    :class:`pyagentbench.results.baseline.BaselineError` naming the file, test and key when it
    cannot be read.
    """
    data = read_document(path)
    try:
        return records_from_json(data)
    except BaselineError as exc:
        raise BaselineError(str(path), exc.problems) from None


def format_regressions(regressions: list[Regression]) -> list[str]:
    """Aligned lines: test, metric, baseline, now, change, gate; one per regression."""
    rows = [("test", "metric", "baseline", "now", "change", "gate")]
    for r in regressions:
        change = "new" if math.isinf(r.change) else f"{r.change:+.1f}%"
        rows.append(
            (r.test, r.gate.metric.name, r.gate.metric.format(r.baseline),
             r.gate.metric.format(r.now), change, str(r.gate))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
