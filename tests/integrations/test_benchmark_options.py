"""pytest-benchmark's options as agent_benchmark applies them: --benchmark-disable-gc,
--benchmark-warmup / --benchmark-warmup-iterations, and the call count for slow targets."""

import json

import pytest

pytest_plugins = ["pytester"]

GC_TESTS = """
import gc

SEEN = []


def probe(x=None):
    SEEN.append(gc.isenabled())
    return x


def test_call(agent_benchmark):
    SEEN.clear()
    agent_benchmark(probe, 1)
    assert SEEN
    print("\\nGC-CALL", sorted(set(SEEN)))


def test_pedantic(agent_benchmark):
    SEEN.clear()
    agent_benchmark.pedantic(probe, (1,), rounds=5, iterations=3)
    print("\\nGC-PEDANTIC", sorted(set(SEEN)))


def test_load(agent_benchmark):
    SEEN.clear()
    agent_benchmark.throughput(probe, range(20), concurrency=2)
    print("\\nGC-LOAD", sorted(set(SEEN)))


def test_gc_is_back_after_the_test():
    print("\\nGC-AFTER", gc.isenabled())
"""


def gc_lines(result):
    return {line.split()[0]: line.split(None, 1)[1] for line in result.outlines if line.startswith("GC-")}


def test_disable_gc_turns_the_collector_off_in_every_pass(pytester):
    pytester.makepyfile(test_gc=GC_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--benchmark-max-time=0.02",
                                           "--benchmark-disable-gc")
    result.assert_outcomes(passed=4)
    # every call of probe, in the timed rounds and the warm-up, saw the collector off (the
    # allocation-counting pass pauses it in any case), and it is back on afterwards
    assert gc_lines(result) == {"GC-CALL": "[False]", "GC-PEDANTIC": "[False]",
                                "GC-LOAD": "[False]", "GC-AFTER": "True"}


def test_without_disable_gc_the_collector_stays_on_while_timing(pytester):
    pytester.makepyfile(test_gc=GC_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--benchmark-max-time=0.02")
    result.assert_outcomes(passed=4)
    lines = gc_lines(result)
    # the timed rounds ran with the collector on; only the counting pass pauses it
    assert "True" in lines["GC-CALL"] and lines["GC-PEDANTIC"] == "[True]"
    assert lines["GC-LOAD"] == "[True]" and lines["GC-AFTER"] == "True"


COUNT_TESTS = """
import time

import pytest

CALLS = []
MS = {ms}


def slow(ms):
    CALLS.append(ms)
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass
    return ms


@pytest.mark.parametrize("fixture", ["benchmark", "agent_benchmark"])
def test_count(request, fixture):
    CALLS.clear()
    bench = request.getfixturevalue(fixture)
    assert bench(slow, MS) == MS
    print("\\nCALLS", fixture, len(CALLS))
"""


def call_counts(pytester, ms, *options):
    pytester.makepyfile(test_count=COUNT_TESTS.replace("{ms}", str(ms)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *options)
    result.assert_outcomes(passed=2)
    return {line.split()[1]: int(line.split()[2]) for line in result.outlines if line.startswith("CALLS ")}


@pytest.mark.parametrize(
    "ms, options",
    [
        (30, ("--benchmark-max-time=0.1",)),
        (30, ("--benchmark-max-time=0.1", "--benchmark-min-rounds=3")),
        (15, ("--benchmark-max-time=0.2",)),
    ],
)
def test_slow_targets_cost_at_most_one_call_more_than_benchmark(pytester, ms, options):
    counts = call_counts(pytester, ms, *options)
    # pytest-benchmark: one calibration call, the rounds, one call for the result; agent_benchmark:
    # one calibrating call that is also the warm-up, the rounds, and one counted call
    assert counts["agent_benchmark"] <= counts["benchmark"] + 1, counts


def test_warmup_iterations_are_honoured(pytester):
    off = call_counts(pytester, 20, "--benchmark-max-time=0.1")
    on = call_counts(pytester, 20, "--benchmark-max-time=0.1", "--benchmark-warmup=on",
                     "--benchmark-warmup-iterations=3")
    # 3 warm-up calls (of 20 ms: fewer than fit in --benchmark-max-time) on top of the same run
    assert on["agent_benchmark"] - off["agent_benchmark"] == 3, (off, on)


def test_warmup_is_recorded_as_pytest_benchmark_records_it(pytester):
    pytester.makepyfile(test_count=COUNT_TESTS.replace("{ms}", "1"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-max-time=0.02",
                                           "--benchmark-warmup=on", "--benchmark-warmup-iterations=50",
                                           "--benchmark-disable-gc", "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "out.json").read_text())
    options = {b["param"]: b["options"] for b in data["benchmarks"]}
    assert options["agent_benchmark"]["disable_gc"] is True
    assert options["agent_benchmark"]["warmup"] == options["benchmark"]["warmup"] == 50
