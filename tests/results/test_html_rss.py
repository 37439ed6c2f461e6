"""The RSS timeline a benchmark saves (``extra_info["agentbench"]["rss_timeline"]``) and the load
latency quantiles the HTML report draws."""

from __future__ import annotations

import json
import time

import pytest

from pyagentbench.instruments.observe import RSS_TIMELINE_POINTS, ResourceWindow, rss_timeline

pytest_plugins = ["pytester"]

MiB = 1 << 20


def test_a_long_series_is_cut_to_512_points_and_keeps_its_peak():
    n = 100_000
    times = [i * 1_000_000 for i in range(n)]  # one sample a millisecond, in ns
    rss = [100 * MiB] * n
    rss[54_321] = 180 * MiB  # one sample high: a peak shorter than any bucket
    rss[77_777] = 20 * MiB  # and one low
    timeline = rss_timeline(times, rss)
    assert len(timeline["t_s"]) == len(timeline["rss_bytes"]) <= RSS_TIMELINE_POINTS == 512
    assert max(timeline["rss_bytes"]) == 180 * MiB
    assert min(timeline["rss_bytes"]) == 20 * MiB
    assert 54.321 in timeline["t_s"]  # the peak keeps its own time (54_321 ms after the first)
    assert timeline["t_s"] == sorted(timeline["t_s"])
    assert timeline["t_s"][0] == 0.0 and timeline["t_s"][-1] <= 99.999


def test_a_short_series_is_kept_whole():
    timeline = rss_timeline([5_000_000_000, 5_001_000_000, 5_003_000_000], [10, 30, 20])
    assert timeline == {"t_s": [0.0, 0.001, 0.003], "rss_bytes": [10, 30, 20]}
    assert rss_timeline([], []) == {"t_s": [], "rss_bytes": []}


def test_a_50_mib_allocation_shows_as_a_50_mib_step():
    window = ResourceWindow(interval=0.001)
    with window:
        time.sleep(0.05)
        block = b"x" * (50 << 20)  # written, so every page is resident
        time.sleep(0.05)
    del block
    timeline = window.metrics["rss_timeline"]
    rss = timeline["rss_bytes"]
    assert 2 <= len(rss) <= 512
    before = rss[0]
    step = max(rss) - before
    assert 45 * MiB <= step <= 56 * MiB, step / MiB
    # The step comes after the first 50 ms of the window, not at its start.
    first_high = next(t for t, v in zip(timeline["t_s"], rss) if v - before > 40 * MiB)
    assert first_high >= 0.04


def test_the_saved_run_holds_the_timeline_and_the_load_quantiles(pytester: pytest.Pytester):
    pytester.makepyfile(test_rss="""
import time


def hold():
    block = b"x" * (50 << 20)
    time.sleep(0.01)
    return len(block)


def test_hold(agent_benchmark):
    agent_benchmark.pedantic(hold, rounds=3)


def test_load(agent_benchmark):
    agent_benchmark.throughput(lambda p: time.sleep(0.001 * p), list(range(1, 11)) * 3,
                               concurrency=2)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-json=out.json")
    assert result.ret == 0, result.stdout.str()
    saved = {b["name"]: b["extra_info"]["agentbench"]
             for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]}
    timeline = saved["test_hold"]["rss_timeline"]
    assert 2 <= len(timeline["t_s"]) <= 512
    assert max(timeline["rss_bytes"]) - timeline["rss_bytes"][0] >= 45 * MiB
    quantiles = saved["test_load"]["load_latency_quantiles_s"]
    assert len(quantiles) == 101 and quantiles == sorted(quantiles)
    # Tasks sleep 1..10 ms: the quantiles span that (histogram precision 3 digits, plus overhead).
    assert 0.0009 <= quantiles[0] < 0.003
    assert 0.0099 <= quantiles[100] < 0.05
