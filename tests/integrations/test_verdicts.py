"""Verdicts a CI run can trust, end to end as a user runs them: save a baseline, change the code,
compare with gates, and read the exit status and the text.

Each test here reproduces something seen in a real agent repo: a timing regression that hid our
table and pytest's status line, a corrupt baseline that passed, gates that failed on improvements,
a +100% of nothing, budgets silently skipped, stacked slo markers of which only one counted.
"""

from __future__ import annotations

import json
import math

import pytest
from pytest_benchmark.utils import get_machine_id

pytest_plugins = ["pytester"]

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")

AGENT_TESTS = """
import os
import time

ALLOC_MB = int(os.environ.get("AGENTBENCH_TEST_ALLOC_MB", "1"))
LIST_ITEMS = int(os.environ.get("AGENTBENCH_TEST_LIST_ITEMS", "10"))
SLOW = os.environ.get("AGENTBENCH_TEST_SLOW") == "1"


def plan(query):
    if SLOW:
        time.sleep(0.001)
    return [None] * LIST_ITEMS


def test_plan(agent_benchmark):
    agent_benchmark(plan, "find a flight to Oslo")


def build_context():
    return b"x" * (ALLOC_MB << 20)


def test_context(agent_benchmark):
    agent_benchmark(build_context)


def test_unrelated():
    assert True
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*FAST, *args)


def save_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=2, skipped=1)


def saved_files(pytester: pytest.Pytester) -> list:
    return sorted((pytester.path / ".benchmarks").rglob("*.json"))


def write_saved_run(pytester: pytest.Pytester, text: str, name: str = "0001_base.json") -> str:
    """Put *text* where --benchmark-compare looks for saved runs; the path as messages show it."""
    folder = pytester.path / ".benchmarks" / get_machine_id()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return f".benchmarks/{get_machine_id()}/{name}"


def saved_run(record: dict | None = None, **entry: object) -> dict:
    """A well-formed saved run (pytest-benchmark's layout) with one benchmark, test_plan."""
    bench = {
        "group": None, "name": "test_plan", "fullname": "test_agents.py::test_plan", "params": None,
        "param": None, "options": {},
        "extra_info": {"agentbench": {"peak_rss_bytes": 40 << 20, "allocs_per_call": 1.0,
                                      **(record or {})}},
        "stats": {"min": 1e-7, "max": 2e-7, "mean": 1.5e-7, "stddev": 1e-8, "rounds": 100,
                  "median": 1.5e-7, "iqr": 1e-8, "q1": 1.4e-7, "q3": 1.6e-7, "iqr_outliers": 0,
                  "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": 1e-7, "hd15iqr": 2e-7,
                  "ops": 6.6e6, "total": 1.5e-5, "iterations": 1},
    }
    bench.update(entry)
    return {"machine_info": {"node": "ci"}, "commit_info": {}, "benchmarks": [bench],
            "datetime": "2025-01-01T00:00:00", "version": "5.1.0"}


def without(run_data: dict, key: str) -> dict:
    """*run_data* with *key* removed from its first benchmark."""
    del run_data["benchmarks"][0][key]
    return run_data


GATED = ("--benchmark-only", "--benchmark-compare")


# ---- 1. our table, our regressions and pytest's status line always print -----------------------


def test_timing_regression_with_both_gates_prints_everything_and_fails(pytester, monkeypatch):
    save_baseline(pytester)
    # plan() sleeps 1 ms and makes a 5000-item list; the context grows from 1 MiB to 40 MiB.
    monkeypatch.setenv("AGENTBENCH_TEST_SLOW", "1")
    monkeypatch.setenv("AGENTBENCH_TEST_LIST_ITEMS", "5000")
    monkeypatch.setenv("AGENTBENCH_TEST_ALLOC_MB", "40")
    gates = "--agentbench-compare-fail=peak_rss:20%,bytes_per_call:10%,allocs_per_call:10%"

    # Several of our gates trip at once: each is listed, the session fails with status 1.
    result = run(pytester, *GATED, gates)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*agentbench: regressions against the baseline*",
        "test*metric*baseline*now*change*gate*",
    ])
    listed = {(line.split()[0], line.split()[-1]) for line in result.stdout.lines
              if line.startswith("test_agents.py::")}
    # 10 -> 5000 pointers a call (+39 KiB, past the 8 KiB floor); 1 MiB -> 40 MiB a call.
    assert listed == {
        ("test_agents.py::test_plan", "bytes_per_call:10%"),
        ("test_agents.py::test_context", "peak_rss:20%"),
        ("test_agents.py::test_context", "bytes_per_call:10%"),
    }, out

    # With pytest-benchmark's own timing gate too, which raises from its summary: ours still print,
    # and so does pytest's status line; the exit status is still 1.
    result = run(pytester, *GATED, "--benchmark-compare-fail=mean:10%", gates)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Performance has regressed" in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([
        "*agentbench: memory, allocations, throughput*",
        "Name*peak RSS*",
        "*agentbench: regressions against the baseline*",
        "*test_context*peak_rss*peak_rss:20%*",
    ])
    assert result.stdout.lines[-1].startswith("=") and "2 passed, 1 skipped" in result.stdout.lines[-1]


