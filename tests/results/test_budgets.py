"""SLO budgets: the new keywords, and stacked markers merged nearest first."""

from __future__ import annotations

import pytest

from pyagentbench.results.slo import check_budgets, merge_markers, parse_budgets


def test_stream_and_process_budgets():
    budgets = {b.keyword: b for b in parse_budgets((), {"ttft": "200ms", "inter_item": "5ms",
                                                         "max_process_rss": "1GiB"})}
    assert budgets["ttft"].limit == pytest.approx(0.2) and budgets["ttft"].metric.name == "ttft"
    assert budgets["inter_item"].limit == pytest.approx(0.005)
    assert budgets["max_process_rss"].limit == 1 << 30
    assert budgets["max_process_rss"].metric.name == "process_peak_rss"
    broken, unmeasured = check_budgets(list(budgets.values()),
                                       {"ttft_s": 0.3, "inter_item_s": 0.001, "peak_rss_bytes": 2 << 30})
    assert broken == ["SLO budget ttft='200ms' broken: measured ttft = 300 ms, above the budget of 200 ms"]
    assert [b.keyword for b in unmeasured] == ["max_process_rss"]  # the test's own peak is another number


def test_merge_markers_nearest_wins_per_keyword():
    method = ((), {"max_allocs_per_call": 10})
    klass = ((), {"p99": "10s", "max_allocs_per_call": 1000})
    module = ((), {"p99": "1ns", "max_rss": "50MB"})
    assert merge_markers([method, klass, module]) == ((), {"max_allocs_per_call": 10, "p99": "10s",
                                                           "max_rss": "50MB"})


@pytest.mark.parametrize(
    ("markers", "message"),
    [
        ([((), {"p99": "1s"}), (("1s",), {})], "takes keyword arguments only"),
        ([((), {"p99": "1s"}), ((), {})], "needs at least one budget"),
    ],
)
def test_merge_markers_checks_each_marker(markers, message):
    with pytest.raises(ValueError, match=message):
        merge_markers(markers)


def test_a_budget_is_an_absolute_limit_without_a_floor():
    budgets = parse_budgets((), {"max_rss": "1MiB"})
    assert check_budgets(budgets, {"peak_rss_bytes": 1 << 20}) == ([], [])
    broken, _ = check_budgets(budgets, {"peak_rss_bytes": (1 << 20) + 1})
    assert broken == ["SLO budget max_rss='1MiB' broken: measured peak_rss = 1048577 B, above the budget of 1048576 B"]


def test_none_on_a_nearer_marker_lifts_an_inherited_budget():
    from pyagentbench.results.slo import merge_markers, parse_budgets

    # method marker first (nearest), then the class's
    args, kwargs = merge_markers([((), {"max_allocs_per_call": None}),
                                  ((), {"max_allocs_per_call": 10, "p99": "1ms"})])
    budgets = parse_budgets(args, kwargs)
    assert [b.keyword for b in budgets] == ["p99"]
