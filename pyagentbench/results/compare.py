"""Regression gates on what pytest-benchmark does not compare: memory, allocations, throughput and
latency percentiles.

A gate ``peak_rss:20%`` fails when a benchmark's peak RSS grew by more than 20% over the baseline;
a negative gate such as ``throughput:-10%`` fails when the metric fell by more than 10%. Baselines
are pytest-benchmark JSON files; our metrics sit in each entry's ``extra_info["agentbench"]``.
This module reads JSON and never imports the pytest plugin.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .metrics import EXTRA_INFO_KEY, Metric, metric, metric_value

__all__ = ["Gate", "Regression", "parse_gates", "check_gates", "load_records", "format_regressions"]

_GATE = re.compile(r"^\s*([a-z_0-9]+)\s*:\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class Gate:
    """Fail when ``metric`` moves past ``percent`` (> 0: grows by more; < 0: falls by more;
    0: any growth, or -0.0, any fall, for metrics where higher is better)."""

    metric: Metric
    percent: float

    def __str__(self) -> str:
        return f"{self.metric.name}:{self.percent:g}%"

    def change(self, baseline: float, now: float) -> float:
        """Relative change in percent (inf when a zero baseline grew)."""
        if baseline == 0:
            return 0.0 if now == 0 else math.copysign(math.inf, now)
        return (now - baseline) / abs(baseline) * 100.0

    def fails(self, baseline: float, now: float) -> bool:
        change = self.change(baseline, now)
        falling = self.percent < 0 or math.copysign(1.0, self.percent) < 0
        return change < self.percent if falling else change > self.percent


@dataclass(frozen=True)
class Regression:
    """One failed gate for one benchmark."""

    test: str
    gate: Gate
    baseline: float
    now: float

    @property
    def change(self) -> float:
        return self.gate.change(self.baseline, self.now)


def parse_gates(text: str) -> list[Gate]:
    """``"peak_rss:20%,throughput:-10%"`` -> gates; ValueError naming the bad entry."""
    gates = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _GATE.match(entry)
        if match is None:
            raise ValueError(
                f"bad gate {entry!r}: expected METRIC:PERCENT%, e.g. peak_rss:20% or throughput:-10%"
            )
        m = metric(match.group(1))
        percent = float(match.group(2))
        if percent == 0:
            # 0%: any change in the bad direction fails (growth, or a fall for throughput).
            percent = -0.0 if m.higher_is_better else 0.0
        gates.append(Gate(m, percent))
    if not gates:
        raise ValueError("no gates given: expected e.g. peak_rss:20%,throughput:-10%")
    return gates


def check_gates(
    gates: Iterable[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
) -> list[Regression]:
    """Every gate failed by a benchmark present in both; both map test name -> metrics record."""
    regressions = []
    gates = list(gates)
    for test, record in current.items():
        base = baseline.get(test)
        if base is None:
            continue
        for gate in gates:
            now_value, base_value = metric_value(record, gate.metric), metric_value(base, gate.metric)
            if now_value is None or base_value is None:
                continue
            if gate.fails(base_value, now_value):
                regressions.append(Regression(test, gate, base_value, now_value))
    return regressions


def records_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a loaded pytest-benchmark JSON document."""
    records = {}
    for bench in data.get("benchmarks", []):
        record = (bench.get("extra_info") or {}).get(EXTRA_INFO_KEY)
        if record:
            records[bench["fullname"]] = dict(record)
    return records


def load_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a pytest-benchmark JSON file."""
    with open(path, encoding="utf-8") as fh:
        return records_from_json(json.load(fh))


def format_regressions(regressions: list[Regression]) -> list[str]:
    """Aligned lines: test, metric, baseline, now, change."""
    rows = [("test", "metric", "baseline", "now", "change", "gate")]
    for r in regressions:
        change = "new" if math.isinf(r.change) else f"{r.change:+.1f}%"
        rows.append(
            (r.test, r.gate.metric.name, r.gate.metric.format(r.baseline),
             r.gate.metric.format(r.now), change, str(r.gate))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
