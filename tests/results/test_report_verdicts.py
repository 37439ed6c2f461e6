"""Budget and gate verdicts in their saved form, and the changes a report shows against a baseline."""

from __future__ import annotations

import json

from pyagentbench.results.compare import check_gates, parse_gates
from pyagentbench.results.slo import parse_budgets
from pyagentbench.results.verdicts import baseline_changes, budget_verdicts, gate_verdicts


def test_budget_verdicts_hold_limit_value_and_verdict():
    budgets = parse_budgets((), {"p99": "200ms", "max_allocs_per_call": 20, "min_throughput": 50})
    record = {"p99_s": 0.25, "allocs_per_call": 12.0}
    saved = budget_verdicts(budgets, record)
    assert [(v["keyword"], v["limit"], v["value"], v["verdict"]) for v in saved] == [
        ("p99", 0.2, 0.25, "missed"),
        ("max_allocs_per_call", 20.0, 12.0, "met"),
        ("min_throughput", 50.0, None, "not measured"),
    ]
    assert saved[0]["message"] == ("SLO budget p99='200ms' broken: measured p99 = 250 ms, above the "
                                   "budget of 200 ms")
    assert saved[0]["limit_text"] == "200ms" and saved[0]["bound"] == "max"
    json.dumps(saved)  # saved in pytest-benchmark's JSON as it is


def test_gate_verdicts_pass_and_fail_as_check_gates_decides():
    gates = parse_gates("peak_rss:20%,allocs_per_call:10%")
    baseline = {"t::a": {"peak_rss_bytes": 10 << 20, "allocs_per_call": 100.0},
                "t::b": {"peak_rss_bytes": 10 << 20}}
    current = {"t::a": {"peak_rss_bytes": 15 << 20, "allocs_per_call": 105.0},
               "t::b": {"peak_rss_bytes": 11 << 20},
               "t::new": {"peak_rss_bytes": 99 << 20}}
    verdicts = gate_verdicts(gates, current, baseline, against="0001.json")
    assert set(verdicts) == {"t::a", "t::b"}  # a test the baseline lacks is not gated
    a = {v["gate"]: v for v in verdicts["t::a"]}
    assert a["peak_rss:20%"]["verdict"] == "failed"  # +50% > 20%, 5 MiB > the 1 MiB floor
    assert a["peak_rss:20%"]["change_percent"] == 50.0
    assert a["allocs_per_call:10%"]["verdict"] == "passed"  # +5%
    assert [v["verdict"] for v in verdicts["t::b"]] == ["passed"]  # +10%; allocs not in both
    failed = {(t, v["gate"]) for t, vs in verdicts.items() for v in vs if v["verdict"] == "failed"}
    assert failed == {(r.test, str(r.gate)) for r in check_gates(gates, current, baseline)}
    assert verdicts["t::a"][0]["against"] == "0001.json"
    json.dumps(verdicts)


def test_a_change_from_zero_is_saved_as_null_not_infinity():
    verdicts = gate_verdicts(parse_gates("allocs_per_call:10%"), {"t::a": {"allocs_per_call": 3.0}},
                             {"t::a": {"allocs_per_call": 0.0}})
    (v,) = verdicts["t::a"]
    assert v["verdict"] == "failed" and v["change_percent"] is None


def test_baseline_changes_regressions_and_improvements_beyond_threshold_and_floor():
    gates = parse_gates("throughput:10%,peak_rss:10%,mean:10%")
    baseline = {"t::a": {"throughput_per_s": 1000.0, "peak_rss_bytes": 100 << 20, "mean_s": 1e-3}}
    current = {"t::a": {"throughput_per_s": 850.0,  # fell 15%: regressed
                        "peak_rss_bytes": 80 << 20,  # fell 20 MiB (20%): improved
                        "mean_s": 0.95e-3}}  # fell 5%: within 10%, neither
    changes = {c.gate.metric.name: c for c in baseline_changes(gates, current, baseline)}
    assert set(changes) == {"throughput", "peak_rss"}
    assert changes["throughput"].verdict == "regressed"
    assert round(changes["throughput"].change_percent, 6) == -15.0
    assert changes["peak_rss"].verdict == "improved"
    assert round(changes["peak_rss"].change_percent, 6) == -20.0


def test_an_improvement_within_the_memory_floor_is_not_one():
    gates = parse_gates("peak_rss:10%")  # default floor: 1 MiB
    changes = baseline_changes(gates, {"t::a": {"peak_rss_bytes": 1 << 19}},
                               {"t::a": {"peak_rss_bytes": 1 << 20}})  # -50%, but only 512 KiB
    assert changes == []
