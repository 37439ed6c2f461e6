"""Budget and gate verdicts in the form a run saves them, and the baseline changes a report shows.

The pytest plugin saves, in each benchmark's ``extra_info["agentbench"]``:

- ``"slo"``: one object per SLO budget of the test: ``keyword``, ``metric``, ``bound`` ("max" or
  "min"), ``limit`` (in the metric's unit: seconds, bytes, ...), ``limit_text`` (as written),
  ``value`` (measured, or null), ``verdict`` ("met", "missed" or "not measured") and ``message``.
- ``"gates"``: one object per regression gate checked for the test: ``gate`` (as written),
  ``metric``, ``baseline``, ``now``, ``change_percent``, ``verdict`` ("passed" or "failed"),
  ``against`` (the saved run compared with).

Reports and JUnit files are made from these, so a run's verdicts can be shown later without
re-running anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from .compare import Gate, check_gates
from .metrics import metric_value
from .slo import Budget

__all__ = [
    "SLO_KEY",
    "GATES_KEY",
    "MET",
    "MISSED",
    "NOT_MEASURED",
    "PASSED",
    "FAILED",
    "Change",
    "budget_verdicts",
    "gate_verdicts",
    "baseline_changes",
]

SLO_KEY = "slo"
GATES_KEY = "gates"
MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"
PASSED, FAILED = "passed", "failed"


def _finite(value: float) -> float | None:
    """JSON has no infinity: a change from a zero baseline is saved as null."""
    return value if math.isfinite(value) else None


def budget_verdicts(budgets: Iterable[Budget], record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each budget with what *record* measured and its verdict, as saved in the JSON."""
    saved = []
    for budget in budgets:
        value = metric_value(record, budget.metric)
        if value is None:
            verdict, message = NOT_MEASURED, f"SLO budget {budget.keyword}={budget.text!r}: " \
                f"{budget.metric.name} was not measured"
        elif budget.broken_by(value):
            verdict, message = MISSED, budget.message(value)
        else:
            verdict, message = MET, ""
        saved.append({
            "keyword": budget.keyword,
            "metric": budget.metric.name,
            "bound": budget.bound,
            "limit": budget.limit,
            "limit_text": budget.text,
            "value": value,
            "verdict": verdict,
            "message": message,
        })
    return saved


def _gated_values(
    gates: list[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
) -> Iterator[tuple[str, Gate, float, float]]:
    """(test, gate, baseline value, current value) for each gate whose metric both records hold."""
    for test, record in current.items():
        base = baseline.get(test)
        if base is None:
            continue
        for gate in gates:
            now_value, base_value = metric_value(record, gate.metric), metric_value(base, gate.metric)
            if now_value is not None and base_value is not None:
                yield test, gate, base_value, now_value


def gate_verdicts(
    gates: Iterable[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
    against: str = "",
) -> dict[str, list[dict[str, Any]]]:
    """Test fullname -> each gate checked for it (both runs hold the metric), passed or failed.

    Which gates fail is decided by :func:`pyagentbench.results.compare.check_gates`, the same
    decision that sets the session's exit status. ValueError as check_gates raises it.
    """
    gates = list(gates)
    failed = {(r.test, str(r.gate)) for r in check_gates(gates, current, baseline)}
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for test, gate, base_value, now_value in _gated_values(gates, current, baseline):
        verdict = FAILED if (test, str(gate)) in failed else PASSED
        verdicts.setdefault(test, []).append({
            "gate": str(gate),
            "metric": gate.metric.name,
            "baseline": base_value,
            "now": now_value,
            "change_percent": _finite(gate.change(base_value, now_value)),
            "verdict": verdict,
            "against": against,
        })
    return verdicts


@dataclass(frozen=True)
class Change:
    """A metric of one benchmark that moved beyond its gate: ``verdict`` is "regressed" or
    "improved"; ``change_percent`` is signed as the value moved (None: from a zero baseline)."""

    test: str
    gate: Gate
    baseline: float
    now: float
    change_percent: float | None
    verdict: str


def baseline_changes(
    gates: Iterable[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
) -> list[Change]:
    """The regressions (the gates :func:`check_gates` fails) and the improvements (the mirror
    image: better by more than the gate's percentage and floor) of *current* against *baseline*,
    both mapping test fullname -> metrics record. Tests in one run only are left out."""
    gates = list(gates)
    changes = [
        Change(r.test, r.gate, r.baseline, r.now, _finite(r.change), "regressed")
        for r in check_gates(gates, current, baseline)
    ]
    for test, gate, base_value, now_value in _gated_values(gates, current, baseline):
        better = -gate.worsening(base_value, now_value)
        if better <= 0 or better <= gate.floor or base_value == 0:
            continue
        if better / abs(base_value) * 100.0 > gate.percent:
            changes.append(Change(test, gate, base_value, now_value,
                                  _finite(gate.change(base_value, now_value)), "improved"))
    return changes
