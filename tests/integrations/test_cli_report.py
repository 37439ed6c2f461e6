"""``pyagentbench report`` and ``pyagentbench list`` end to end, as a user runs them: a suite saved
twice with ``pytest --benchmark-autosave`` (the second time allocating more per call), then the
command in a subprocess in that folder; the exit status and the text it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_benchmark.utils import get_machine_id

SUITE = """
import os

import pytest

ITEMS = int(os.environ.get("AGENTBENCH_TEST_ITEMS", "10"))


def plan():
    return [[None] for _ in range(ITEMS)]  # ITEMS inner lists and a few more: 14 on CPython 3.11


@pytest.mark.slo(max_allocs_per_call=25)
def test_plan(agent_benchmark):
    agent_benchmark(plan)


def test_plain(benchmark):
    benchmark(sum, [1, 2, 3])
"""

FAST = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--benchmark-max-time=0.05",
        "--benchmark-min-rounds=3", "-o", "asyncio_default_fixture_loop_scope=function")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k != "GITHUB_STEP_SUMMARY"}
    env.update(extra)
    return env


def pytest_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *FAST, *args], cwd=folder,
                          env=clean_env(**env), capture_output=True, text=True, timeout=600)


def command(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyagentbench", *args], cwd=folder, env=clean_env(),
                          capture_output=True, text=True, timeout=120)


def cells(text: str, first: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"| {first} |"):
            return [cell.strip() for cell in line.strip("|").split(" | ")]
    raise AssertionError(f"no row {first} in:\n{text}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose storage holds 0001 (10 items per call) and 0002 (40 items: more allocations
    per call, breaking the 25-allocation budget)."""
    folder = tmp_path_factory.mktemp("agent-repo")
    (folder / "test_agents.py").write_text(SUITE)
    first = pytest_in(folder, "--benchmark-autosave")
    assert first.returncode == 0, first.stdout + first.stderr
    second = pytest_in(folder, "--benchmark-autosave", AGENTBENCH_TEST_ITEMS="40")
    assert second.returncode == 1, second.stdout + second.stderr  # the budget failed the test
    return folder


def storage(folder: Path) -> Path:
    return folder / ".benchmarks" / get_machine_id()


def allocs(folder: Path, run: str) -> float:
    """test_plan's saved allocations per call in the run *run* ("0001"). The exact count depends on
    the CPython version (its free lists, inlined comprehensions); what is known is that each of
    the ITEMS inner lists allocates, and that the overhead is small: 10 + 4 on 3.11."""
    (path,) = storage(folder).glob(f"{run}_*.json")
    entries = {e["name"]: e for e in json.loads(path.read_text())["benchmarks"]}
    return entries["test_plan"]["extra_info"]["agentbench"]["allocs_per_call"]


def test_the_saved_allocations_are_what_the_suite_makes(project):
    assert 10 <= allocs(project, "0001") <= 25  # within the budget
    assert allocs(project, "0002") - allocs(project, "0001") == 30  # 30 more inner lists


def test_report_of_the_latest_run(project):
    result = command(project, "report", "0001")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("<!-- pyagentbench report -->\n# Performance test report\n")
    assert f"- Run: `{storage(project).relative_to(project) / '0001_'}" in text
    assert "**2 benchmarks · SLO budgets: 1 met, 0 missed**" in text
    header = cells(text, "Benchmark")
    plan = dict(zip(header, cells(text, "`test_plan`")))
    assert plan["allocs/call"] == f"{allocs(project, '0001'):g}"
    assert plan["p50"].endswith("s") and plan["p99"].endswith("s")
    plain = dict(zip(header, cells(text, "`test_plain`")))
    assert plain["allocs/call"] == "-"
    budget = cells(text[text.index("## SLO budgets"):], "`test_plan`")
    assert budget == ["`test_plan`", "max_allocs_per_call", "at most 25", f"{allocs(project, '0001'):g}",
                      "MET"]
    assert cells(text[text.index("## Scenarios"):], "`test_plan`")[1] == "`test_agents.py::test_plan`"


