"""Hostile saved runs, as the fuzzer (fuzz/fuzz_saved_json.py) found them: every one is a
BaselineError naming the test and the key, in a message of a few lines, never a RecursionError or
a ValueError out of str()."""

from __future__ import annotations

import json

import pytest

from pyagentbench.results.baseline import BaselineError
from pyagentbench.results.compare import Gate, check_gates, load_records, records_from_json
from pyagentbench.results.metrics import METRICS, number_problem

STATS = {"min": 1.0, "max": 2.0, "mean": 1.5, "stddev": 0.1, "median": 1.5, "rounds": 3}


def run_doc(**stats):
    return {"machine_info": {}, "benchmarks": [
        {"name": "test_a", "fullname": "t.py::test_a", "stats": {**STATS, **stats},
         "extra_info": {"agentbench": {"peak_rss_bytes": 1000}}}]}


def nested(depth):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


def problems_of(document):
    with pytest.raises(BaselineError) as caught:
        records_from_json(document)
    return caught.value.problems


def test_a_value_nested_past_the_recursion_limit_is_a_named_problem():
    # repr() of it raised RecursionError from inside the reader
    [problem] = problems_of(run_doc(min=nested(100_000)))
    assert problem.startswith("t.py::test_a: stats.min is a list ([[[[")
    assert problem.endswith("not a number") and len(problem) < 120


def test_an_int_past_str_limit_is_counted_not_printed():
    # len(str(10**5000)) raised "Exceeds the limit (4300 digits) for integer string conversion"
    [problem] = problems_of(run_doc(max=10**5000))
    assert problem == "t.py::test_a: stats.max is a 5001-digit integer, too large for a float"


@pytest.mark.parametrize(("value", "digits"), [(10**400, 401), (10**400 - 1, 400), (-(10**309), 310),
                                                 (2**1024, 309)])
def test_digit_count_of_ints_too_large_for_a_float(value, digits):
    assert number_problem(value) == f"is a {digits}-digit integer, too large for a float"
    assert len(str(abs(value))) == digits


def test_a_list_holding_a_huge_int_is_shown_by_type():
    assert number_problem([10**5000]) == "is a list (<list>), not a number"


def test_a_huge_string_name_without_fullname_gives_a_short_message():
    document = {"machine_info": {}, "benchmarks": [{"name": "x" * 1_000_000, "stats": STATS}]}
    [problem] = problems_of(document)
    assert problem.startswith("benchmarks[0] (name 'xxxx") and problem.endswith("has no 'fullname'")
    assert len(problem) < 150


def test_a_file_nested_deeper_than_json_reads_is_a_baseline_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"benchmarks": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BaselineError, match="not valid JSON"):
        load_records(path)


def test_a_file_with_a_5000_digit_int_is_a_baseline_error(tmp_path):
    path = tmp_path / "huge.json"
    text = json.dumps(run_doc(min=0.5)).replace("0.5", "1" + "0" * 5000)
    path.write_text(text)
    with pytest.raises(BaselineError, match="not valid JSON") as caught:
        load_records(path)
    assert str(path) in str(caught.value)


def test_a_50_megabyte_file_is_read_whole(tmp_path):
    """One generated file of 50 MB: every benchmark in it is read, and gates check it."""
    n = 12_000
    entries = [{"name": f"t{i}", "fullname": f"t.py::t{i}", "stats": STATS,
                "extra_info": {"agentbench": {"peak_rss_bytes": i, "pad": "x" * 4000}}} for i in range(n)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": entries}))
    assert path.stat().st_size > 50_000_000
    records = load_records(path)
    assert len(records) == n and records["t.py::t11999"]["peak_rss_bytes"] == 11999
    gates = [Gate(m, 10.0) for m in METRICS.values()]
    assert check_gates(gates, records, records) == []
