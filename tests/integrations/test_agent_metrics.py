"""Agent metrics in agent_benchmark, the way a user runs them: tokens, calls and cost per call,
custom metrics, wall/CPU/wait and GC, in the saved JSON, the summary table, SLO budgets and gates."""

from __future__ import annotations

import json
import re
import sys

import pytest

pytest_plugins = ["pytester"]

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")

# A prompt of 400 characters is 100 tokens; responses of 40 and 120 characters are 10 and 30.
SEEDED_SUITE = """
import pytest
from pyagentbench.mocks import MockLLM, MockTool

PROMPT = "p" * 400


@pytest.fixture
def llm():
    return MockLLM(responses=["r" * 40, "r" * 120], model="small", seed=7)


def test_agent(agent_benchmark, llm):
    tool = MockTool("search", result="ok")

    def agent():
        tool("q")
        llm.complete(PROMPT)
        return llm.complete(PROMPT)

    agent_benchmark(agent)


def test_no_llm(agent_benchmark):
    agent_benchmark(lambda: sum(range(10)))
"""


def _records(path) -> dict:
    data = json.loads(path.read_text())
    return {b["name"]: b["extra_info"]["agentbench"] for b in data["benchmarks"]}


def test_usage_per_call_lands_in_the_json_and_the_table(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    (pytester.path / "prices.json").write_text(json.dumps({"small": {"in_per_1k": 1.0, "out_per_1k": 2.0}}))
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json", "--agentbench-prices=prices.json")
    assert result.ret == 0
    record = _records(pytester.path / "out.json")["test_agent"]
    # each counted call: 2 LLM calls (10 then 30 tokens out, 100 in each), 1 tool call
    assert record["usage_calls"] == 5
    assert record["llm_calls_per_call"] == 2 and record["llm_calls_per_call_max"] == 2
    assert record["tool_calls_per_call"] == 1
    assert record["tokens_in_per_call"] == 200 and record["tokens_out_per_call"] == 40
    assert record["tokens_per_call"] == 240 and record["tokens_per_call_max"] == 240
    assert record["cost_per_call"] == pytest.approx(0.2 + 0.08)
    no_llm = _records(pytester.path / "out.json")["test_no_llm"]
    assert "tokens_per_call" not in no_llm and "wall_per_call_s" in no_llm
    result.stdout.re_match_lines([r"Name\s+peak RSS.*LLM calls\s+tool calls\s+tokens/call\s+cost/call",
                                  r"test_agent\s.*\s2\s+1\s+240\s+0\.28$",
                                  r"test_no_llm\s.*-\s+-\s+-\s+-$"])


def test_an_unpriced_model_has_no_cost_and_is_named(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    assert result.ret == 0
    record = _records(pytester.path / "out.json")["test_agent"]
    assert "cost_per_call" not in record and record["unpriced_models"] == ["small"]
    assert "cost/call" not in result.stdout.str()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_prices_from_toml(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    (pytester.path / "prices.toml").write_text('[small]\nin_per_1k = 0.5\nout_per_1k = 0.5\n')
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json", "--agentbench-prices=prices.toml")
    assert result.ret == 0
    assert _records(pytester.path / "out.json")["test_agent"]["cost_per_call"] == pytest.approx(0.12)


def test_a_bad_price_file_is_a_usage_error(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    (pytester.path / "prices.json").write_text(json.dumps({"small": {"in": 1}}))
    result = pytester.runpytest_subprocess(*FAST, "--agentbench-prices=prices.json")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--agentbench-prices: prices.json: model 'small': expected exactly "
                                 "in_per_1k and out_per_1k*"])
    result = pytester.runpytest_subprocess(*FAST, "--agentbench-prices=missing.json")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--agentbench-prices: cannot read missing.json*"])


def test_usage_budgets_fail_the_test_with_the_measured_value(pytester):
    pytester.makepyfile(test_suite="""
        import pytest
        from pyagentbench.mocks import MockLLM

        @pytest.mark.slo(max_tokens_per_call=200, max_llm_calls_per_call=3, max_cost_per_call="0.002")
        def test_agent(agent_benchmark):
            llm = MockLLM(responses=["r" * 120], price_in_per_1k=0.01, price_out_per_1k=0.01)
            agent_benchmark(lambda: llm.complete("p" * 800))
    """)
    result = pytester.runpytest_subprocess(*FAST)
    assert result.ret == 1
    # 200 tokens in + 30 out = 230 tokens, at 0.01 per 1000: 0.0023
    result.stdout.fnmatch_lines([
        "*SLO budget max_tokens_per_call='200' broken: measured tokens_per_call_max = 230 tokens, "
        "above the budget of 200 tokens*",
    ])
    result.stdout.fnmatch_lines([
        "*SLO budget max_cost_per_call='0.002' broken: measured cost_per_call_max = 0.0023, "
        "above the budget of 0.002*",
    ])
    assert "max_llm_calls_per_call" not in result.stdout.str()


CUSTOM_SUITE = """
import itertools
import pytest

counter = itertools.count(1)


@pytest.mark.agentbench(usage_calls=20)
@pytest.mark.slo(metrics={"hit_rate": ">=0.9", "step": "<=15"})
def test_custom(agent_benchmark):
    def run():
        agent_benchmark.metric("step", next(counter))
    agent_benchmark(run)
    agent_benchmark.metric("hit_rate", HIT_RATE, better="higher")
    agent_benchmark.metric("context", 2, unit="KiB")
"""


def test_custom_metrics_per_call_and_once(pytester):
    pytester.makepyfile(test_suite=CUSTOM_SUITE.replace("HIT_RATE", "0.95").replace("<=15", "<=20"))
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    assert result.ret == 0, result.stdout.str()
    record = _records(pytester.path / "out.json")["test_custom"]
    # the counted calls record 1..20; calls in the timed rounds are not recorded
    assert record["metric.step"] == 10.5
    assert (record["metric.step.p50"], record["metric.step.p95"], record["metric.step.max"]) == (10, 19, 20)
    assert record["metric.hit_rate"] == 0.95
    assert record["metric.context"] == 2048
    assert record["metric_info"]["hit_rate"] == {"unit": "", "kind": "count", "better": "higher",
                                                 "per_call": False, "calls": 1}
    assert record["metric_info"]["step"]["per_call"] is True and record["metric_info"]["step"]["calls"] == 20
    result.stdout.re_match_lines([r"Name\s.*\sstep\s+hit_rate\s+context$",
                                  r"test_custom\s.*\s10\.5\s+0\.95\s+2 KiB$"])


def test_custom_metric_budgets_read_the_bound_from_the_operator(pytester):
    pytester.makepyfile(test_suite=CUSTOM_SUITE.replace("HIT_RATE", "0.8"))
    result = pytester.runpytest_subprocess(*FAST)
    assert result.ret == 1
    result.stdout.re_match_lines([".*" + re.escape("SLO budget metrics['hit_rate']='>=0.9' broken: "
                                                   "measured metric.hit_rate = 0.8, below the budget of 0.9")])
    # a per-call metric's budget bounds its mean over the counted calls: 1..20 averages 10.5
    pytester.makepyfile(test_suite=CUSTOM_SUITE.replace("HIT_RATE", "0.95").replace("<=15", "<=10"))
    result = pytester.runpytest_subprocess(*FAST)
    assert result.ret == 1
    result.stdout.re_match_lines([".*" + re.escape("SLO budget metrics['step']='<=10' broken: measured "
                                                   "metric.step = 10.5, above the budget of 10")])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('agent_benchmark.metric("Hit Rate", 1)', "a custom metric's name must be lowercase letters"),
        ('agent_benchmark.metric("peak_rss", 1)', "'peak_rss' is a built-in metric"),
        ('agent_benchmark.metric("x", "1")', "the value must be a number, not str"),
        ('agent_benchmark.metric("x", float("nan"))', "the value must be a finite number"),
        ('agent_benchmark.metric("x", 1, better="up")', "better must be 'lower' or 'higher'"),
        ('agent_benchmark.metric("x", 1); agent_benchmark.metric("x", 1, unit="ms")',
         "first recorded with unit=None"),
    ],
)
def test_bad_custom_metrics_are_clear_errors(pytester, call, message):
    pytester.makepyfile(test_suite=f"""
        def test_it(agent_benchmark):
            {call}
    """)
    result = pytester.runpytest_subprocess(*FAST)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"*{message}*"])


