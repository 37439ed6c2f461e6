"""JUnit XML of a run's budgets and gates: parsed back with xml.etree, the structure CI reads."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pyagentbench.results.junit import JUNIT_MARKER, render_junit
from pyagentbench.results.report import run_from_document


def saved(fullname: str, slo: list | None = None, gates: list | None = None) -> dict:
    record = {"mean_s": 1e-3}
    if slo is not None:
        record["slo"] = slo
    if gates is not None:
        record["gates"] = gates
    return {"name": fullname.split("::")[-1], "fullname": fullname, "params": None,
            "stats": {"min": 1, "max": 1, "mean": 1, "stddev": 0, "median": 1, "rounds": 1},
            "extra_info": {"agentbench": record}}


def run_of(*entries: dict):
    return run_from_document({"benchmarks": list(entries), "datetime": "2026-12-03T12:00:00+00:00"}, "r")


MET = {"keyword": "p99", "metric": "p99", "bound": "max", "limit": 0.2, "limit_text": "200ms",
       "value": 0.1, "verdict": "met", "message": ""}
MISSED = {"keyword": "max_rss", "metric": "peak_rss", "bound": "max", "limit": 1e6, "limit_text": "1MB",
          "value": 2e6, "verdict": "missed",
          "message": "SLO budget max_rss='1MB' broken: measured peak_rss = 1.907 MiB, above the budget of 976.6 KiB"}
UNMEASURED = {"keyword": "min_throughput", "metric": "throughput", "bound": "min", "limit": 5,
              "limit_text": "5", "value": None, "verdict": "not measured", "message": ""}
PASSED = {"gate": "allocs_per_call:10%", "metric": "allocs_per_call", "baseline": 10.0, "now": 10.0,
          "change_percent": 0.0, "verdict": "passed", "against": "0001.json"}
FAILED = {"gate": "peak_rss:20%", "metric": "peak_rss", "baseline": 10485760, "now": 15728640,
          "change_percent": 50.0, "verdict": "failed", "against": "0001.json"}


def test_one_testcase_per_budget_and_gate_with_a_failure_for_each_broken_one():
    text = render_junit(run_of(
        saved("tests/test_agents.py::TestPlan::test_plan[2]", slo=[MET, MISSED], gates=[PASSED, FAILED]),
        saved("tests/test_agents.py::test_load", slo=[UNMEASURED]),
        saved("tests/test_agents.py::test_plain"),
    ))
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "3", "0")
    slo, gates = root.findall("testsuite")
    assert slo.get("name") == "pyagentbench.slo" and gates.get("name") == "pyagentbench.gates"
    assert (slo.get("tests"), slo.get("failures")) == ("3", "2")
    assert (gates.get("tests"), gates.get("failures")) == ("2", "1")
    for suite in (slo, gates):
        for attribute in ("errors", "skipped", "time", "timestamp", "hostname"):
            assert suite.get(attribute) is not None
    cases = slo.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("tests.test_agents.TestPlan.test_plan[2]", "slo p99=200ms"),
        ("tests.test_agents.TestPlan.test_plan[2]", "slo max_rss=1MB"),
        ("tests.test_agents.test_load", "slo min_throughput=5"),
    ]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure.get("message") == MISSED["message"]
    assert failure.get("type") == "SLOBudgetMissed"
    assert failure.text.startswith("tests/test_agents.py::TestPlan::test_plan[2]: SLO budget max_rss")
    unmeasured = cases[2].find("failure")
    assert unmeasured.get("type") == "SLOBudgetNotMeasured"
    assert "not measured" in unmeasured.get("message")
    passed, failed = gates.findall("testcase")
    assert passed.get("name") == "gate allocs_per_call:10%" and passed.find("failure") is None
    assert failed.find("failure").get("message") == (
        "regression gate peak_rss:20% failed: peak_rss 10 MiB -> 15 MiB (+50.0%) (against 0001.json)")


def test_markup_in_names_and_messages_is_escaped():
    budget = dict(MISSED, message='broken: <"&"> measured')
    root = ET.fromstring(render_junit(run_of(saved("t.py::test_x[<a&b>]", slo=[budget]))))
    case = root.find("testsuite/testcase")
    assert case.get("classname") == "t.test_x[<a&b>]"
    assert case.find("failure").get("message") == 'broken: <"&"> measured'


def test_a_run_without_budgets_or_gates_is_valid_and_empty():
    text = render_junit(run_of(saved("t.py::test_plain")))
    root = ET.fromstring(text)
    assert root.get("tests") == "0" and root.get("failures") == "0"
    assert [s.get("tests") for s in root.findall("testsuite")] == ["0", "0"]
    assert JUNIT_MARKER in text[:512]
