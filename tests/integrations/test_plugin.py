"""The pytest plugin, driven through pytester in subprocesses (the plugin loads by entry point)."""

import json
import sys

import pytest

pytest_plugins = ["pytester"]

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")

AGENT_TESTS = """
import asyncio
import os
import time

import pytest

ALLOC_MB = int(os.environ.get("AGENTBENCH_TEST_ALLOC_MB", "1"))
SIZE = ALLOC_MB * 2**20
SLOW = os.environ.get("AGENTBENCH_TEST_SLOW") == "1"


def plan(query):
    if SLOW:
        time.sleep(0.001)
    return query.split()


def test_plan(agent_benchmark):
    assert agent_benchmark(plan, "find a flight to Oslo") == ["find", "a", "flight", "to", "Oslo"]


def build_context():
    return b"x" * SIZE


def test_context(agent_benchmark):
    assert len(agent_benchmark(build_context)) == ALLOC_MB * 2**20


async def call_llm(prompt):
    await asyncio.sleep(0.001)
    return prompt.upper()


def test_llm(agent_benchmark):
    assert agent_benchmark(call_llm, "hi") == "HI"


def test_unrelated():
    assert 1 + 1 == 2
"""

EVERY_FIELD = {
    "peak_rss_bytes", "rss_delta_bytes", "cpu_percent", "allocs_per_call", "bytes_per_call",
    "mean_s", "median_s", "p95_s", "p99_s", "max_s", "loops", "rounds", "sample_interval_s",
    "peak_rss_source",
}


def run(pytester, *args):
    return pytester.runpytest_subprocess(*FAST, *args)


def load(pytester, name="out.json"):
    return json.loads((pytester.path / name).read_text())


def test_json_holds_every_metric(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, "--benchmark-only", "--benchmark-json=out.json")
    result.assert_outcomes(passed=3, skipped=1)
    benches = {b["name"]: b for b in load(pytester)["benchmarks"]}
    assert set(benches) == {"test_plan", "test_context", "test_llm"}
    for bench in benches.values():
        record = bench["extra_info"]["agentbench"]
        assert EVERY_FIELD <= set(record), EVERY_FIELD - set(record)
        assert bench["options"]["timer"] == "pyagentbench.now_ns"
        assert bench["stats"]["rounds"] >= 3
    # A 1 MiB touched allocation per call: at least that much above where the run started.
    context = benches["test_context"]["extra_info"]["agentbench"]
    assert context["peak_rss_bytes"] >= 2**20
    assert context["allocs_per_call"] == 1
    assert context["bytes_per_call"] >= 2**20
    # The async target was awaited: ~1 ms per call, little CPU.
    llm = benches["test_llm"]["extra_info"]["agentbench"]
    assert 0.9e-3 <= benches["test_llm"]["stats"]["median"] < 0.1
    assert llm["cpu_percent"] < 60
    # The summary table follows pytest-benchmark's.
    result.stdout.fnmatch_lines(["*agentbench: memory, allocations, throughput*", "Name*peak RSS*"])
    result.stdout.fnmatch_lines(["test_context*MiB*"])


def test_pedantic_mirrors_pytest_benchmark(pytester):
    pytester.makepyfile(
        """
        def test_pedantic(agent_benchmark):
            made = []

            def setup():
                made.append(1)
                return (list(range(100)),), {}

            result = agent_benchmark.pedantic(sorted, setup=setup, rounds=7, warmup_rounds=2)
            assert result == list(range(100))
            assert len(made) == 7 + 2 + 1  # rounds, warmup, the allocation count

        def test_iterations(agent_benchmark):
            agent_benchmark.pedantic(sum, args=(range(10),), rounds=4, iterations=50)
        """
    )
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    benches = {b["name"]: b for b in load(pytester)["benchmarks"]}
    assert benches["test_pedantic"]["stats"]["rounds"] == 7
    assert benches["test_iterations"]["stats"]["iterations"] == 50
    assert "allocs_per_call" in benches["test_iterations"]["extra_info"]["agentbench"]


