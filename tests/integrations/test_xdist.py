"""--agentbench-xdist: benchmarks timed on pytest-xdist workers, one CPU each, and reported by the
controller as one serial run: one JSON, one table, one set of budgets and gates."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("xdist")

FAST = ("-p", "no:cacheprovider", "-p", "no:randomly", "--benchmark-max-time=0.05",
        "--benchmark-min-rounds=3")

SUITE = """
import pytest

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_agent(agent_benchmark, n):
    agent_benchmark(lambda: [[0] * 4 for _ in range(n)])

def test_plain(benchmark):
    benchmark(sorted, [3, 1, 2])

def test_not_a_benchmark():
    assert True
"""

AGENT_NAMES = {f"test_agent[{n}]" for n in (1, 2, 3, 4)}
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs for 2 pinned workers")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*FAST, *args)


def saved(pytester: pytest.Pytester, name: str = "out.json") -> dict:
    return json.loads((pytester.path / name).read_text())


@needs_two_cpus
def test_benchmarks_stay_on_and_the_controller_writes_one_json(pytester):
    pytester.makepyfile(SUITE)
    result = run(pytester, "-n", "2", "--agentbench-xdist", "--benchmark-json=out.json")
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    # one table of pytest-benchmark's and one of ours, with every benchmark of both workers
    assert out.count("benchmark: 5 tests") == 1
    assert out.count("agentbench: memory, allocations, throughput") == 1
    result.stdout.fnmatch_lines([
        "agentbench: benchmarks ran on 2 xdist workers, each pinned to a CPU of its own "
        f"(gw0 on CPU {CPUS[0]}, gw1 on CPU {CPUS[1]})",
    ])
    benchmarks = {b["name"]: b for b in saved(pytester)["benchmarks"]}
    assert set(benchmarks) == AGENT_NAMES | {"test_plain"}
    placements = {b["extra_info"]["agentbench_xdist"]["worker"]: b["extra_info"]["agentbench_xdist"]
                  for b in benchmarks.values()}
    assert set(placements) == {"gw0", "gw1"}  # both workers timed some
    assert {p["cpu"] for p in placements.values()} == set(CPUS[:2])  # each on its own CPU
    for bench in benchmarks.values():
        assert len(bench["stats"]["data"]) == bench["stats"]["rounds"] >= 3  # --benchmark-json keeps data
    for name in AGENT_NAMES:
        assert benchmarks[name]["extra_info"]["agentbench"]["allocs_per_call"] > 0


@needs_two_cpus
def test_benchmark_only_works_under_xdist(pytester):
    # pytest-benchmark alone rejects --benchmark-only with -n ("Can't have both ...")
    pytester.makepyfile(SUITE)
    result = run(pytester, "-n", "2", "--agentbench-xdist", "--benchmark-only")
    result.assert_outcomes(passed=5, skipped=1)
    assert "Can't have both" not in result.stdout.str() + result.stderr.str()


@needs_two_cpus
def test_deterministic_metrics_match_a_serial_run(pytester):
    # [[0] * 4 for _ in range(n)] makes n + 1 lists per call, wherever it runs
    pytester.makepyfile(SUITE)
    run(pytester, "--benchmark-json=serial.json").assert_outcomes(passed=6)
    run(pytester, "-n", "2", "--agentbench-xdist", "--benchmark-json=xdist.json").assert_outcomes(passed=6)

    def allocs(name):
        return {b["name"]: b["extra_info"]["agentbench"]["allocs_per_call"]
                for b in saved(pytester, name)["benchmarks"] if b["name"] in AGENT_NAMES}

    assert allocs("serial.json") == allocs("xdist.json")


@needs_two_cpus
def test_budgets_are_enforced_on_workers(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.slo(max_allocs_per_call=0)
        def test_over_budget(agent_benchmark):
            agent_benchmark(lambda: [0] * 10)

        @pytest.mark.slo(max_allocs_per_call=1000)
        def test_within_budget(agent_benchmark):
            agent_benchmark(lambda: [0] * 10)
        """
    )
    result = run(pytester, "-n", "2", "--agentbench-xdist")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ test_over_budget _*", "SLO budget max_allocs_per_call='0' broken*"])
    assert "were not checked" not in result.stdout.str()


GROWING = """
import os
SIZE = int(os.environ["LISTS"])

def test_grows(agent_benchmark):
    agent_benchmark(lambda: [[0] for _ in range(SIZE)])

def test_same(agent_benchmark):
    agent_benchmark(lambda: [0] * 4)
"""