def test_columns_option_chooses_the_table(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    result = pytester.runpytest_subprocess(*FAST, "--agentbench-columns=tokens_out_per_call,cpu_per_call,gc_collections,p99")
    assert result.ret == 0
    result.stdout.re_match_lines([r"^Name\s+tokens out\s+CPU/call\s+GC runs\s+p99$", r"test_agent\s+40\s"])
    result = pytester.runpytest_subprocess(*FAST, "--agentbench-columns=tokens,peak_rss")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--agentbench-columns: unknown metric 'tokens'*"])


def test_gc_and_time_split_per_test(pytester):
    pytester.makepyfile(test_suite="""
        import gc, time

        def test_sleepy(agent_benchmark):
            def run():
                gc.collect(0)
                time.sleep(0.002)
            agent_benchmark(run)
    """)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    assert result.ret == 0
    record = _records(pytester.path / "out.json")["test_sleepy"]
    # every call collects generation 0 once: 5 counted calls plus the timed and counting calls
    assert record["gc_collections_gen0"] >= 5 + record["rounds"] * record["loops"]
    assert record["gc_pause_s"] > 0
    assert record["wait_per_call_s"] >= 0.002 > record["cpu_per_call_s"]


def test_gc_budget(pytester):
    pytester.makepyfile(test_suite="""
        import gc, pytest

        @pytest.mark.slo(max_gc_collections=3)
        def test_collects(agent_benchmark):
            agent_benchmark(lambda: gc.collect(0))
    """)
    result = pytester.runpytest_subprocess(*FAST)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*SLO budget max_gc_collections='3' broken: measured gc_collections = *"])


def test_gates_on_usage_and_custom_metrics(pytester):
    suite = """
        from pyagentbench.mocks import MockLLM

        def test_agent(agent_benchmark):
            llm = MockLLM(responses=["r" * 40])
            def run():
                for _ in range(CALLS):
                    llm.complete("p" * 400)
            agent_benchmark(run)
            agent_benchmark.metric("hit_rate", HIT, better="higher")
    """
    pytester.makepyfile(test_suite=suite.replace("CALLS", "1").replace("HIT", "0.9"))
    assert pytester.runpytest_subprocess(*FAST, "--benchmark-autosave").ret == 0
    gates = "--agentbench-compare-fail=llm_calls_per_call:0%,tokens_per_call:10%,metric.hit_rate:5%"
    # the same code: every gate holds
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-compare", gates)
    assert result.ret == 0, result.stdout.str()
    # one more LLM call per call and a hit rate that fell by a third: three regressions
    pytester.makepyfile(test_suite=suite.replace("CALLS", "2").replace("HIT", "0.6"))
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-compare", gates)
    assert result.ret == 1
    result.stdout.re_match_lines([
        r".*test_agent\s+llm_calls_per_call\s+1\s+2\s+\+100\.0%\s+llm_calls_per_call:0%",
        r".*test_agent\s+tokens_per_call\s+110 tokens\s+220 tokens\s+\+100\.0%\s+tokens_per_call:10%",
        r".*test_agent\s+metric\.hit_rate\s+0\.9\s+0\.6\s+-33\.3%\s+metric\.hit_rate:5%",
    ])
    # a higher hit rate is no regression: the direction is the one the test recorded
    pytester.makepyfile(test_suite=suite.replace("CALLS", "1").replace("HIT", "0.99"))
    assert pytester.runpytest_subprocess(*FAST, "--benchmark-compare", gates).ret == 0


def test_a_gate_on_a_custom_metric_nobody_records_cannot_pass(pytester):
    pytester.makepyfile(test_suite="""
        def test_it(agent_benchmark):
            agent_benchmark(lambda: None)
            agent_benchmark.metric("hit_rate", 1.0, better="higher")
    """)
    assert pytester.runpytest_subprocess(*FAST, "--benchmark-autosave").ret == 0
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-compare",
                                           "--agentbench-compare-fail=metric.hitrate:5%")
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*gate metric.hitrate:5%: no benchmark recorded metric.hitrate "
                                 "(recorded: metric.hit_rate)*"])


