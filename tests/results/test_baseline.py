"""Reading a saved run: a missing key or a wrong type is a named problem, never a traceback."""

from __future__ import annotations

import json

import pytest

from pyagentbench.results.baseline import (
    MAX_LISTED,
    BaselineError,
    document_problems,
    missing_gated_metrics,
    read_document,
    saved_tests,
)
from pyagentbench.results.compare import load_records
from pyagentbench.results.metrics import metric

PEAK = [metric("peak_rss")]


def entry(name="test_a", record=None, **fields):
    bench = {"name": name, "fullname": f"t.py::{name}",
             "stats": {"min": 1.0, "max": 2.0, "mean": 1.5, "stddev": 0.1, "median": 1.5, "rounds": 3},
             "extra_info": {"agentbench": record if record is not None else {"peak_rss_bytes": 1000}}}
    bench.update(fields)
    return bench


def run_doc(*entries):
    return {"machine_info": {}, "benchmarks": list(entries)}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b'{"benchmarks": [', "not valid JSON (truncated: it ends at line 1 column 17)"),
        (b'{"benchmarks": [{"name": "te', "not valid JSON (truncated: it ends at line 1 column 29)"),
        (b"<html>", "not valid JSON (Expecting value at line 1 column 1)"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        # CPython words it "(4300 digits)" from 3.11 and "(4300)" in 3.9 and 3.10
        (b"1" * 5000, "not valid JSON (Exceeds the limit (4300*) for integer string conversion*"),
    ],
)
def test_read_document_says_why_a_file_cannot_be_read(tmp_path, raw, problem):
    path = tmp_path / "0001_x.json"
    path.write_bytes(raw)
    with pytest.raises(BaselineError) as excinfo:
        read_document(path)
    assert excinfo.value.path == str(path)
    from fnmatch import fnmatchcase

    assert fnmatchcase(excinfo.value.problems[0], problem), excinfo.value.problems


def test_read_document_of_a_missing_file(tmp_path):
    with pytest.raises(BaselineError, match="cannot read it: No such file or directory"):
        read_document(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "the file holds a list, not a pytest-benchmark run (an object with 'benchmarks')"),
        ("run", "the file holds a string, not a pytest-benchmark run (an object with 'benchmarks')"),
        ({"machine_info": {}}, "no 'benchmarks' list: not a pytest-benchmark run"),
        ({"benchmarks": {}}, "'benchmarks' is an object, expected a list"),
        ({"benchmarks": []}, "no 'machine_info' (pytest-benchmark needs it to compare)"),
        (run_doc("test_a"), "benchmarks[0] is a string, expected an object"),
        (run_doc({"name": "test_a"}), "benchmarks[0] (name 'test_a') has no 'fullname'"),
        (run_doc(entry(fullname=["t.py", "test_a"])), "benchmarks[0]: 'fullname' is a list, expected a string"),
        (run_doc(entry(stats=None)), "t.py::test_a: 'stats' is missing"),
        (run_doc(entry(stats=[1])), "t.py::test_a: 'stats' is a list, expected an object"),
        (run_doc(entry(stats={"mean": 1.0})), "t.py::test_a: stats has no 'min'"),
        (run_doc(entry(stats={"min": 1, "max": 2, "mean": "fast", "stddev": 0, "median": 1, "rounds": 3})),
         "t.py::test_a: stats.mean is a string ('fast'), not a number"),
        (run_doc(entry(extra_info=[1])), "t.py::test_a: 'extra_info' is a list, expected an object"),
        (run_doc(entry(extra_info={"agentbench": "x"})), "t.py::test_a: extra_info.agentbench is a string, expected an object"),
        (run_doc(entry(record={"peak_rss_bytes": "1000"})),
         "t.py::test_a: extra_info.agentbench.peak_rss_bytes is a string ('1000'), not a number"),
        (run_doc(entry(record={"peak_rss_bytes": False})),
         "t.py::test_a: extra_info.agentbench.peak_rss_bytes is false, not a number"),
        (run_doc(entry(record={"peak_rss_bytes": float("inf")})),
         "t.py::test_a: extra_info.agentbench.peak_rss_bytes is inf, not a finite number"),
        (run_doc(entry(record={"peak_rss_bytes": 10**400})),
         "t.py::test_a: extra_info.agentbench.peak_rss_bytes is a 401-digit integer, too large for a float"),
    ],
)
def test_document_problems_name_the_test_and_key(data, problem):
    assert document_problems(data, PEAK)[0] == problem


def test_only_gated_metrics_must_be_numbers():
    doc = run_doc(entry(record={"peak_rss_bytes": 1000, "allocs_per_call": "many", "peak_rss_source": "VmHWM"}))
    assert document_problems(doc, PEAK) == []
    assert document_problems(doc, [metric("allocs_per_call")]) == [
        "t.py::test_a: extra_info.agentbench.allocs_per_call is a string ('many'), not a number"
    ]


def test_a_good_run_has_no_problems_and_a_null_value_counts_as_absent():
    doc = run_doc(entry(), entry("test_b", record={"peak_rss_bytes": None}), entry("test_c", extra_info=None))
    assert document_problems(doc, PEAK) == []
    tests = saved_tests("0001.json", doc["benchmarks"])
    assert tests["t.py::test_a"].record == {"peak_rss_bytes": 1000}
    assert tests["t.py::test_c"].record is None


def test_missing_gated_metrics_names_file_test_and_key():
    saved = saved_tests("0001.json", [entry("test_a", record={"allocs_per_call": 2}),
                                       entry("test_b", extra_info={}),
                                       entry("test_c")])
    current = {
        "t.py::test_a": {"peak_rss_bytes": 5000},
        "t.py::test_b": {"peak_rss_bytes": 5000},
        "t.py::test_c": {"peak_rss_bytes": 5000},
        "t.py::test_new": {"peak_rss_bytes": 5000},
        "t.py::test_unmeasured": {},
    }
    assert missing_gated_metrics(PEAK, current, saved) == [
        ("0001.json", "t.py::test_a: no peak_rss_bytes (gated by peak_rss), which this run measured"),
        ("0001.json", "t.py::test_b: no agentbench metrics (gated by peak_rss), which this run measured"),
    ]


def test_the_error_lists_at_most_a_dozen_problems():
    error = BaselineError("0001.json", [f"problem {i}" for i in range(MAX_LISTED + 3)])
    lines = str(error).splitlines()
    assert lines[0] == "cannot compare against the saved run 0001.json:"
    assert lines[-2] == "  ... and 3 more"
    assert len(lines) == MAX_LISTED + 3


def test_load_records_reads_a_saved_run_and_names_the_file_when_it_cannot(tmp_path):
    path = tmp_path / "0001.json"
    path.write_text(json.dumps(run_doc(entry())))
    assert load_records(path) == {"t.py::test_a": {"peak_rss_bytes": 1000}}
    path.write_text(json.dumps(run_doc({"name": "test_a"})))
    with pytest.raises(BaselineError, match="0001.json") as excinfo:
        load_records(path)
    assert excinfo.value.problems == ["benchmarks[0] (name 'test_a') has no 'fullname'"]
