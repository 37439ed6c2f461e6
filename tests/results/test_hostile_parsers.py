"""Hostile input to the parsers, as the fuzzer (fuzz/fuzz_parsers.py) found it: numbers past a
float's range, NaN and infinity are a ValueError naming the problem, never an OverflowError or a
limit that can never be reached."""

from __future__ import annotations

import pytest

from pyagentbench.results.compare import parse_gates
from pyagentbench.results.slo import parse_budgets
from pyagentbench.results.units import parse_duration, parse_size


@pytest.mark.parametrize("parse", [parse_duration, parse_size])
@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2**1024"])
def test_an_int_past_a_float_is_a_value_error(parse, value):
    # float(value) raised OverflowError
    with pytest.raises(ValueError, match="must be finite, got an integer of"):
        parse(value)


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_count_budget_past_a_float_is_a_value_error(digits):
    value = 10**digits
    with pytest.raises(ValueError, match=r"^@pytest.mark.slo\(max_allocs_per_call=.*\): must be a finite "
                                         r"number, got an integer of \d+ bits$"):
        parse_budgets((), {"max_allocs_per_call": value})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("keyword", ["min_throughput", "max_allocs_per_call", "max_cpu_percent"])
def test_a_count_budget_must_be_finite(keyword, value):
    # NaN made a budget that is never broken (every comparison with NaN is false), inf too
    with pytest.raises(ValueError, match="must be a finite number"):
        parse_budgets((), {keyword: value})


def test_a_size_budget_past_a_float_names_the_keyword():
    with pytest.raises(ValueError, match=r"^@pytest.mark.slo\(max_rss=<int>\): a size must be finite"):
        parse_budgets((), {"max_rss": 10**5000})


def test_a_gate_percentage_past_a_float_is_a_value_error():
    # 400 nines parsed as inf%: a gate that could never fail
    with pytest.raises(ValueError, match="the percentage must be a finite number"):
        parse_gates("peak_rss:" + "9" * 400 + "%")


def test_a_large_finite_gate_percentage_still_parses():
    [gate] = parse_gates("peak_rss:" + "9" * 300 + "%")
    assert gate.percent == float("9" * 300)
