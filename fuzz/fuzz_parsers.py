"""Fuzz target: the parsers of what users write. Gate syntax (``parse_gates``,
pyagentbench/results/compare.py), SLO budgets (``parse_budgets`` and ``merge_markers``,
results/slo.py) and units (``parse_duration``, ``parse_size``, results/units.py).

    python fuzz/fuzz_parsers.py -max_total_time=600 [corpus dir]

Inputs are raw text, text assembled from the grammar's own tokens (metric names, units, signs,
``%``, ``:floor=``, huge digit strings), and, for budgets and units, values of other types: ints
past a float's range (10**400), NaN, infinities, bools, None, lists.

Allowed, as each function documents: ``parse_gates``, ``parse_budgets``, ``merge_markers``:
ValueError. ``parse_duration``, ``parse_size``: TypeError (not a number or a string) and
ValueError. What they return is checked too: a gate's percent and floor, a budget's limit and a
parsed duration or size are finite numbers >= 0 (a ratio budget at most 1). Anything else fails
the run.
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

from _harness import main  # noqa: E402

with atheris.instrument_imports(include=["pyagentbench.results"]):
    from pyagentbench.results import compare, metrics, slo, units  # noqa: E402

TOKENS = (
    list(metrics.METRICS) + list(slo.BUDGETS) + list(units._DURATION_UNITS) + list(units._SIZE_UNITS)
    + ["KiB", "MiB", "GiB", "MB", "%", ":", "floor", "=", ",", "+", "-", ".", "e", "E", " ", "\t",
       "\n", "0", "1", "20", "1e400", "9" * 400, "nan", "inf", "Infinity", "µ", "\u00a0", "\x00",
       "0.5", "-0", "e-400", "bogus"]
)


NUMBERS = ["0", "1", "20", "2.5", "1e400", "1e-400", "9" * 400, "9" * 5000, ".5", "5.", "nan", "inf",
           "-1", "+3", "1_000", "0x10", "١٢"]


def text(fdp: atheris.FuzzedDataProvider) -> str:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    if choice == 1:  # the grammar's shape: METRIC:[+-]NUMBER%[:floor=NUMBER UNIT]
        gate = (f"{fdp.PickValueInList(list(metrics.METRICS))}:{fdp.PickValueInList(['', '+', '-'])}"
                f"{fdp.PickValueInList(NUMBERS)}%")
        if fdp.ConsumeBool():
            gate += f":floor={fdp.PickValueInList(NUMBERS)}{fdp.PickValueInList(TOKENS)}"
        return gate
    if choice == 2:  # NUMBER UNIT
        return fdp.PickValueInList(NUMBERS) + fdp.PickValueInList(TOKENS)
    return "".join(fdp.PickValueInList(TOKENS) for _ in range(fdp.ConsumeIntInRange(0, 12)))


def value(fdp: atheris.FuzzedDataProvider):
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 3:
        return text(fdp)
    if kind == 4:
        return fdp.ConsumeFloat()
    if kind == 5:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 200))  # up to 2**1600: past a float
    if kind == 6:
        return fdp.PickValueInList([10**400, -10**400, 10**5000, float("nan"), float("inf"),
                                    -float("inf"), True, False, None, 0, -1, 1e308, 2**1024])
    if kind == 7:
        return [text(fdp)]
    if kind == 8:
        return fdp.ConsumeProbability()
    return fdp.ConsumeIntInRange(0, 10**6)


def finite_non_negative(number: float) -> bool:
    return isinstance(number, float) and math.isfinite(number) and number >= 0


def check_gates(fdp: atheris.FuzzedDataProvider) -> None:
    spec = ",".join(text(fdp) for _ in range(fdp.ConsumeIntInRange(1, 3)))
    try:
        gates = compare.parse_gates(spec)
    except ValueError as exc:
        assert type(exc) is ValueError and str(exc), exc
        return
    for gate in gates:
        assert finite_non_negative(gate.percent), gate
        assert finite_non_negative(float(gate.floor)) and not isinstance(gate.floor, bool), gate
        str(gate)


def check_units(fdp: atheris.FuzzedDataProvider) -> None:
    parse = fdp.PickValueInList([units.parse_duration, units.parse_size])
    given = value(fdp)
    try:
        parsed = parse(given)
    except (TypeError, ValueError) as exc:
        assert type(exc) in (TypeError, ValueError) and str(exc), exc
        return
    assert finite_non_negative(parsed), (given, parsed)


def check_budgets(fdp: atheris.FuzzedDataProvider) -> None:
    markers = []
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        args = tuple(value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 1) if fdp.ConsumeIntInRange(0, 7) == 0 else 0))
        kwargs = {}
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            keyword = fdp.PickValueInList(list(slo.BUDGETS)) if fdp.ConsumeIntInRange(0, 9) else text(fdp)
            kwargs[keyword] = value(fdp) if fdp.ConsumeIntInRange(0, 7) else None
        markers.append((args, kwargs))
    try:
        args, kwargs = slo.merge_markers(markers)
        budgets = slo.parse_budgets(args, kwargs)
    except ValueError as exc:
        assert type(exc) is ValueError and str(exc), exc
        return
    for budget in budgets:
        assert finite_non_negative(budget.limit), budget
        if budget.metric.kind == "ratio":
            assert budget.limit <= 1, budget
        budget.message(budget.limit * 2 + 1)
        budget.message(budget.limit)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    [check_gates, check_units, check_budgets][fdp.ConsumeIntInRange(0, 2)](fdp)


def seeds() -> list:
    return [b"\0peak_rss:20%", b"\0throughput:-10%:floor=5", b"\1200ms", b"\150MiB", b"\2p99=1",
            b"\0p99:5%:floor=1e400", b"\1" + b"9" * 400]


if __name__ == "__main__":
    main(test_one_input, seeds())
