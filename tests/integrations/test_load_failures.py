"""agent_benchmark.throughput() when tasks fail: the test says what went wrong, the way a user runs it
(pytester in a subprocess; the plugin loads by its entry point)."""

import json

import pytest

import pyagentbench

if not hasattr(pyagentbench, "Histogram"):
    pytest.skip("the native runtime (Histogram) is not built in", allow_module_level=True)

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=3")


def run(pytester, *args):
    return pytester.runpytest_subprocess(*FAST, *args)


def records(pytester, name="out.json"):
    doc = json.loads((pytester.path / name).read_text())
    return {b["name"]: b["extra_info"]["agentbench"] for b in doc["benchmarks"]}


ALL_FAILED = """
def handle(payload):
    raise ValueError(f"no API key for model gpt-x (payload {payload})")


def test_every_task_fails(agent_benchmark):
    result = agent_benchmark.throughput(handle, range(50), concurrency=1)
    print("the test went on after the load")
"""


def test_a_load_in_which_every_task_failed_fails_the_test_with_the_first_exception(pytester):
    # Before: the test passed, with every task failed and nothing said why.
    pytester.makepyfile(test_all_failed=ALL_FAILED)
    result = run(pytester)
    assert result.ret == 1
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*agent_benchmark load: all 50 tasks failed (ValueError: 50); the first failure:*",
        "Traceback (most recent call last):",
        '*test_all_failed.py", line 2, in handle*',
        "ValueError: no API key for model gpt-x (payload 0)",
    ])
    assert "the test went on" not in result.stdout.str()
    assert "load_worker" not in result.stdout.str()  # the traceback starts in the user's code


def test_every_task_failed_also_fails_under_benchmark_disable(pytester):
    pytester.makepyfile(test_all_failed=ALL_FAILED)
    result = run(pytester, "--benchmark-disable")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*all 50 tasks failed (ValueError: 50)*",
        "ValueError: no API key for model gpt-x (payload 0)",
    ])


SOME_FAILED = """
import pytest


def handle(payload):
    if payload % 4 == 0:
        raise ValueError("bad payload")
    if payload % 4 == 1:
        raise KeyError(payload)
    return payload


def test_some_fail(agent_benchmark):
    result = agent_benchmark.throughput(handle, range(200), concurrency=4)
    assert result.errors_by_type == {"ValueError": 50, "KeyError": 50}


@pytest.mark.slo(max_error_rate=0.1)
def test_all_fail_and_break_a_budget(agent_benchmark):
    agent_benchmark.throughput(lambda p: 1 / 0, range(20), concurrency=2)
"""


def test_failures_by_type_land_in_extra_info(pytester):
    pytester.makepyfile(test_some_failed=SOME_FAILED)
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1, failed=1)
    record = records(pytester)["test_some_fail"]
    assert record["errors_by_type"] == {"ValueError": 50, "KeyError": 50}
    assert (record["completed"], record["failed"], record["error_rate"]) == (100, 100, 0.5)
    # The budget is broken too, but what the user must read first is why nothing worked.
    result.stdout.fnmatch_lines([
        "*all 20 tasks failed (ZeroDivisionError: 20)*",
        "ZeroDivisionError: division by zero",
    ])
    # and it is the one failure shown, not a second one "during handling" of the budget's
    assert "During handling of the above exception" not in result.stdout.str()
    assert "SLO budget" not in result.stdout.str()


CLASS_NOT_INSTANCE = """
import pyagentbench


class MyAgent(pyagentbench.Agent):
    def handle(self, task):
        return task.payload


def test_class(agent_benchmark):
    agent_benchmark.throughput(MyAgent, range(10))


def test_instance(agent_benchmark):
    with MyAgent() as agent:
        assert agent_benchmark.throughput(agent, range(10)).completed == 10
"""


def test_an_agent_class_instead_of_an_instance_says_pass_an_instance(pytester):
    # Before: every task failed (MyAgent(payload) is a TypeError) and the test passed.
    pytester.makepyfile(test_class=CLASS_NOT_INSTANCE)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*TypeError: agent_benchmark.throughput(): target is the class MyAgent, not an agent: "
        "pass an instance, e.g. MyAgent()*",
    ])


TIMEOUT = """
import asyncio
import time


async def ahandle(payload):
    await asyncio.sleep(30 if payload % 10 == 0 else 0.001)
    return payload


def test_async_timeout(agent_benchmark):
    result = agent_benchmark.throughput(ahandle, range(100), concurrency=10, timeout=0.2)
    assert result.errors_by_type == {"TimeoutError": 10}
    assert result.completed == 90


def handle(payload):
    time.sleep(0.3 if payload < 2 else 0)
    return payload


def test_sync_timeout(agent_benchmark):
    result = agent_benchmark.throughput(handle, range(20), concurrency=2, timeout=0.1)
    assert result.errors_by_type == {"TimeoutError": 2}


def test_every_task_times_out(agent_benchmark):
    agent_benchmark.throughput(ahandle, [0] * 5, concurrency=5, timeout=0.05)


def test_bad_timeout(agent_benchmark):
    agent_benchmark.throughput(handle, range(2), timeout=-1)
"""


def test_a_per_task_timeout(pytester):
    pytester.makepyfile(test_timeout=TIMEOUT)
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=2, failed=2)
    assert records(pytester)["test_async_timeout"]["errors_by_type"] == {"TimeoutError": 10}
    result.stdout.fnmatch_lines([
        "*all 5 tasks failed (TimeoutError: 5)*",
        "TimeoutError: the task ran longer than the 0.05 s timeout and was cancelled",
    ])
    result.stdout.fnmatch_lines(["*ValueError: timeout must be a finite number > 0, got -1*"])


MEAN_BUDGET = """
import time

import pytest


def handle(payload):
    time.sleep(0.01)


@pytest.mark.slo(mean="1us")
def test_mean_too_slow(agent_benchmark):
    agent_benchmark.throughput(handle, range(40), concurrency=4)


@pytest.mark.slo(mean="10s")
def test_mean_within(agent_benchmark):
    agent_benchmark.throughput(handle, range(40), concurrency=4)
"""


def test_a_mean_budget_on_a_load_only_test_is_measured(pytester):
    # Before: "SLO budgets set but never measured: mean ..." for both tests.
    pytester.makepyfile(test_mean=MEAN_BUDGET)
    result = run(pytester, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*SLO budget mean='1us' broken: measured mean = *ms, above the budget of 1 *s*"])
    assert "never measured" not in result.stdout.str()
    mean_s = records(pytester)["test_mean_within"]["latency_mean_s"]
    assert mean_s >= 0.01  # each task sleeps 10 ms
