"""The Markdown report of a saved run: what each cell says, which rows and columns appear, the
saved verdicts, the changes against a baseline, and refusing what is not a run.

Each document here is written by hand, so every expected cell follows from its numbers.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest

from pyagentbench.results.compare import parse_gates
from pyagentbench.results.report import (
    REPORT_MARKER,
    read_run,
    refuse_unless_new_or_own,
    render_markdown,
    run_from_document,
    write_new_or_own,
)
from pyagentbench.results.verdicts import baseline_changes


def stats(mean: float = 1e-3, median: float = 1e-3, rounds: int = 10, iqr: float = 0.0,
          iterations: int = 1) -> dict[str, Any]:
    return {"min": median, "max": median, "mean": mean, "stddev": 0.0, "median": median,
            "rounds": rounds, "iqr": iqr, "iterations": iterations}


def entry(fullname: str, record: dict[str, Any] | None = None, params: dict | None = None,
          **stat: Any) -> dict[str, Any]:
    name = fullname.split("::")[-1]
    return {"name": name, "fullname": fullname, "group": None, "params": params,
            "stats": stats(**stat), "extra_info": {"agentbench": record} if record is not None else {}}


def document(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    data = {"machine_info": {"node": "ci-7", "system": "Linux", "python_implementation": "CPython",
                             "python_version": "3.11.7", "cpu": {"count": 2}},
            "commit_info": {"id": "0123456789abcdef", "branch": "main", "dirty": True},
            "datetime": "2026-12-03T12:00:00+00:00", "benchmarks": list(entries)}
    data.update(top)
    return data


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is *first_cell*."""
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [cell.strip() for cell in line.strip("|").split(" | ")]
    raise AssertionError(f"no row {first_cell} in:\n{text}")


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


LOAD_RECORD = {
    "latency_p50_s": 0.002, "latency_p95_s": 0.004, "latency_p99_s": 0.008, "latency_mean_s": 0.0025,
    "throughput_per_s": 400.0, "error_rate": 0.02, "completed": 98, "failed": 2,
    "load_duration_s": 0.25, "achieved_concurrency": 3.5, "load_mode": "closed",
    "errors_by_type": {"TimeoutError": 2}, "peak_rss_bytes": 3 << 20, "cpu_percent": 45.0,
}


def test_a_load_run_shows_its_latencies_throughput_errors_memory_and_cpu():
    run = run_from_document(document(entry("t.py::test_load", LOAD_RECORD)), "run.json")
    text = render_markdown(run)
    assert text.startswith(REPORT_MARKER + "\n# Performance test report")
    header = table_row(text, "Benchmark")
    row = table_row(text, "`test_load`")
    cells = dict(zip(header, row))
    assert cells["p50"] == "2 ms"
    assert cells["p95"] == "4 ms"
    assert cells["p99"] == "8 ms"
    assert cells["mean"] == "2.5 ms"
    assert cells["throughput"] == "400 tasks/s"
    assert cells["errors"] == "2 %"
    assert cells["peak memory"] == "3 MiB"
    assert cells["CPU"] == "45%"
    assert "allocs/call" not in header  # no benchmark counted allocations: no column


def test_the_header_names_run_date_commit_and_machine():
    text = render_markdown(run_from_document(document(entry("t.py::test_a", {})), "runs/0001.json"))
    assert "- Run: `runs/0001.json`" in text
    assert "- Date: 2026-12-03 12:00:00 UTC" in text
    assert "- Commit: `0123456789ab` on `main` (with uncommitted changes)" in text
    assert "- Machine: 2 CPUs, Linux, CPython 3.11.7, host ci-7" in text
    assert "**1 benchmark**" in text


def test_a_plain_pytest_benchmark_row_takes_mean_and_median_from_its_stats():
    text = render_markdown(run_from_document(
        document(entry("t.py::test_plain", None, mean=3e-6, median=2e-6)), "r"))
    cells = dict(zip(table_row(text, "Benchmark"), table_row(text, "`test_plain`")))
    assert cells == {"Benchmark": "`test_plain`", "p50": "2 us", "mean": "3 us"}