def test_report_without_a_run_takes_the_latest_and_exits_1_on_its_missed_budget(project):
    result = command(project, "report")
    assert result.returncode == 1, result.stderr
    assert "/0002_" in result.stdout.splitlines()[3]
    budget = cells(result.stdout[result.stdout.index("## SLO budgets"):], "`test_plan`")
    assert budget == ["`test_plan`", "max_allocs_per_call", "at most 25", f"{allocs(project, '0002'):g}",
                      "**MISSED**"]


def test_report_against_a_baseline_lists_the_regression(project):
    result = command(project, "report", "latest", "--baseline", "1", "--fail", "allocs_per_call:10%")
    assert result.returncode == 1, result.stderr
    text = result.stdout
    assert "against the baseline: 1 regression, 0 improvements" in text
    regressions = text[text.index("### Regressions"):text.index("### Improvements")]
    before, after = allocs(project, "0001"), allocs(project, "0002")
    assert cells(regressions, "`test_plan`") == ["`test_plan`", "allocs_per_call", f"{before:g}",
                                                 f"{after:g}", f"{(after - before) / before * 100:+.1f}%",
                                                 "allocs_per_call:10%"]


def test_report_of_a_file_given_by_path(project):
    (saved,) = storage(project).glob("0001_*.json")
    result = command(project, "report", str(saved))
    assert result.returncode == 0, result.stderr
    assert f"- Run: `{saved}`" in result.stdout


def test_report_to_a_file_replaces_only_its_own(project, tmp_path):
    out = tmp_path / "perf.md"
    for _ in range(2):  # the second time it replaces the report it wrote
        result = command(project, "report", "0001", "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("wrote the report of ")
    assert out.read_text().startswith("<!-- pyagentbench report -->\n")
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    result = command(project, "report", "0001", "-o", str(notes))
    assert result.returncode == 2
    assert result.stderr == (f"pyagentbench report: error: {notes} exists and was not written by "
                             "pyagentbench; remove it or choose another file name\n")
    assert notes.read_text() == "my notes\n"


def test_an_unknown_run_is_exit_2_saying_what_exists(project):
    result = command(project, "report", "0009")
    assert result.returncode == 2
    assert result.stderr.startswith("pyagentbench report: error: no saved run '0009' in .benchmarks ")
    assert "0002_" in result.stderr and "see pyagentbench list" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_gates_are_exit_2(project):
    result = command(project, "report", "--baseline", "1", "--fail", "peak_rss:lots")
    assert result.returncode == 2
    assert result.stderr.startswith("pyagentbench report: error: --fail: bad gate 'peak_rss:lots'")


def test_list_shows_each_saved_run_oldest_first(project):
    result = command(project, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "date", "(UTC)", "commit", "machine", "benchmarks", "name"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["0001", "0002"]
    for row in rows:  # id, date, time, commit, machine, benchmarks, name
        assert row[3] == "unversioned"  # the folder is no git repository
        assert row[4] == get_machine_id()
        assert row[5] == "2"
    assert rows[0][1:3] <= rows[1][1:3]  # dates, oldest first


def test_list_of_a_missing_storage_is_exit_2(tmp_path):
    result = command(tmp_path, "list", "--storage", "nowhere")
    assert result.returncode == 2
    assert result.stderr == ("pyagentbench list: error: the storage folder nowhere does not exist: "
                             "save a run first (pytest --benchmark-autosave), or give the folder "
                             "with --storage\n")


def test_report_with_an_empty_storage_is_exit_2(tmp_path):
    (tmp_path / ".benchmarks").mkdir()
    result = command(tmp_path, "report")
    assert result.returncode == 2
    assert "no saved runs in .benchmarks" in result.stderr


@pytest.fixture
def corrupt_project(project, tmp_path) -> Path:
    """A copy of the project's storage with a third run cut off mid-write."""
    folder = tmp_path / "repo"
    target = storage(folder)
    target.mkdir(parents=True)
    for saved in storage(project).glob("*.json"):
        (target / saved.name).write_text(saved.read_text())
    text = json.dumps(json.loads(next(target.glob("0001_*.json")).read_text()))
    (target / "0003_broken.json").write_text(text[:-40])
    return folder


def test_a_corrupt_run_is_exit_2_naming_the_file(corrupt_project):
    result = command(corrupt_project, "report", "0003")
    assert result.returncode == 2
    shown = storage(corrupt_project).relative_to(corrupt_project) / "0003_broken.json"
    assert result.stderr.startswith(f"pyagentbench report: error: {shown}: not valid JSON (truncated")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_a_corrupt_baseline_is_exit_2_naming_the_file(corrupt_project):
    result = command(corrupt_project, "report", "0001", "--baseline", "0003")
    assert result.returncode == 2
    assert "0003_broken.json: not valid JSON" in result.stderr


def test_list_shows_the_readable_runs_and_exits_2_naming_the_corrupt_one(corrupt_project):
    result = command(corrupt_project, "list")
    assert result.returncode == 2
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["0001", "0002", "0003"]
    assert "0003_broken.json: not valid JSON (truncated" in result.stderr


# ---- finding a saved run by what the user typed (storage folders made by hand) ----


def write_run(folder: Path, machine: str, stem: str, commit: str = "abc", dirty: bool = False,
              when: str = "2026-12-01T10:00:00+00:00", benchmarks: int = 1) -> Path:
    path = folder / ".benchmarks" / machine / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"name": f"test_{i}", "fullname": f"t.py::test_{i}",
                "stats": {"min": 1, "max": 1, "mean": 1, "stddev": 0, "median": 1, "rounds": 1}}
               for i in range(benchmarks)]
    path.write_text(json.dumps({"benchmarks": entries, "datetime": when,
                                "commit_info": {"id": commit, "dirty": dirty}}))
    return path