# ---- 2. a baseline we cannot read is an error, not a pass ---------------------------------------

CORRUPT = {
    "empty": ("", "the file is empty"),
    "truncated": (json.dumps(saved_run())[:150], "not valid JSON (truncated: it ends at line 1 column 151)"),
    "not json": ("<html>502 Bad Gateway</html>", "not valid JSON (Expecting value at line 1 column 1)"),
    "a list": ("[]", "the file holds a list, not a pytest-benchmark run (an object with 'benchmarks')"),
    "no benchmarks": ('{"machine_info": {}}', "no 'benchmarks' list: not a pytest-benchmark run"),
    "benchmarks an object": (json.dumps({**saved_run(), "benchmarks": {}}), "'benchmarks' is an object, expected a list"),
    "no fullname": (json.dumps(without(saved_run(), "fullname")),
                    "benchmarks[0] (name 'test_plan') has no 'fullname'"),
    "no machine_info": (json.dumps({k: v for k, v in saved_run().items() if k != "machine_info"}),
                        "no 'machine_info' (pytest-benchmark needs it to compare)"),
    "stats a string": (json.dumps(saved_run(stats="fast")), "test_agents.py::test_plan: 'stats' is a string, expected an object"),
    "string value": (json.dumps(saved_run({"peak_rss_bytes": "41943040"})),
                     "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is a string ('41943040'), not a number"),
    "list value": (json.dumps(saved_run({"peak_rss_bytes": [1, 2]})),
                   "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is a list ([1, 2]), not a number"),
    "object value": (json.dumps(saved_run({"peak_rss_bytes": {"v": 1}})),
                     "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is an object ({'v': 1}), not a number"),
    "bool value": (json.dumps(saved_run({"peak_rss_bytes": True})),
                   "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is true, not a number"),
    "NaN": (json.dumps(saved_run({"peak_rss_bytes": math.nan})),
            "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is nan, not a finite number"),
    "Infinity": (json.dumps(saved_run({"allocs_per_call": math.inf})),
                 "test_agents.py::test_plan: extra_info.agentbench.allocs_per_call is inf, not a finite number"),
    "10**400": (json.dumps(saved_run({"peak_rss_bytes": 10**400})),
                "test_agents.py::test_plan: extra_info.agentbench.peak_rss_bytes is a 401-digit integer, too large for a float"),
    "record a list": (json.dumps(saved_run(extra_info={"agentbench": [1]})),
                      "test_agents.py::test_plan: extra_info.agentbench is a list, expected an object"),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_an_unreadable_baseline_exits_2_naming_file_test_and_key(pytester, kind):
    text, problem = CORRUPT[kind]
    pytester.makepyfile(test_agents=AGENT_TESTS)
    shown = write_saved_run(pytester, text)
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%,allocs_per_call:10%")
    assert result.ret == 2, result.stdout.str() + result.stderr.str()
    assert result.stderr.lines[:3] == [
        f"Exit: agentbench: cannot compare against the saved run {shown}:",
        f"  {problem}",
        "Fix or delete the file, or save a new baseline (--benchmark-autosave or --benchmark-save).",
    ]
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "no saved run to compare with" not in output
    assert "test_agents.py" not in result.stdout.str()  # stopped before anything ran


def test_a_corrupt_latest_run_is_not_replaced_by_an_older_one(pytester):
    # pytest-benchmark skips a saved run it cannot parse and compares against the one before.
    pytester.makepyfile(test_agents=AGENT_TESTS)
    write_saved_run(pytester, json.dumps(saved_run()), "0001_older.json")
    write_saved_run(pytester, json.dumps(saved_run())[:-40], "0002_latest.json")  # killed mid-write
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == 2
    result.stderr.fnmatch_lines([
        f"*cannot compare against the saved run .benchmarks/{get_machine_id()}/0002_latest.json:",
        "  not valid JSON (truncated: it ends at line 1 column *)",
    ])


def test_a_baseline_lacking_a_gated_metric_exits_2_after_the_run(pytester):
    save_baseline(pytester)
    (saved,) = saved_files(pytester)
    data = json.loads(saved.read_text())
    for bench in data["benchmarks"]:
        if bench["name"] == "test_context":
            del bench["extra_info"]["agentbench"]["peak_rss_bytes"]
    saved.write_text(json.dumps(data))
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == 2
    result.stdout.fnmatch_lines([
        "*agentbench: gates that cannot be checked against the saved run*",
        f".benchmarks/{get_machine_id()}/0001_*.json:",
        "  test_agents.py::test_context: no peak_rss_bytes (gated by peak_rss), which this run measured",
        "These gates cannot be checked (exit status 2)*",
        "*2 passed, 1 skipped*",
    ])


def test_compare_num_that_matches_nothing_is_not_a_first_run(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    write_saved_run(pytester, json.dumps(saved_run()))
    result = run(pytester, "--benchmark-only", "--benchmark-compare=0042",
                 "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["*--benchmark-compare=0042 matches none of the saved runs (0001_base)"])


# ---- 3. direction: the percentage is the allowed worsening --------------------------------------


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("peak_rss:-20%", "*peak_rss:-20%: a fall in peak_rss is an improvement; write peak_rss:20% to allow 20% growth"),
        ("throughput:+10%", "*throughput:+10%: a rise in throughput is an improvement; write throughput:10% to allow a 10% fall"),
        ("peak_rss:20%:cap=1MiB", "*bad gate 'peak_rss:20%:cap=1MiB': unknown option 'cap'*"),
    ],
)
def test_a_gate_whose_sign_contradicts_its_metric_is_a_usage_error(pytester, gate, message):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED, f"--agentbench-compare-fail={gate}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_gate_on_a_metric_the_run_turns_off_is_a_usage_error(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED, "--agentbench-no-allocs", "--agentbench-compare-fail=allocs_per_call:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*gate allocs_per_call:10% needs allocation counts, which --agentbench-no-allocs turns off"
    ])