def test_the_scenario_names_test_params_and_the_recorded_load_settings():
    text = render_markdown(run_from_document(document(
        entry("t.py::test_load[4]", LOAD_RECORD, params={"workers": 4}, rounds=98),
        entry("t.py::test_plan", {"mean_s": 1e-6}, rounds=200, iterations=50),
    ), "r"))
    scenarios = section(text, "## Scenarios")
    assert table_row(scenarios, "`test_load[4]`") == [
        "`test_load[4]`", "`t.py::test_load[4]`", "workers=4",
        "closed loop, 98 tasks (2 failed), in 250 ms, concurrency 3.50 achieved", "98"]
    assert table_row(scenarios, "`test_plan`")[3:] == ["-", "200 rounds of 50 calls"]


def test_benchmarks_with_the_same_short_name_are_shown_by_full_name():
    text = render_markdown(run_from_document(document(
        entry("a.py::test_x", {"mean_s": 1e-3}), entry("b.py::test_x", {"mean_s": 2e-3})), "r"))
    header = table_row(text, "Benchmark")
    assert dict(zip(header, table_row(text, "`a.py::test_x`")))["mean"] == "1 ms"
    assert dict(zip(header, table_row(text, "`b.py::test_x`")))["mean"] == "2 ms"


def test_a_pipe_in_a_name_does_not_break_the_table():
    text = render_markdown(run_from_document(document(entry("t.py::test_x[a|b]", {"mean_s": 1e-3})), "r"))
    row = [line for line in text.splitlines() if line.startswith("| `test_x")][0]
    assert row.startswith("| `test_x[a\\|b]` |")
    assert row.count(" | ") == row.replace("\\|", "").count(" | ")


def budget(keyword: str, metric: str, limit: float, text: str, value: float | None, verdict: str,
           bound: str = "max") -> dict[str, Any]:
    return {"keyword": keyword, "metric": metric, "bound": bound, "limit": limit, "limit_text": text,
            "value": value, "verdict": verdict, "message": ""}


def test_saved_budgets_show_limit_measured_value_and_verdict():
    record = {"mean_s": 1e-3, "p99_s": 0.25, "allocs_per_call": 12.0, "slo": [
        budget("p99", "p99", 0.2, "200ms", 0.25, "missed"),
        budget("max_allocs_per_call", "allocs_per_call", 20, "20", 12.0, "met"),
        budget("min_throughput", "throughput", 100, "100", None, "not measured", "min"),
    ]}
    text = render_markdown(run_from_document(document(entry("t.py::test_a", record)), "r"))
    budgets = section(text, "## SLO budgets")
    rows = [line for line in budgets.splitlines() if line.startswith("| `test_a`")]
    assert [cell.strip() for cell in rows[0].strip("|").split(" | ")] == [
        "`test_a`", "p99", "at most 200ms", "250 ms", "**MISSED**"]
    assert rows[1].endswith("| at most 20 | 12 | MET |")
    assert rows[2].endswith("| at least 100 | - | **NOT MEASURED** |")
    assert "SLO budgets: 1 met, 2 missed" in text


def test_saved_gates_show_baseline_now_change_and_verdict():
    gate = {"gate": "peak_rss:20%", "metric": "peak_rss", "baseline": 10 << 20, "now": 15 << 20,
            "change_percent": 50.0, "verdict": "failed", "against": "0001_base.json"}
    record = {"peak_rss_bytes": 15 << 20, "gates": [gate]}
    text = render_markdown(run_from_document(document(entry("t.py::test_a", record)), "r"))
    gates = section(text, "## Regression gates")
    assert gates.startswith("## Regression gates (against `0001_base.json`)")
    assert table_row(gates, "`test_a`") == ["`test_a`", "peak_rss:20%", "10 MiB", "15 MiB", "+50.0%",
                                            "**FAILED**"]
    assert "regression gates: 0 passed, 1 failed" in text


def test_a_report_without_budgets_or_gates_has_no_such_sections():
    text = render_markdown(run_from_document(document(entry("t.py::test_a", {"mean_s": 1e-3})), "r"))
    assert "## SLO budgets" not in text
    assert "## Regression gates" not in text
    assert "## Against the baseline" not in text


