"""Regression gates: which way is worse, how much worse is allowed, and the floor below which a
change is noise. Each case's answer follows from the numbers in it."""

from __future__ import annotations

import math

import pytest

from pyagentbench.results.compare import Gate, check_gates, format_regressions, parse_gates
from pyagentbench.results.metrics import (
    BYTES_PER_CALL_FLOOR_BYTES,
    METRICS,
    PEAK_RSS_FLOOR_BYTES,
    PROCESS_PEAK_RSS_FLOOR_BYTES,
    RSS_DELTA_FLOOR_BYTES,
    metric,
    metric_value,
)

MiB = 1 << 20
KiB = 1 << 10


def gate(text: str) -> Gate:
    (only,) = parse_gates(text)
    return only


# ---- direction ----------------------------------------------------------------------------------


def test_throughput_gate_fails_on_a_fall_not_on_a_rise():
    g = gate("throughput:10%")
    assert not g.fails(1000.0, 1500.0)  # +50%: an improvement
    assert not g.fails(1000.0, 950.0)  # -5%: within 10%
    assert g.fails(1000.0, 850.0)  # -15%


def test_memory_gate_fails_on_growth_not_when_memory_halves():
    g = gate("peak_rss:20%")
    assert not g.fails(100 * MiB, 50 * MiB)
    assert not g.fails(100 * MiB, 115 * MiB)
    assert g.fails(100 * MiB, 130 * MiB)


def test_a_sign_that_agrees_with_the_metric_is_the_same_gate():
    assert gate("peak_rss:+20%") == gate("peak_rss:20%")
    assert gate("throughput:-10%") == gate("throughput:10%")
    assert str(gate("throughput:-10%")) == "throughput:10%"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("peak_rss:-20%", "peak_rss:-20%: a fall in peak_rss is an improvement; write peak_rss:20% to allow 20% growth"),
        ("p99:-15%", "p99:-15%: a fall in p99 is an improvement; write p99:15% to allow 15% growth"),
        ("throughput:+10%", "throughput:+10%: a rise in throughput is an improvement; write throughput:10% to allow a 10% fall"),
        ("peak_rss:-0%", "peak_rss:-0%: a fall in peak_rss is an improvement; write peak_rss:0% to allow 0% growth"),
    ],
)
def test_a_sign_that_contradicts_the_metric_says_how_to_fix_it(text, message):
    with pytest.raises(ValueError) as excinfo:
        parse_gates(text)
    assert str(excinfo.value) == message


def test_zero_percent_fails_on_any_worsening_beyond_the_floor():
    g = gate("throughput:0%")
    assert g.fails(1000.0, 999.0) and not g.fails(1000.0, 1001.0)
    g = gate("allocs_per_call:0%")
    assert g.fails(2.0, 3.0) and not g.fails(2.0, 2.0) and not g.fails(2.0, 1.0)


def test_every_metric_knows_which_way_is_worse():
    assert {name for name, m in METRICS.items() if m.higher_is_better} == {"throughput", "tokens_saved_per_call"}
    for name in ("ttft", "inter_item", "process_peak_rss", "error_rate", "cpu_percent"):
        g = gate(f"{name}:10%:floor=0")
        assert g.fails(1.0, 1.2) and not g.fails(1.0, 0.5), name


# ---- floors -------------------------------------------------------------------------------------


def test_memory_gates_carry_their_default_floor():
    assert gate("peak_rss:20%").floor == PEAK_RSS_FLOOR_BYTES == MiB
    assert gate("process_peak_rss:20%").floor == PROCESS_PEAK_RSS_FLOOR_BYTES == 8 * MiB
    assert gate("rss_delta:50%").floor == RSS_DELTA_FLOOR_BYTES == 2 * MiB
    assert gate("bytes_per_call:10%").floor == BYTES_PER_CALL_FLOOR_BYTES == 8 * KiB
    assert gate("allocs_per_call:10%").floor == gate("p99:10%").floor == 0


def test_a_tiny_peak_doubling_is_below_the_floor():
    g = gate("peak_rss:20%")
    assert not g.fails(4 * KiB, 8 * KiB)  # +100%, but 4 KiB is noise
    assert not g.fails(4 * KiB, MiB + 4 * KiB)  # exactly the floor: not more than it
    assert g.fails(4 * KiB, MiB + 8 * KiB)
    assert g.fails(0, 2 * MiB)  # from nothing to 2 MiB: past the floor, an infinite percentage


def test_a_large_change_must_pass_both_the_percentage_and_the_floor():
    g = gate("peak_rss:20%")
    assert not g.fails(100 * MiB, 110 * MiB)  # 10 MiB is past the floor, but only +10%
    assert g.fails(100 * MiB, 121 * MiB)


@pytest.mark.parametrize(
    ("text", "floor", "shown"),
    [
        ("peak_rss:20%:floor=4MiB", 4 * MiB, "peak_rss:20%:floor=4MiB"),
        ("peak_rss:20%:floor=0", 0.0, "peak_rss:20%:floor=0"),
        ("rss_delta:50% : floor = 512KiB", 512 * KiB, "rss_delta:50%:floor=512KiB"),
        ("p99:10%:floor=50us", 50e-6, "p99:10%:floor=50us"),
        ("allocs_per_call:10%:floor=2", 2.0, "allocs_per_call:10%:floor=2"),
    ],
)
def test_the_floor_can_be_set_per_gate(text, floor, shown):
    g = gate(text)
    assert g.floor == pytest.approx(floor)
    assert str(g) == shown