def test_memory_halving_and_throughput_rising_pass_plain_gates(pytester):
    # The saved run had twice this run's memory and a tenth of its throughput: both improved.
    pytester.makepyfile(test_load="""
        def test_load(agent_benchmark):
            agent_benchmark.throughput(lambda p: p, range(500), concurrency=2)
        """)
    record = {"peak_rss_bytes": 2 << 40, "throughput_per_s": 1.0, "allocs_per_call": 1.0}
    write_saved_run(pytester, json.dumps(saved_run(record, fullname="test_load.py::test_load", name="test_load")))
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%,throughput:10%")
    assert result.ret == 0, result.stdout.str()
    assert "regressions against the baseline" not in result.stdout.str()
    # The same gates fail the other way round: a 10x fall in throughput.
    record["throughput_per_s"] = 1e12
    write_saved_run(pytester, json.dumps(saved_run(record, fullname="test_load.py::test_load", name="test_load")))
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%,throughput:-10%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["test_load.py::test_load*throughput*-100.0%*throughput:10%"])


# ---- 4. memory floors ---------------------------------------------------------------------------


def test_bytes_per_call_growth_below_the_floor_is_not_a_regression(pytester, monkeypatch):
    save_baseline(pytester)
    # plan() makes [None] * 10, then [None] * 100: 90 more 8-byte pointers a call, 720 B, several
    # times the baseline's bytes per call but below the 8 KiB floor.
    monkeypatch.setenv("AGENTBENCH_TEST_LIST_ITEMS", "100")
    result = run(pytester, *GATED, "--agentbench-compare-fail=bytes_per_call:10%")
    assert result.ret == 0, result.stdout.str()
    result = run(pytester, *GATED, "--agentbench-compare-fail=bytes_per_call:10%:floor=0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["test_agents.py::test_plan*bytes_per_call* B* B*+*%*bytes_per_call:10%:floor=0"])


# ---- 6. budgets and gates not checked say so, once ----------------------------------------------

BUDGETED = """
import pytest


@pytest.mark.slo(p99="1s", max_allocs_per_call=100)
def test_one(agent_benchmark):
    agent_benchmark(len, ())


@pytest.mark.slo(mean="1s")
def test_two(agent_benchmark):
    agent_benchmark(len, ())


def test_three(agent_benchmark):
    agent_benchmark(len, ())
"""


def test_benchmark_disable_says_how_many_budgets_and_gates_were_not_checked(pytester):
    pytester.makepyfile(BUDGETED)
    result = run(pytester, "--benchmark-disable", "--benchmark-compare",
                 "--agentbench-compare-fail=peak_rss:20%,p99:10%")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "not checked" in line]
    assert lines == [
        "agentbench: 3 SLO budgets (on 2 tests) and 2 regression gates were not checked: "
        "benchmarks are off (--benchmark-disable)"
    ]


def test_xdist_says_how_many_budgets_were_not_checked(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(BUDGETED)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "agentbench: 3 SLO budgets (on 2 tests) were not checked: pytest-xdist is on and "
        "pytest-benchmark turns benchmarks off under it; run them without -n, or with "
        "--agentbench-xdist",
    ])


