"""The plugin's reports, run as a user runs pytest: verdicts saved in the JSON,
``--agentbench-report``, ``--agentbench-junit``, and the GitHub Actions job summary."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")

SUITE = """
import os

import pytest

ITEMS = int(os.environ.get("AGENTBENCH_TEST_ITEMS", "10"))


def plan():
    return [[None] for _ in range(ITEMS)]  # ITEMS inner lists and a few more: 14 on CPython 3.11


@pytest.mark.slo(max_allocs_per_call=25, p99="10s")
def test_plan(agent_benchmark):
    agent_benchmark(plan)


@pytest.mark.slo(max_allocs_per_call=2)
def test_tight(agent_benchmark):
    agent_benchmark(plan)
"""

PLAIN_SUITE = """
def test_sum(benchmark):
    benchmark(sum, [1, 2, 3])


def test_nothing():
    assert True
"""


@pytest.fixture(autouse=True)
def _no_job_summary(monkeypatch):
    """The suites run here must not append to the job summary of a CI run of these tests."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*FAST, *args)


def saved_runs(pytester: pytest.Pytester) -> list:
    return sorted((pytester.path / ".benchmarks").rglob("*.json"))


def agentbench(entry: dict) -> dict:
    return entry["extra_info"]["agentbench"]


def test_budgets_are_saved_with_value_and_verdict(pytester):
    pytester.makepyfile(test_agents=SUITE)
    result = run(pytester, "--benchmark-autosave", "--benchmark-json=run.json")
    result.assert_outcomes(passed=1, failed=1)  # test_tight breaks its budget
    for path in saved_runs(pytester) + [pytester.path / "run.json"]:
        entries = {e["name"]: e for e in json.loads(path.read_text())["benchmarks"]}
        record = agentbench(entries["test_plan"])
        assert 10 <= record["allocs_per_call"] <= 25  # ten inner lists and a little more
        assert [(v["keyword"], v["value"], v["verdict"]) for v in record["slo"]] == [
            ("max_allocs_per_call", record["allocs_per_call"], "met"), ("p99", record["p99_s"], "met")]
        measured = agentbench(entries["test_tight"])["allocs_per_call"]
        (tight,) = agentbench(entries["test_tight"])["slo"]
        assert (tight["limit"], tight["value"], tight["verdict"]) == (2.0, measured, "missed")
        assert tight["message"] == ("SLO budget max_allocs_per_call='2' broken: measured "
                                    f"allocs_per_call = {measured:g}, above the budget of 2")


def test_gate_verdicts_are_in_the_saved_run_the_report_and_the_junit_file(pytester, monkeypatch):
    pytester.makepyfile(test_agents=SUITE)
    run(pytester, "--benchmark-autosave").assert_outcomes(passed=1, failed=1)
    monkeypatch.setenv("AGENTBENCH_TEST_ITEMS", "40")
    result = run(pytester, "--benchmark-autosave", "--benchmark-compare",
                 "--agentbench-compare-fail=allocs_per_call:10%",
                 "--agentbench-report=perf.md", "--agentbench-junit=perf.xml")
    assert result.ret == 1
    first, second = saved_runs(pytester)
    entries = {e["name"]: e for e in json.loads(second.read_text())["benchmarks"]}
    saved_first = {e["name"]: e for e in json.loads(first.read_text())["benchmarks"]}
    before = agentbench(saved_first["test_plan"])["allocs_per_call"]
    after = agentbench(entries["test_plan"])["allocs_per_call"]
    assert after - before == 30  # 30 more inner lists
    (gate,) = agentbench(entries["test_plan"])["gates"]
    assert (gate["gate"], gate["baseline"], gate["now"], gate["verdict"]) == (
        "allocs_per_call:10%", before, after, "failed")
    row = f"| {before:g} | {after:g} | {(after - before) / before * 100:+.1f}% | **FAILED** |"
    assert gate["against"].endswith(first.name)
    assert "gates" not in agentbench(saved_first["test_plan"])  # the first run had no baseline

    result.stdout.fnmatch_lines(["agentbench: wrote the report to perf.md",
                                 "agentbench: wrote the JUnit XML to perf.xml"])
    report = (pytester.path / "perf.md").read_text()
    assert report.startswith("<!-- pyagentbench report -->\n# Performance test report\n")
    assert "SLO budgets: 1 met, 2 missed · regression gates: 0 passed, 2 failed" in report
    assert "| `test_plan` | allocs_per_call:10% " + row in report
    assert f"| `test_plan` | max_allocs_per_call | at most 25 | {after:g} | **MISSED** |" in report

    root = ET.parse(pytester.path / "perf.xml").getroot()
    assert (root.tag, root.get("name"), root.get("tests"), root.get("failures")) == (
        "testsuites", "pyagentbench", "5", "4")
    slo, gates = root.findall("testsuite")
    assert [(c.get("classname"), c.get("name"), c.find("failure") is not None)
            for c in slo.findall("testcase")] == [
        ("test_agents.test_plan", "slo max_allocs_per_call=25", True),
        ("test_agents.test_plan", "slo p99=10s", False),
        ("test_agents.test_tight", "slo max_allocs_per_call=2", True),
    ]
    failure = gates.find("testcase[@name='gate allocs_per_call:10%']/failure")
    assert failure.get("message").startswith(
        f"regression gate allocs_per_call:10% failed: allocs_per_call {before:g} -> {after:g} "
        f"({(after - before) / before * 100:+.1f}%)")

    # The same verdicts, read back from the saved run by the command.
    proc = subprocess.run([sys.executable, "-m", "pyagentbench", "report"], cwd=pytester.path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "| `test_plan` | allocs_per_call:10% " + row in proc.stdout


def test_the_report_is_appended_to_the_github_job_summary(pytester, monkeypatch):
    pytester.makepyfile(test_agents=SUITE)
    summary = pytester.path / "step_summary.md"
    summary.write_text("## Earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(pytester).assert_outcomes(passed=1, failed=1)
    text = summary.read_text()
    assert text.startswith("## Earlier step\n<!-- pyagentbench report -->\n# Performance test report\n")
    assert "| `test_tight` | max_allocs_per_call | at most 2 | " in text
    assert "| **MISSED** |" in text
    assert not list(pytester.path.glob("*.xml"))  # nothing asked for, nothing else written


def test_a_suite_without_agent_benchmarks_writes_no_job_summary(pytester, monkeypatch):
    pytester.makepyfile(test_plain=PLAIN_SUITE)
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run(pytester)
    result.assert_outcomes(passed=2)
    assert not summary.exists()
    assert "agentbench:" not in result.stdout.str()


def test_a_report_path_holding_another_file_is_a_usage_error_before_the_run(pytester):
    pytester.makepyfile(test_agents=SUITE)
    (pytester.path / "notes.md").write_text("my notes\n")
    result = run(pytester, "--agentbench-report=notes.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentbench-report: notes.md exists and was not written by "
                                 "pyagentbench; remove it or choose another file name"])
    assert (pytester.path / "notes.md").read_text() == "my notes\n"
    assert "passed" not in result.stdout.str()


def test_options_are_listed_in_help(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--agentbench-report=PATH*", "*--agentbench-junit=PATH*"])