@pytest.fixture
def hand_made(tmp_path, monkeypatch) -> Path:
    here, other = get_machine_id(), "Darwin-CPython-3.12-64bit"
    write_run(tmp_path, here, "0001_9f1c2ab04e11_20261201_100000", commit="9f1c2ab04e11")
    write_run(tmp_path, here, "0002_baseline", commit="a0b1c2d3e4f5", dirty=True,
              when="2026-12-02T10:00:00+00:00", benchmarks=3)
    write_run(tmp_path, other, "0001_mac", when="2026-11-30T10:00:00+00:00")
    write_run(tmp_path, other, "0007_mac", when="2026-12-03T10:00:00+00:00")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("wanted, found", [
    (None, "0002_baseline"),
    ("latest", "0002_baseline"),  # this machine's latest, though another machine saved later
    ("0001", "0001_9f1c2ab04e11_20261201_100000"),  # this machine's 0001, not the other's
    ("1", "0001_9f1c2ab04e11_20261201_100000"),
    ("baseline", "0002_baseline"),  # the --benchmark-save name
    ("9f1c2ab04e11", "0001_9f1c2ab04e11_20261201_100000"),  # the commit id autosave put in the name
    ("0002_baseline", "0002_baseline"),
    ("Darwin-CPython-3.12-64bit/latest", "0007_mac"),
    ("Darwin-CPython-3.12-64bit/1", "0001_mac"),
])
def test_a_run_is_found_by_id_name_commit_or_machine(hand_made, wanted, found):
    from pyagentbench.integrations.cli.runs import resolve_run

    path, _ = resolve_run(wanted, ".benchmarks")
    assert path.stem == found


def test_a_name_matching_several_runs_is_an_error_listing_them(hand_made):
    from pyagentbench.integrations.cli.runs import resolve_run

    write_run(hand_made, get_machine_id(), "0003_baseline")
    with pytest.raises(ValueError, match=r"'baseline' names 2 saved runs in \.benchmarks: .*0002_baseline, "
                                         r".*0003_baseline; give the id or the file"):
        resolve_run("baseline", ".benchmarks")


def test_a_missing_json_file_is_no_such_file(hand_made):
    from pyagentbench.integrations.cli.runs import resolve_run

    with pytest.raises(ValueError, match="^old.json: no such file$"):
        resolve_run("old.json", ".benchmarks")


def test_list_marks_uncommitted_changes_and_counts_benchmarks(hand_made, capsys):
    from pyagentbench.integrations.cli import main

    assert main(["list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    # oldest first by saved date, across machine folders
    assert [(row[0], row[3], row[5]) for row in rows] == [
        ("0001", "abc", "1"), ("0001", "9f1c2ab04e11", "1"), ("0002", "a0b1c2d3e4f5*", "3"),
        ("0007", "abc", "1")]
    assert rows[0][4] == "Darwin-CPython-3.12-64bit"