def test_fixture_can_time_once(pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_twice(agent_benchmark):
            agent_benchmark(len, ())
            with pytest.raises(RuntimeError, match="once per test"):
                agent_benchmark(len, ())

        def test_not_callable(agent_benchmark):
            with pytest.raises(TypeError, match="fn must be callable"):
                agent_benchmark(42)
            agent_benchmark(len, ())
        """
    )
    run(pytester).assert_outcomes(passed=2)


SLO_TESTS = """
import pytest


def work():
    return sum(range(1000))


@pytest.mark.slo(p99="1s", max_rss="64GiB", max_allocs_per_call=1000)
def test_within_budget(agent_benchmark):
    agent_benchmark(work)


@pytest.mark.slo(p99="1ns")
def test_too_slow(agent_benchmark):
    agent_benchmark(work)


@pytest.mark.slo(max_allocs_per_call=0)
def test_allocates(agent_benchmark):
    agent_benchmark(lambda n: [0] * n, 10)


@pytest.mark.slo(min_throughput=10)
def test_never_measured(agent_benchmark):
    agent_benchmark(work)
"""


def test_slo_budgets_pass_and_fail_with_clear_messages(pytester):
    pytester.makepyfile(SLO_TESTS)
    result = run(pytester)
    # The unmeasured budget is found when the test ends: an error at teardown.
    result.assert_outcomes(passed=2, failed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*SLO budget p99='1ns' broken: measured p99 = * above the budget of 1 ns*",
    ])
    result.stdout.fnmatch_lines([
        "*SLO budget max_allocs_per_call='0' broken: measured allocs_per_call = 2, above the budget of 0*",
    ])
    result.stdout.fnmatch_lines([
        "*SLO budgets set but never measured:*",
        "*min_throughput: needs agent_benchmark.throughput(...)*",
    ])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('slo(p99="20 parsecs")', "*slo(p99='20 parsecs'): cannot parse duration*unknown unit 'parsecs'*"),
        ('slo(max_rss="lots")', "*slo(max_rss='lots'): cannot parse size*"),
        ('slo(p42="1ms")', "*unknown budget 'p42'*"),
        ("slo()", "*needs at least one budget*"),
        ('slo(max_error_rate=2)', "*is a fraction from 0 to 1*"),
    ],
)
def test_bad_slo_fails_at_collection(pytester, marker, message):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_budgeted(agent_benchmark):
            agent_benchmark(len, ())
        """
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid SLO budgets*", message])


GATED = ("--benchmark-only", "--agentbench-compare-fail=peak_rss:20%,allocs_per_call:10%")


def test_compare_fail_passes_an_a_a_run(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    result = run(pytester, *GATED, "--benchmark-compare")
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == 0
    assert "regressions against the baseline" not in result.stdout.str()


@pytest.mark.no_sanitizer(
    reason="a peak-RSS gate: under ASan's quarantine and shadow memory the peak no longer follows "
           "the injected allocation")
def test_compare_fail_catches_an_injected_memory_regression(pytester, monkeypatch):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    monkeypatch.setenv("AGENTBENCH_TEST_ALLOC_MB", "40")
    result = run(pytester, *GATED, "--benchmark-compare")
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*agentbench: regressions against the baseline*",
        "test*metric*baseline*now*change*gate*",
        "*test_agents.py::test_context*peak_rss*MiB*MiB*+*%*peak_rss:20%*",
    ])


def test_compare_fail_needs_compare_and_valid_gates(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentbench-compare-fail compares against a saved run: add --benchmark-compare*"])
    assert "test_agents.py" not in result.stdout.str()  # refused before anything ran
    result = run(pytester, "--agentbench-compare-fail=peak_rss:lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentbench-compare-fail: bad gate 'peak_rss:lots'*"])
    result = run(pytester, "--agentbench-compare-fail=rss_peak:20%")
    result.stderr.fnmatch_lines(["*unknown metric 'rss_peak'*"])


def test_benchmark_disable_runs_each_target_once(pytester):
    pytester.makepyfile(
        """
        import asyncio

        calls = []

        def step():
            calls.append(1)
            return len(calls)

        def test_sync(agent_benchmark):
            assert agent_benchmark(step) == 1
            assert not agent_benchmark.enabled

        async def astep():
            return "done"

        def test_async(agent_benchmark):
            assert agent_benchmark(astep) == "done"

        def test_failing(agent_benchmark):
            agent_benchmark(lambda: 1 / 0)
        """
    )
    result = run(pytester, "--benchmark-disable", "--benchmark-json=out.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*ZeroDivisionError*"])
    assert "agentbench:" not in result.stdout.str()  # no budgets or gates: nothing to say