# ---- 7. stacked slo markers merge, the nearest wins per keyword ---------------------------------


def test_stacked_slo_markers_merge_nearest_first(pytester):
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.slo(p99="1ns", max_allocs_per_call=0)


        def test_module_only(agent_benchmark):
            agent_benchmark(sum, range(100))


        @pytest.mark.slo(p99="10s")
        class TestAgent:
            def test_class_and_module(self, agent_benchmark):
                agent_benchmark(lambda: [0] * 10)

            @pytest.mark.slo(max_allocs_per_call=1000)
            def test_method_class_and_module(self, agent_benchmark):
                agent_benchmark(lambda: [0] * 10)
        """
    )
    result = run(pytester)
    # The class's p99 wins over the module's; the module's allocation budget still applies to the
    # class's tests, unless the method sets its own.
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*_ test_module_only _*",
        "SLO budget p99='1ns' broken*",
        "*_ TestAgent.test_class_and_module _*",
        "SLO budget max_allocs_per_call='0' broken*",
    ])
    # The class's test breaks no p99 budget. Read its failure section, not the whole output: pytest
    # prints whole messages in the short summary when it runs under CI (the CI variable is set).
    out = result.stdout.str()
    section = out.split("_ TestAgent.test_class_and_module _", 1)[1].split("short test summary", 1)[0]
    assert "max_allocs_per_call='0' broken" in section
    assert "p99=" not in section


# ---- 8. the summary table -----------------------------------------------------------------------


def test_the_table_shows_error_rate_for_load_runs(pytester):
    pytester.makepyfile(
        """
        def flaky(payload):
            if payload % 10 == 0:
                raise RuntimeError("tool failed")
            return payload


        def test_load(agent_benchmark):
            agent_benchmark.throughput(flaky, range(100), concurrency=2)


        def test_timed(agent_benchmark):
            agent_benchmark(len, ())
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "Name*peak RSS*RSS delta*CPU*allocs/call*throughput*errors*p99",
        "test_load *tasks/s*10%*",
        "test_timed *-*-*",
    ])


def test_benchmarks_missing_from_the_saved_run_are_named_as_unchecked(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    write_saved_run(pytester, json.dumps(saved_run(fullname="test_agents.py::test_renamed")))
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "agentbench: 2 benchmarks of this run are not in the saved run (new, or renamed): "
        "gates not checked for them",
    ])


def test_the_table_leaves_out_optional_columns_no_test_filled():
    from pyagentbench.integrations.plugin import _summary_rows

    timed = {"peak_rss_bytes": 2 << 20, "rss_delta_bytes": 0, "cpu_percent": 99.0, "allocs_per_call": 2,
             "p99_s": 1e-6}
    rows = _summary_rows({"t.py::test_timed": timed})
    assert rows[0] == ("Name", "peak RSS", "RSS delta", "CPU", "allocs/call", "p99")
    streamed = dict(timed, process_peak_rss_bytes=300 << 20, ttft_s=0.25, inter_item_s=0.002)
    load = {"throughput_per_s": 500.0, "error_rate": 0.25, "latency_p99_s": 4e-3}
    rows = _summary_rows({"t.py::test_timed": timed, "t.py::test_stream": streamed, "t.py::test_load": load})
    assert rows[0] == ("Name", "peak RSS", "process RSS", "RSS delta", "CPU", "allocs/call", "throughput",
                       "errors", "p99", "TTFT", "inter-item")
    assert rows[1] == ("test_timed", "2 MiB", "-", "0 B", "99%", "2", "-", "-", "1 us", "-", "-")
    assert rows[2] == ("test_stream", "2 MiB", "300 MiB", "0 B", "99%", "2", "-", "-", "1 us", "250 ms", "2 ms")
    assert rows[3] == ("test_load", "-", "-", "-", "-", "-", "500 tasks/s", "25%", "4 ms", "-", "-")


def test_a_first_run_with_both_gates_is_refused_by_pytest_benchmark_and_still_shows_ours(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED, "--benchmark-compare-fail=mean:10%", "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--benchmark-compare-fail requires valid --benchmark-compare*"])
    result.stdout.fnmatch_lines([
        "agentbench: no saved run to compare with; --agentbench-compare-fail gates not checked",
        "*agentbench: memory, allocations, throughput*",
    ])


def test_a_gated_first_run_passes_under_filterwarnings_error(pytester):
    # pytest-benchmark warns "Can't compare. No benchmark files" while it configures; under
    # filterwarnings = error that was an INTERNALERROR (exit 3) on the CI recipe's first run.
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED, "--agentbench-compare-fail=peak_rss:20%")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        ["agentbench: no saved run to compare with; --agentbench-compare-fail gates not checked"])
