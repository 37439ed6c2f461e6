"""``pytest --agentbench-instructions`` and ``pyagentbench instructions``, run the way users run them.

The runs under valgrind are slow (pytest itself runs under callgrind), so one test makes the three
runs a user makes: save a baseline, run the same code again (A/A: identical counts, gate passes),
then add 1% more work to one benchmark (the gate fails, exit 1, naming that benchmark only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")

SUITE = """
import pytest

N = {n}

def loop():
    total = 0
    for i in range(N):
        total += i * i
    return total

def noop():
    pass

def make_list():
    return [None] * 10

def test_loop(agent_benchmark):
    assert agent_benchmark(loop) == sum(i * i for i in range(N))

def test_noop(agent_benchmark):
    agent_benchmark(noop)

@pytest.mark.slo(max_instructions_per_call=1_000_000)
def test_list(agent_benchmark):
    assert agent_benchmark.pedantic(make_list, rounds=3) == [None] * 10
"""

IMPORTS_CONFTEST = """
import sys

def pytest_sessionfinish(session):
    loaded = sorted(m for m in sys.modules
                    if m.endswith((".callgrind", ".instructions")) and m.startswith("pyagentbench"))
    print("LOADED", loaded)
"""


def test_a_plain_run_loads_none_of_the_instruction_counting(pytester):
    pytester.makepyfile(test_suite=SUITE.format(n=100))
    pytester.makeconftest(IMPORTS_CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--benchmark-max-time=0.01")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*LOADED []*"])
    assert "instr/call" not in result.stdout.str()


def test_without_valgrind_the_error_says_how_to_install_it(pytester, tmp_path):
    pytester.makepyfile(test_suite=SUITE.format(n=100))
    empty = tmp_path / "empty-path"
    empty.mkdir()
    pytester._monkeypatch.setenv("PATH", str(empty))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentbench-instructions")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentbench-instructions: valgrind is not installed*apt-get install valgrind*"])


def test_an_instruction_gate_without_the_option_is_a_usage_error(pytester):
    pytester.makepyfile(test_suite=SUITE.format(n=100))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-compare",
                                           "--agentbench-compare-fail=instructions:1%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gate instructions:1% compares instruction counts: add --agentbench-instructions*"])


def _saved(folder: Path) -> dict[str, dict]:
    runs = sorted(folder.glob(".benchmarks/*/*.json"))
    data = json.loads(runs[-1].read_text())
    return {b["name"]: b["extra_info"]["agentbench"] for b in data["benchmarks"]}


@needs_valgrind
@pytest.mark.no_sanitizer("valgrind cannot run a program built with ASan")
def test_save_then_a_a_then_one_percent_more_work_fails_the_gate(pytester):
    pytester.makepyfile(test_suite=SUITE.format(n=100))
    gate = ("--agentbench-instructions", "--benchmark-compare", "--agentbench-compare-fail=instructions:1%")

    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentbench-instructions",
                                          "--benchmark-autosave", timeout=1800)
    assert first.ret == 0, first.stdout.str() + first.stderr.str()
    first.stdout.fnmatch_lines(["*instr/call*est. cycles/call*", "*test_loop*"])
    saved = _saved(pytester.path)
    assert set(saved) == {"test_loop", "test_noop", "test_list"}
    assert saved["test_noop"]["instructions_per_call"] < saved["test_list"]["instructions_per_call"]
    assert saved["test_list"]["slo"][0]["verdict"] == "met"

    same = pytester.runpytest_subprocess("-p", "no:cacheprovider", *gate, "--benchmark-autosave", timeout=1800)
    assert same.ret == 0, same.stdout.str() + same.stderr.str()
    again = _saved(pytester.path)
    for name in saved:  # A/A: the same code counts the same instructions
        assert again[name]["instructions_per_call"] == saved[name]["instructions_per_call"], name

    pytester.makepyfile(test_suite=SUITE.format(n=101))  # one more iteration: ~1% more work
    more = pytester.runpytest_subprocess("-p", "no:cacheprovider", *gate, timeout=1800)
    assert more.ret == 1, more.stdout.str() + more.stderr.str()
    text = more.stdout.str()
    more.stdout.fnmatch_lines(["*regressions against the baseline*", "*test_loop*instructions*instructions:1%*"])
    regressions = text.split("regressions against the baseline", 1)[1]
    assert "test_noop" not in regressions and "test_list" not in regressions


@needs_valgrind
@pytest.mark.no_sanitizer("valgrind cannot run a program built with ASan")
def test_the_command_runs_pytest_under_callgrind(tmp_path):
    (tmp_path / "test_one.py").write_text(SUITE.format(n=10).split("def test_loop")[0]
                                          + "def test_noop(agent_benchmark):\n    agent_benchmark(noop)\n")
    done = subprocess.run([sys.executable, "-m", "pyagentbench", "instructions", "--", "-p", "no:cacheprovider",
                           "--benchmark-json=out.json", "test_one.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "out.json").read_text())["benchmarks"][0]["extra_info"]["agentbench"]
    assert 100 < record["instructions_per_call"] < 2000  # a no-op call: a few hundred instructions


def test_the_command_without_valgrind_exits_2_with_the_install_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "pyagentbench", "instructions", "--", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "pyagentbench instructions: error: valgrind is not installed" in done.stderr
    assert "apt-get install valgrind" in done.stderr