def test_a_a_seeded_usage_is_identical_between_runs(pytester):
    pytester.makepyfile(test_suite=SEEDED_SUITE)
    (pytester.path / "prices.json").write_text(json.dumps({"small": {"in_per_1k": 0.15, "out_per_1k": 0.6}}))
    runs = []
    for name in ("a.json", "b.json"):
        result = pytester.runpytest_subprocess(*FAST, f"--benchmark-json={name}",
                                               "--agentbench-prices=prices.json")
        assert result.ret == 0
        runs.append(_records(pytester.path / name)["test_agent"])
    usage_keys = [k for k in runs[0] if k.startswith(("llm_", "tool_", "tokens_", "cost_", "usage_"))]
    assert len(usage_keys) >= 15
    assert {k: runs[0][k] for k in usage_keys} == {k: runs[1][k] for k in usage_keys}


def test_pedantic_and_throughput_record_usage_per_call(pytester):
    pytester.makepyfile(test_suite="""
        from pyagentbench.mocks import MockLLM

        def test_pedantic(agent_benchmark):
            llm = MockLLM(responses=["r" * 40])
            def run():
                llm.complete("p" * 400)
                agent_benchmark.metric("attempts", 2)
            agent_benchmark.pedantic(run, rounds=4, iterations=3)

        def test_load(agent_benchmark):
            llm = MockLLM(responses=["r" * 40])
            agent_benchmark.throughput(lambda p: llm.complete(p), ["p" * 400] * 20, concurrency=4)
    """)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    assert result.ret == 0, result.stdout.str()
    records = _records(pytester.path / "out.json")
    pedantic, load = records["test_pedantic"], records["test_load"]
    # pedantic: 4 rounds of 3 calls, each call 1 LLM call of 100 + 10 tokens
    assert pedantic["usage_calls"] == 4
    assert pedantic["llm_calls_per_call"] == 1 and pedantic["tokens_per_call"] == 110
    assert "tokens_per_call_max" not in pedantic  # a round of 3 calls gives their mean only
    assert pedantic["metric.attempts"] == 2 and pedantic["metric_info"]["attempts"]["calls"] == 4
    # the load: 20 tasks, one LLM call each
    assert load["usage_calls"] == 20
    assert load["llm_calls_per_call"] == 1 and load["tokens_in_per_call"] == 100


