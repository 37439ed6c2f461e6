"""``pyagentbench compare`` end to end, as a user runs it: save a baseline with pytest, slow one
benchmark down by a known factor, save again, compare, and read the exit status and the text.
Also the plugin's side of it: what a saved run holds, and --agentbench-alpha."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_benchmark.utils import get_machine_id

from pyagentbench.results.compare import FINGERPRINT_KEY
from pyagentbench.results.samples import SAMPLES_KEY

pytest_plugins = ["pytester"]

# At least 32 rounds, so each run keeps 16 time-ordered blocks of rounds.
FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.1", "--benchmark-min-rounds=64")

# Each call spins for a fixed wall time: a machine busy with other work stretches a round only
# when it takes the CPU away, so the factor between runs is what the test sets.
SUITE = """
import os
import time

FACTOR = float(os.environ.get("COMPARE_TEST_FACTOR", "1"))


def spin(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def test_changed(agent_benchmark):
    agent_benchmark(spin, 200e-6 * FACTOR)


def test_steady(agent_benchmark):
    agent_benchmark(spin, 200e-6)
"""


def command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyagentbench", "compare", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def save_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, factor: float, *extra: str):
    monkeypatch.setenv("COMPARE_TEST_FACTOR", str(factor))
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-only", "--benchmark-autosave", *extra)
    result.assert_outcomes(passed=2)
    return result


def storage(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".benchmarks" / get_machine_id()


def test_a_benchmark_made_slower_fails_compare_and_the_other_passes(pytester, monkeypatch):
    pytester.makepyfile(test_agents=SUITE)
    save_run(pytester, monkeypatch, 1.0)
    save_run(pytester, monkeypatch, 1.5)

    proc = command(pytester.path, "0001")  # NOW: the latest saved run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "FAILED test_agents.py::test_changed: p50" in out
    assert "FAILED test_agents.py::test_steady" not in out
    assert "1 gate failure(s) of p50:10%" in out
    (changed,) = [line for line in out.splitlines() if line.startswith("test_agents.py::test_changed ") and " p50 " in line]
    change = float(changed.split("%")[0].split()[-1])
    assert 35 < change < 65  # 1.5x
    assert "regressed" in changed and "p50:10% FAILED" in changed
    (steady,) = [line for line in out.splitlines() if line.startswith("test_agents.py::test_steady ") and " p50 " in line]
    assert "p50:10% ok" in steady
    assert "geometric mean" in out

    # The same pair by number, as Markdown and JSON; the reverse is an improvement and passes.
    markdown = command(pytester.path, "0001", "0002", "--format", "markdown")
    assert markdown.returncode == 1
    assert "| test | metric | baseline | now | change | 95% CI | p | verdict | gate |" in markdown.stdout
    data = json.loads(command(pytester.path, "0001", "latest", "--format", "json").stdout)
    (row,) = [r for r in data["rows"] if r["name"] == "test_agents.py::test_changed" and r["metric"] == "p50"]
    assert row["verdict"] == "regressed" and row["failed"] and row["p_value"] < 0.01
    assert row["ci_percent"][0] > 10
    reverse = command(pytester.path, "0002", "0001", "--columns", "test,metric,change,verdict")
    assert reverse.returncode == 0, reverse.stdout
    assert "improved" in reverse.stdout and "gates p50:10% passed" in reverse.stdout

    # A gate beyond the change passes; --alpha too strict for 16 blocks a side passes too.
    assert command(pytester.path, "0001", "--fail", "p50:80%").returncode == 0
    assert command(pytester.path, "0001", "--alpha", "1e-9").returncode == 0


def test_the_plugin_saves_round_times_and_the_environment(pytester, monkeypatch):
    pytester.makepyfile(test_agents=SUITE)
    save_run(pytester, monkeypatch, 1.0)
    (path,) = storage(pytester).glob("0001_*.json")
    data = json.loads(path.read_text())
    environment = data[FINGERPRINT_KEY]
    assert set(environment) >= {"cpu", "cores", "python", "python_build", "os", "pyagentbench", "clock"}
    assert "machine_info" in data and FINGERPRINT_KEY not in data["machine_info"]
    # pytest-benchmark's own compare against it sees the machine_info it expects: no warning.
    again = pytester.runpytest_subprocess(*FAST, "--benchmark-only", "--benchmark-compare", "-W", "error")
    assert again.ret == 0, again.stdout.str()
    assert "machine_info is different" not in again.stdout.str() + again.stderr.str()
    for bench in data["benchmarks"]:
        summary = bench["extra_info"]["agentbench"][SAMPLES_KEY]
        assert summary["count"] == bench["stats"]["rounds"]
        assert len(json.dumps(summary)) <= 8192
        assert len(summary["blocks"]) == 16


def test_a_suite_without_agent_benchmark_saves_what_pytest_benchmark_saves(pytester):
    pytester.makepyfile(test_plain="def test_plain(benchmark):\n    benchmark(sum, range(10))\n")
    pytester.runpytest_subprocess(*FAST, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=1)
    (path,) = storage(pytester).glob("0001_*.json")
    data = json.loads(path.read_text())
    assert FINGERPRINT_KEY not in data
    assert data["benchmarks"][0]["extra_info"] == {}


def test_the_plugin_gate_is_tested_at_agentbench_alpha(pytester, monkeypatch):
    pytester.makepyfile(test_agents=SUITE)
    save_run(pytester, monkeypatch, 1.0)
    monkeypatch.setenv("COMPARE_TEST_FACTOR", "1.5")
    gated = ("--benchmark-only", "--benchmark-compare", "--agentbench-compare-fail=p50:10%")
    strict = pytester.runpytest_subprocess(*FAST, *gated, "--agentbench-alpha=1e-9")
    assert strict.ret == 0, strict.stdout.str()
    default = pytester.runpytest_subprocess(*FAST, *gated)
    assert default.ret == 1
    default.stdout.fnmatch_lines(["*agentbench: regressions against the baseline*",
                                  "*test*metric*baseline*now*change*95% CI*p*gate*",
                                  "*test_changed*p50*[[]+*%, +*%[]]*p50:10%*"])
    bad = pytester.runpytest_subprocess(*FAST, "--benchmark-only", "--agentbench-alpha=2")
    assert bad.ret == 4
    bad.stderr.fnmatch_lines(["*--agentbench-alpha must be between 0 and 1*"])


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


GOOD = json.dumps({"machine_info": {}, "benchmarks": [{
    "name": "test_a", "fullname": "t.py::test_a",
    "stats": {"min": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0.0, "median": 1.0, "rounds": 1}}]})


@pytest.mark.parametrize("text, problem", [
    (GOOD[:40], "not valid JSON (truncated"),
    ("", "the file is empty"),
    ('{"benchmarks": [{"name": "x"}]}', "benchmarks[0] (name 'x') has no 'fullname'"),
    (GOOD.replace('"median": 1.0', '"median": "fast"'), "t.py::test_a: stats.median is a string"),
])
def test_an_unreadable_run_exits_2_naming_the_file_and_the_problem(tmp_path, text, problem):
    folder = tmp_path / ".benchmarks" / get_machine_id()
    write(folder, "0001_base.json", GOOD)
    bad = write(folder, "0002_bad.json", text)
    proc = command(tmp_path, "0001", "0002")
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("pyagentbench compare: error: ")
    assert str(bad.relative_to(tmp_path)) in line and problem in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["0009"], "no saved run '0009'"),
    (["missing.json"], "missing.json: no such file"),
    (["0001", "0001"], "BASE and NOW are the same run"),
    (["0001", "--fail", "p50:ten%"], "--fail: bad gate 'p50:ten%'"),
    (["0001", "--columns", "test,colour"], "--columns: unknown column 'colour'"),
    (["0001", "--metrics", "p50,speed"], "--metrics: unknown metric 'speed'"),
    (["0001", "--alpha", "0"], "alpha must be between 0 and 1"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    folder = tmp_path / ".benchmarks" / get_machine_id()
    write(folder, "0001_base.json", GOOD)
    write(folder, "0002_now.json", GOOD)
    proc = command(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout
    (line,) = proc.stderr.splitlines()
    assert message in line


def test_no_saved_runs_says_how_to_make_one(tmp_path):
    proc = command(tmp_path, "latest")
    assert proc.returncode == 2
    assert "no saved runs in .benchmarks" in proc.stderr and "--benchmark-autosave" in proc.stderr


def test_storage_and_names(tmp_path):
    folder = tmp_path / "elsewhere" / "Some-Other-Machine"
    write(folder, "0001_main.json", GOOD)
    write(folder, "0002_feature.json", GOOD)
    write(folder, "0003_feature.json", GOOD)
    proc = command(tmp_path, "main", "0002", "--storage", "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert "elsewhere/Some-Other-Machine/0001_main.json" in proc.stdout
    ambiguous = command(tmp_path, "main", "feature", "--storage", "elsewhere")
    assert ambiguous.returncode == 2
    assert "'feature' names 2 saved runs" in ambiguous.stderr and "give its number" in ambiguous.stderr
    missing = command(tmp_path, "nightly", "--storage", "elsewhere")
    assert "no saved run 'nightly'" in missing.stderr and "0001_main, 0002_feature, 0003_feature" in missing.stderr


def test_a_load_run_saves_each_tasks_service_time(pytester):
    pytester.makepyfile(test_load="""
def test_load(agent_benchmark):
    agent_benchmark.throughput(lambda payload: sum(range(100)), range(200), concurrency=4)
""")
    pytester.runpytest_subprocess(*FAST, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=1)
    (path,) = storage(pytester).glob("0001_*.json")
    (bench,) = json.loads(path.read_text())["benchmarks"]
    summary = bench["extra_info"]["agentbench"][SAMPLES_KEY]
    assert summary["count"] == 200 == bench["stats"]["rounds"]