def test_floor_zero_makes_a_tiny_change_count():
    assert gate("peak_rss:20%:floor=0").fails(4 * KiB, 8 * KiB)
    assert not gate("peak_rss:20%:floor=8MiB").fails(10 * MiB, 14 * MiB)  # +40%, 4 MiB < 8 MiB


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("peak_rss:20%:floor=lots", "bad gate 'peak_rss:20%:floor=lots': floor cannot parse size 'lots'*"),
        ("peak_rss:20%:floor=-1MiB", "bad gate 'peak_rss:20%:floor=-1MiB': floor a size must be finite and >= 0*"),
        ("peak_rss:20%:cap=1MiB", "bad gate 'peak_rss:20%:cap=1MiB': unknown option 'cap'*"),
        ("allocs_per_call:10%:floor=nan", "bad gate 'allocs_per_call:10%:floor=nan': the floor must be a number >= 0*"),
        ("peak_rss:lots", "bad gate 'peak_rss:lots': expected METRIC:PERCENT%*"),
        ("rss_peak:20%", "unknown metric 'rss_peak'*"),
        (",", "no gates given*"),
    ],
)
def test_bad_gates_are_named(text, message):
    with pytest.raises(ValueError) as excinfo:
        parse_gates(text)
    from fnmatch import fnmatchcase

    assert fnmatchcase(str(excinfo.value), message), str(excinfo.value)


# ---- checking and listing -----------------------------------------------------------------------


def test_several_gates_tripping_are_all_listed():
    gates = parse_gates("peak_rss:20%,allocs_per_call:10%,throughput:10%,p99:15%")
    baseline = {
        "t.py::test_a": {"peak_rss_bytes": 40 * MiB, "allocs_per_call": 10, "p99_s": 1e-3},
        "t.py::test_b": {"throughput_per_s": 1000.0, "latency_p99_s": 2e-3},
        "t.py::test_new_only_now": {},
    }
    current = {
        "t.py::test_a": {"peak_rss_bytes": 80 * MiB, "allocs_per_call": 12, "p99_s": 1e-3},
        "t.py::test_b": {"throughput_per_s": 500.0, "latency_p99_s": 3e-3},
        "t.py::test_new": {"peak_rss_bytes": 1 << 40},
    }
    found = check_gates(gates, current, baseline)
    assert [(r.test, r.gate.metric.name) for r in found] == [
        ("t.py::test_a", "peak_rss"),
        ("t.py::test_a", "allocs_per_call"),
        ("t.py::test_b", "throughput"),
        ("t.py::test_b", "p99"),
    ]
    lines = format_regressions(found)
    assert lines[0].split() == ["test", "metric", "baseline", "now", "change", "gate"]
    assert lines[1].split() == ["t.py::test_a", "peak_rss", "40", "MiB", "80", "MiB", "+100.0%", "peak_rss:20%"]
    assert lines[3].split() == ["t.py::test_b", "throughput", "1", "ktasks/s", "500", "tasks/s", "-50.0%",
                                "throughput:10%"]
    assert len(lines) == 5


def test_check_gates_names_the_test_and_key_of_a_value_that_is_not_a_number():
    with pytest.raises(ValueError, match=r"t.py::test_a: peak_rss_bytes is a string \('12'\), not a number"):
        check_gates(parse_gates("peak_rss:20%"), {"t.py::test_a": {"peak_rss_bytes": 1.0}},
                    {"t.py::test_a": {"peak_rss_bytes": "12"}})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("12", "peak_rss_bytes is a string ('12'), not a number"),
        ([1], "peak_rss_bytes is a list ([1]), not a number"),
        ({"a": 1}, "peak_rss_bytes is an object ({'a': 1}), not a number"),
        (True, "peak_rss_bytes is true, not a number"),
        (math.nan, "peak_rss_bytes is nan, not a finite number"),
        (-math.inf, "peak_rss_bytes is -inf, not a finite number"),
        (10**400, "peak_rss_bytes is a 401-digit integer, too large for a float"),
    ],
)
def test_metric_value_refuses_what_is_not_a_finite_number(value, problem):
    with pytest.raises(ValueError) as excinfo:
        metric_value({"peak_rss_bytes": value}, metric("peak_rss"))
    assert str(excinfo.value) == problem


def test_new_metrics_read_their_keys_and_format_in_their_unit():
    record = {"ttft_s": 0.25, "inter_item_s": 2e-3, "process_peak_rss_bytes": 300 * MiB,
              "latency_mean_s": 1e-3, "mean_s": 5e-3}
    assert metric_value(record, metric("ttft")) == 0.25
    assert metric("ttft").format(0.25) == "250 ms"
    assert metric("inter_item").format(2e-3) == "2 ms"
    assert metric("process_peak_rss").format(300 * MiB) == "300 MiB"
    assert metric_value(record, metric("mean")) == 1e-3  # a load run's mean before the loop's