def test_usage_calls_zero_turns_the_counted_calls_off_and_the_last_value_in_a_call_counts(pytester):
    pytester.makepyfile(test_suite="""
        import pytest
        from pyagentbench.mocks import MockLLM

        @pytest.mark.agentbench(usage_calls=3)
        def test_twice(agent_benchmark):
            def run():
                agent_benchmark.metric("x", 1)
                agent_benchmark.metric("x", 5)
            agent_benchmark(run)

        def test_off(agent_benchmark):
            llm = MockLLM()
            agent_benchmark(lambda: llm.complete("hi"))
    """)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json", "--agentbench-usage-calls=0")
    assert result.ret == 0
    records = _records(pytester.path / "out.json")
    assert records["test_twice"]["metric.x.max"] == 5 and records["test_twice"]["metric_info"]["x"]["calls"] == 3
    assert not {"usage_calls", "tokens_per_call", "wall_per_call_s"} & set(records["test_off"])


def test_async_tests_count_usage_on_their_own_loop(pytester):
    pytest.importorskip("pytest_asyncio")
    pytester.makepyfile(test_suite="""
        import pytest
        from pyagentbench.mocks import MockLLM

        @pytest.mark.asyncio
        async def test_async(agent_benchmark):
            llm = MockLLM(responses=["r" * 40])
            async def agent():
                return await llm.acomplete("p" * 400)
            await agent_benchmark.acall(agent)
    """)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    assert result.ret == 0, result.stdout.str()
    record = _records(pytester.path / "out.json")["test_async"]
    assert record["llm_calls_per_call"] == 1 and record["tokens_per_call"] == 110


def test_a_slow_target_gets_two_counted_calls(pytester):
    pytester.makepyfile(test_suite="""
        import time
        from pyagentbench.mocks import MockLLM

        CALLS = []

        def test_slow(agent_benchmark):
            llm = MockLLM(responses=["r" * 40])
            def run():
                CALLS.append(1)
                time.sleep(0.012)
                return llm.complete("p" * 400)
            agent_benchmark(run)
            print("\\nCALLS", len(CALLS))
    """)
    result = pytester.runpytest_subprocess(*FAST, "-s", "--benchmark-json=out.json")
    assert result.ret == 0
    record = _records(pytester.path / "out.json")["test_slow"]
    assert record["usage_calls"] == 2 and record["tokens_per_call"] == 110
    calls = next(int(line.split()[1]) for line in result.outlines if line.startswith("CALLS "))
    # 2 counted calls (the second is the warm-up), the timed rounds, one allocation-counting call
    assert calls == 2 + record["rounds"] + 1


@pytest.mark.parametrize(
    ("keyword", "limit", "key", "parsed"),
    [
        ("max_llm_calls_per_call", 3, "llm_calls_per_call_max", 3.0),
        ("max_tool_calls_per_call", 2, "tool_calls_per_call_max", 2.0),
        ("max_tokens_per_call", 1200, "tokens_per_call_max", 1200.0),
        ("max_tokens_in_per_call", 1000, "tokens_in_per_call_max", 1000.0),
        ("max_tokens_out_per_call", 200, "tokens_out_per_call_max", 200.0),
        ("max_cost_per_call", "0.002", "cost_per_call_max", 0.002),
        ("max_wall_per_call", "20ms", "wall_per_call_s", 0.02),
        ("max_cpu_per_call", "5ms", "cpu_per_call_s", 0.005),
        ("max_wait_per_call", "15ms", "wait_per_call_s", 0.015),
        ("max_gc_pause", "10ms", "gc_pause_s", 0.01),
        ("max_gc_pause_once", "2ms", "gc_pause_max_s", 0.002),
        ("max_gc_collections", 50, "gc_collections", 50.0),
    ],
)
def test_every_usage_budget_bounds_its_key(keyword, limit, key, parsed):
    from pyagentbench.results.slo import check_budgets, parse_budgets

    (budget,) = parse_budgets((), {keyword: limit})
    assert budget.limit == pytest.approx(parsed) and budget.metric.keys == (key,)
    assert check_budgets([budget], {key: parsed})[0] == []
    broken, _ = check_budgets([budget], {key: parsed * 1.5})
    assert len(broken) == 1 and broken[0].startswith(f"SLO budget {keyword}=")