def test_against_a_baseline_it_lists_regressions_and_improvements():
    base = run_from_document(document(
        entry("t.py::test_a", {"allocs_per_call": 100.0, "mean_s": 1e-3}),
        entry("t.py::test_b", {"throughput_per_s": 1000.0})), "base")
    now = run_from_document(document(
        entry("t.py::test_a", {"allocs_per_call": 150.0, "mean_s": 1.05e-3}),
        entry("t.py::test_b", {"throughput_per_s": 1500.0})), "now")
    changes = baseline_changes(parse_gates("allocs_per_call:10%,mean:10%,throughput:10%"),
                               now.records(), base.records())
    text = render_markdown(now, base, changes)
    regressions = text[text.index("### Regressions"):text.index("### Improvements")]
    improvements = text[text.index("### Improvements"):text.index("## Scenarios")]
    assert table_row(regressions, "`test_a`") == ["`test_a`", "allocs_per_call", "100", "150", "+50.0%",
                                                  "allocs_per_call:10%"]
    assert "mean" not in regressions  # +5% is within the 10% threshold
    assert table_row(improvements, "`test_b`")[1:5] == ["throughput", "1 ktasks/s", "1.5 ktasks/s",
                                                        "+50.0%"]
    assert "against the baseline: 1 regression, 1 improvement" in text
    assert "- Baseline: `base`, 2026-12-03 12:00:00 UTC" in text


def test_an_empty_run_says_so():
    text = render_markdown(run_from_document(document(), "r"))
    assert "**0 benchmarks**" in text
    assert "The run holds no benchmarks." in text


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "a list, not a pytest-benchmark run"),
    ({"benchmarks": [{"name": "x"}]}, "has no 'fullname'"),
    (document(entry("t.py::test_a", {"peak_rss_bytes": "big"})),
     "t.py::test_a: extra_info.agentbench.peak_rss_bytes is a string ('big'), not a number"),
    (document(entry("t.py::test_a", {"slo": [{"verdict": "fine"}]})),
     "t.py::test_a: extra_info.agentbench.slo[0] is not a saved verdict"),
    (document(entry("t.py::test_a", {"gates": {"verdict": "passed"}})),
     "t.py::test_a: extra_info.agentbench.gates is not a list"),
])
def test_what_is_not_a_run_is_an_error_naming_the_source_and_problem(data, problem):
    with pytest.raises(ValueError) as exc:
        run_from_document(data, "saved/0003_x.json")
    assert str(exc.value).startswith("saved/0003_x.json: ")
    assert problem in str(exc.value)


@pytest.mark.parametrize("content, problem", [
    (b"", "the file is empty"),
    (b'{"benchmarks": [', "not valid JSON (truncated"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_an_unreadable_file_is_an_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "0001_bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        read_run(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert problem in str(exc.value)


def test_read_run_reads_a_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document(entry("t.py::test_a", {"mean_s": 1e-3}))))
    run = read_run(path)
    assert run.source == str(path)
    assert [b.fullname for b in run.benchmarks] == ["t.py::test_a"]


# ---- writing without losing anything ----


def test_write_creates_a_new_file_and_replaces_its_own(tmp_path):
    path = tmp_path / "report.md"
    write_new_or_own(path, REPORT_MARKER + "\nfirst\n", REPORT_MARKER)
    write_new_or_own(path, REPORT_MARKER + "\nsecond\n", REPORT_MARKER)
    assert path.read_text() == REPORT_MARKER + "\nsecond\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary file left


def test_write_gives_a_new_file_the_usual_permissions_and_keeps_those_of_a_replaced_one(tmp_path):
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.md"
        write_new_or_own(new, REPORT_MARKER + "\n", REPORT_MARKER)
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # as open() with umask 022, not mkstemp's 0600
        new.chmod(0o640)
        write_new_or_own(new, REPORT_MARKER + "\nagain\n", REPORT_MARKER)
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_write_refuses_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("my notes\n")
    with pytest.raises(ValueError, match="notes.md exists and was not written by pyagentbench"):
        write_new_or_own(path, REPORT_MARKER + "\nreport\n", REPORT_MARKER)
    assert path.read_text() == "my notes\n"


def test_write_refuses_a_missing_folder_and_a_folder(tmp_path):
    with pytest.raises(ValueError, match="the folder .*nowhere does not exist"):
        refuse_unless_new_or_own(tmp_path / "nowhere" / "r.md", REPORT_MARKER)
    with pytest.raises(ValueError, match="is a folder"):
        refuse_unless_new_or_own(tmp_path, REPORT_MARKER)


def test_a_failed_write_leaves_the_old_report_whole(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text(REPORT_MARKER + "\nold\n")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_new_or_own(path, REPORT_MARKER + "\nnew\n", REPORT_MARKER)
    assert path.read_text() == REPORT_MARKER + "\nold\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