def test_benchmark_skip_skips_agent_benchmarks(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-skip").assert_outcomes(passed=1, skipped=3)


def test_xdist_turns_benchmarks_off_and_tests_still_run(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    assert "agentbench: memory" not in result.stdout.str()


def test_agentbench_marker_and_options_turn_metrics_off(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.agentbench(allocs=False)
        def test_no_allocs(agent_benchmark):
            agent_benchmark(len, ())

        def test_everything(agent_benchmark):
            agent_benchmark(len, ())
        """
    )
    run(pytester, "--benchmark-json=out.json").assert_outcomes(passed=2)
    records = {b["name"]: b["extra_info"]["agentbench"] for b in load(pytester)["benchmarks"]}
    assert "allocs_per_call" not in records["test_no_allocs"]
    assert "allocs_per_call" in records["test_everything"]
    assert "peak_rss_bytes" in records["test_everything"]

    run(pytester, "--benchmark-json=out.json", "--agentbench-no-resources", "--agentbench-no-allocs"
        ).assert_outcomes(passed=2)
    for bench in load(pytester)["benchmarks"]:
        record = bench["extra_info"]["agentbench"]
        assert "peak_rss_bytes" not in record and "allocs_per_call" not in record
        assert "p99_s" in record


def test_pytest_benchmark_compare_reads_our_json(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    saved = list((pytester.path / ".benchmarks").rglob("*.json"))
    assert len(saved) == 1
    result = pytester.run(sys.executable, "-m", "pytest_benchmark", "compare", str(saved[0]))
    assert result.ret == 0
    output = result.stdout.str() + result.stderr.str()
    assert "test_context" in output and "test_plan" in output, output


def test_plugin_options_form_their_own_help_group(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines([
        "pyagentbench: memory, allocations and throughput of benchmarks:",
        "*--agentbench-compare-fail=GATES*",
    ])


PLAIN_SUITE = """
def test_one():
    assert True

def test_two():
    assert True
"""


def test_a_suite_without_agent_benchmark_sees_no_difference(pytester):
    pytester.makepyfile(PLAIN_SUITE)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    with_plugin = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:agentbench")
    with_plugin.assert_outcomes(passed=2)
    assert with_plugin.ret == without.ret == 0
    assert with_plugin.stdout.lines[-1].split(" in ")[0] == without.stdout.lines[-1].split(" in ")[0]
    body = with_plugin.stdout.str().split("collected", 1)[1]
    assert "agentbench" not in body
    assert "warning" not in with_plugin.stdout.str().lower()


THROUGHPUT_TESTS = """
import asyncio

import pytest

from pyagentbench.mocks import MockLLM


def handle(payload):
    return payload * 2


@pytest.mark.slo(min_throughput=100, max_error_rate=0.0)
def test_sync_load(agent_benchmark):
    result = agent_benchmark.throughput(handle, range(2000), concurrency=4)
    assert result.completed == 2000


async def ahandle(payload):
    await asyncio.sleep(0.001)
    return payload


def test_async_load_after_timing(agent_benchmark):
    agent_benchmark(ahandle, 1)
    result = agent_benchmark.throughput(ahandle, range(200), concurrency=20)
    assert result.completed == 200


def flaky(payload):
    if payload % 10 == 0:
        raise RuntimeError("tool failed")
    return payload


@pytest.mark.slo(max_error_rate=0.01)
def test_error_budget(agent_benchmark):
    agent_benchmark.throughput(flaky, range(100), concurrency=2)
"""


def test_throughput_lands_in_extra_info_and_budgets(pytester):
    pytester.makepyfile(THROUGHPUT_TESTS)
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*SLO budget max_error_rate='0.01' broken: measured error_rate = 10 %*"])
    benches = {b["name"]: b for b in load(pytester)["benchmarks"]}
    sync = benches["test_sync_load"]
    record = sync["extra_info"]["agentbench"]
    for key in ("throughput_per_s", "error_rate", "latency_p50_s", "latency_p95_s",
                "latency_p99_s", "latency_max_s", "completed", "failed"):
        assert key in record, key
    assert record["completed"] == 2000 and record["error_rate"] == 0
    # Throughput alone: each task's service time is a round of pytest-benchmark's statistics.
    assert sync["stats"]["rounds"] == 2000
    both = benches["test_async_load_after_timing"]
    assert both["extra_info"]["agentbench"]["throughput_per_s"] > 0
    assert "p99_s" in both["extra_info"]["agentbench"]  # from the timing call
    result.stdout.fnmatch_lines(["test_sync_load*tasks/s*"])


def test_benchmark_histogram_and_save_see_our_rounds(pytester):
    pytest.importorskip("pygal")
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, "--benchmark-only", "--benchmark-histogram=hist", "--benchmark-save=first")
    result.assert_outcomes(passed=3, skipped=1)
    svg = (pytester.path / "hist.svg").read_text()
    for name in ("test_plan", "test_context", "test_llm"):
        assert name in svg
    saved = list((pytester.path / ".benchmarks").rglob("*first.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text())
    assert {b["name"] for b in data["benchmarks"]} == {"test_plan", "test_context", "test_llm"}
    assert all("agentbench" in b["extra_info"] for b in data["benchmarks"])


def test_pytest_benchmark_compare_fail_gates_our_rounds(pytester, monkeypatch):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    # plan() now sleeps 1 ms: pytest-benchmark's own gate must catch it in our rounds.
    monkeypatch.setenv("AGENTBENCH_TEST_SLOW", "1")
    result = run(pytester, "--benchmark-only", "--benchmark-compare", "--benchmark-compare-fail=min:100%")
    assert result.ret != 0
    assert "Performance has regressed" in result.stdout.str() + result.stderr.str()


def test_first_run_without_a_saved_baseline_passes_and_says_so(pytester):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    result = run(pytester, *GATED, "--benchmark-compare")
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*no saved run to compare with; --agentbench-compare-fail gates not checked*"])


def test_zero_percent_gate_fails_on_any_growth(pytester, monkeypatch):
    pytester.makepyfile(test_agents=AGENT_TESTS)
    run(pytester, "--benchmark-only", "--benchmark-autosave").assert_outcomes(passed=3, skipped=1)
    monkeypatch.setenv("AGENTBENCH_TEST_ALLOC_MB", "2")
    result = run(pytester, "--benchmark-only", "--benchmark-compare",
                 "--agentbench-compare-fail=bytes_per_call:0%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_context*bytes_per_call*bytes_per_call:0%*"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('@pytest.mark.slo(p99="5ms")\ndef test_x():\n    pass',
         "*@pytest.mark.slo budgets are measured by the agent_benchmark fixture, which this test does not use*"),
        ('@pytest.mark.slo(max_rss="50MB")\n@pytest.mark.agentbench(resources=False)\n'
         'def test_x(agent_benchmark):\n    agent_benchmark(len, ())',
         "*budget max_rss needs resource metrics, which are off for this test*"),
        ('@pytest.mark.agentbench(allocs="no")\ndef test_x(agent_benchmark):\n    agent_benchmark(len, ())',
         "*@pytest.mark.agentbench(allocs='no'): must be True or False*"),
        ('@pytest.mark.agentbench(sample_interval="50us")\ndef test_x(agent_benchmark):\n    agent_benchmark(len, ())',
         "*@pytest.mark.agentbench(sample_interval='50us'): must be from 100us to 10s*"),
        ('@pytest.mark.agentbench(color=True)\ndef test_x(agent_benchmark):\n    agent_benchmark(len, ())',
         "*@pytest.mark.agentbench takes resources=, allocs=, sample_interval= and usage_calls= only*"),
    ],
)
def test_markers_are_checked_at_collection(pytester, source, message):
    pytester.makepyfile("import pytest\n\n" + source + "\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_throughput_under_benchmark_disable_still_returns_a_load_result(pytester):
    pytester.makepyfile(
        """
        def test_load(agent_benchmark):
            result = agent_benchmark.throughput(lambda p: p, range(50), concurrency=2)
            assert result.completed == 50
        """
    )
    result = run(pytester, "--benchmark-disable")
    result.assert_outcomes(passed=1)


def test_pedantic_awaits_what_a_plain_callable_returns(pytester):
    pytester.makepyfile(
        """
        import asyncio

        async def co(x):
            await asyncio.sleep(0.001)
            return x

        def test_lambda(agent_benchmark):
            assert agent_benchmark.pedantic(lambda: co(6), rounds=3, iterations=2) == 6
        """
    )
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    bench = load(pytester)["benchmarks"][0]
    assert bench["stats"]["rounds"] == 3
    assert bench["stats"]["min"] >= 0.9e-3  # the sleep was awaited, not just the coroutine made


def test_async_agent_through_every_pass(pytester):
    pytester.makepyfile(
        """
        from pyagentbench import Agent
        from pyagentbench.mocks import MockLLM

        llm = MockLLM(latency=0.001)

        class AsyncRAG(Agent):
            async def handle(self, task):
                return await llm.acomplete(task.payload)

        def test_run(agent_benchmark):
            agent = AsyncRAG(workers=4)
            assert len(agent_benchmark(agent.run, ["a", "b", "c"])) == 3

        def test_pedantic(agent_benchmark):
            agent = AsyncRAG(workers=4)
            assert len(agent_benchmark.pedantic(agent.run, args=(["a"],), rounds=3)) == 1

        def test_load(agent_benchmark):
            agent = AsyncRAG(workers=4)
            result = agent_benchmark.throughput(agent.process, ["a"] * 40, concurrency=8)
            assert result.completed == 40
            assert 1 / 8 * 40 * 1e-3 <= result.duration_s  # the LLM's 1 ms was awaited
        """
    )
    result = run(pytester, "-W", "error", "--benchmark-json=out.json")
    result.assert_outcomes(passed=3)
    for bench in load(pytester)["benchmarks"]:
        assert "allocs_per_call" in bench["extra_info"]["agentbench"] or bench["name"] == "test_load"