@needs_two_cpus
@pytest.mark.parametrize("baseline_args, now_args", [
    ((), ("-n", "2", "--agentbench-xdist")),  # a serial baseline, an xdist run
    (("-n", "2", "--agentbench-xdist"), ()),  # and the other way round
], ids=["serial-then-xdist", "xdist-then-serial"])
def test_gates_compare_across_serial_and_xdist_runs(pytester, monkeypatch, baseline_args, now_args):
    pytester.makepyfile(GROWING)
    monkeypatch.setenv("LISTS", "10")
    run(pytester, "--benchmark-autosave", *baseline_args).assert_outcomes(passed=2)
    monkeypatch.setenv("LISTS", "20")  # 11 allocations per call become 21
    result = run(pytester, "--benchmark-compare", "--agentbench-compare-fail=allocs_per_call:10%",
                 "--benchmark-compare-fail=min:100000%", *now_args)
    assert result.ret == 1
    out = result.stdout.str()
    assert "agentbench: regressions against the baseline" in out
    regressions = out.split("agentbench: regressions against the baseline", 1)[1]
    assert "test_grows" in regressions and "test_same" not in regressions
    assert "Performance has regressed" not in out  # pytest-benchmark's own gate held on the shims


def test_more_workers_than_cpus_is_said_loudly(pytester):
    pytester.makepyfile(SUITE)
    workers = len(CPUS) + 1
    result = run(pytester, "-n", str(workers), "--agentbench-xdist", "--benchmark-json=out.json")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        f"agentbench: WARNING: {workers} xdist workers on {len(CPUS)} CPUs *workers share CPUs, so "
        f"times are not sound; use -n {len(CPUS)} or fewer",
    ])
    for bench in saved(pytester)["benchmarks"]:
        assert bench["extra_info"]["agentbench_xdist"]["oversubscribed"] is True


def test_the_option_without_xdist_is_a_usage_error(pytester):
    pytester.makepyfile(SUITE)
    result = run(pytester, "-p", "no:xdist", "--agentbench-xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentbench-xdist runs benchmarks under pytest-xdist, which is "
                                 "not installed or is disabled*"])


def test_without_the_option_xdist_still_turns_benchmarks_off(pytester):
    pytester.makepyfile(SUITE)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=6)
    assert "agentbench: memory" not in result.stdout.str()
    assert "pinned" not in result.stdout.str()


def test_the_option_changes_nothing_in_a_serial_run(pytester):
    pytester.makepyfile(SUITE)
    result = run(pytester, "--agentbench-xdist", "--benchmark-json=out.json")
    result.assert_outcomes(passed=6)
    assert "pinned" not in result.stdout.str()
    assert all("agentbench_xdist" not in b["extra_info"] for b in saved(pytester)["benchmarks"])


@needs_two_cpus
def test_a_worker_and_the_threads_it_starts_run_on_one_cpu(pytester):
    pytester.makepyfile(
        """
        import os, threading

        def test_affinity(agent_benchmark):
            seen = []
            thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
            thread.start()
            thread.join()
            assert len(os.sched_getaffinity(0)) == 1
            assert seen == [os.sched_getaffinity(0)]
            agent_benchmark(len, ())
        """
    )
    run(pytester, "-n", "2", "--agentbench-xdist").assert_outcomes(passed=1)
    run(pytester, "-n", "2").assert_outcomes(failed=1)  # without the option nothing is pinned


def test_a_worker_benchmark_reads_like_pytest_benchmarks_own():
    from pyagentbench.integrations.xdist import WorkerBenchmark

    entry = {"name": "test_x", "fullname": "t.py::test_x", "group": None, "params": None,
             "param": None, "extra_info": {"k": 1}, "options": {},
             "stats": {"min": 1.0, "median": 2.0, "max": 3.0, "rounds": 3, "iterations": 1,
                       "data": [1.0, 2.0, 3.0]}}
    bench = WorkerBenchmark(entry)
    assert bench and not bench.has_error and bench.fullname == "t.py::test_x"
    assert bench["median"] == bench.stats.median == 2.0
    assert bench.extra_info == {"k": 1}
    assert bench.as_dict(include_data=False)["stats"] == {
        "min": 1.0, "median": 2.0, "max": 3.0, "rounds": 3, "iterations": 1}
    assert bench.as_dict()["stats"]["data"] == [1.0, 2.0, 3.0]
    flat = bench.as_dict(include_data=False, flat=True)
    assert flat["median"] == 2.0 and "stats" not in flat and "data" not in flat


@needs_two_cpus
def test_the_controller_writes_one_report_with_every_workers_benchmarks(pytester):
    pytester.makepyfile(SUITE)
    result = run(pytester, "-n", "2", "--agentbench-xdist", "--agentbench-report=report.md",
                 "--agentbench-junit=junit.xml")
    result.assert_outcomes(passed=6)
    report = (pytester.path / "report.md").read_text()
    for name in AGENT_NAMES:
        assert name in report
    assert (pytester.path / "junit.xml").exists()
