"""The compare engine on saved runs whose answer is known: a benchmark made 20% slower, the same
code measured twice, a change drowned in the run's own drift, deterministic counts, the
geometric mean, and runs from different machines."""

from __future__ import annotations

import json
import math
import random

import pytest

from pyagentbench.results.baseline import BaselineError
from pyagentbench.results.compare import (
    DEFAULT_FAIL,
    FINGERPRINT_KEY,
    GEOMEAN,
    Gate,
    check_gates,
    compare_runs,
    format_comparison,
    load_run,
    parse_gates,
    run_from_json,
)
from pyagentbench.results.metrics import metric
from pyagentbench.results.samples import SAMPLES_KEY, Samples


def rounds(median: float, seed: int, n: int = 320, noise: float = 0.02, drift: float = 0.0) -> list[float]:
    """n rounds around *median* with relative *noise*; *drift* makes the run's blocks of rounds
    alternate between +drift and -drift (a machine whose speed swings during the run)."""
    rng = random.Random(seed)
    block = max(1, n // 16)
    return [median * (1 + (drift if (i // block) % 2 else -drift)) * (1 + rng.gauss(0, noise)) for i in range(n)]


def entry(name: str, values: list[float] | None, record: dict | None = None, raw: bool = False,
          group: str | None = None) -> dict:
    ordered = sorted(values or [1.0])
    stats = {"min": ordered[0], "max": ordered[-1], "mean": sum(ordered) / len(ordered),
             "stddev": 0.0, "median": ordered[len(ordered) // 2], "rounds": len(ordered)}
    if raw:
        stats["data"] = list(values or [])
    extra: dict = {}
    if record is not None or (values and not raw):
        extra["agentbench"] = dict(record or {})
        if values and not raw:
            extra["agentbench"][SAMPLES_KEY] = Samples.from_values(values).to_json()
            extra["agentbench"]["median_s"] = stats["median"]
            extra["agentbench"]["mean_s"] = stats["mean"]
    return {"name": name, "fullname": f"test_x.py::{name}", "group": group, "stats": stats,
            "extra_info": extra}


def document(*entries: dict, environment: dict | None = None) -> dict:
    data = {"machine_info": {"node": "ci"}, "benchmarks": list(entries), "datetime": "2026-12-03T12:00:00"}
    if environment is not None:
        data[FINGERPRINT_KEY] = environment
    return data


def compare(base: dict, now: dict, fail: str = DEFAULT_FAIL, **options):
    return compare_runs(run_from_json(base, "base.json"), run_from_json(now, "now.json"),
                        gates=parse_gates(fail) if fail else [], **options)


def row(comparison, name: str, metric_name: str):
    (found,) = [r for r in comparison.rows if r.test.endswith("::" + name) and r.metric.name == metric_name]
    return found


def test_a_benchmark_made_20_percent_slower_is_a_significant_regression_and_fails_the_gate():
    base = document(entry("test_slow", rounds(1e-3, 1)), entry("test_same", rounds(1e-3, 2)))
    now = document(entry("test_slow", rounds(1.2e-3, 3)), entry("test_same", rounds(1e-3, 4)))
    result = compare(base, now)
    slow = row(result, "test_slow", "p50")
    assert slow.change == pytest.approx(20, abs=2)
    assert slow.shift.low > 15 and slow.shift.high < 25
    assert slow.shift.p_value < 0.001
    assert (slow.verdict, slow.failed) == ("regressed", True)
    assert [f.test for f in result.failures] == ["test_x.py::test_slow"]
    same = row(result, "test_same", "p50")
    assert (same.verdict, same.failed) == ("unchanged", False)
    assert same.shift.low > -5 and same.shift.high < 5


def test_the_same_code_measured_twice_passes():
    base = document(*(entry(f"test_{i}", rounds(10e-6 * (i + 1), i)) for i in range(10)))
    now = document(*(entry(f"test_{i}", rounds(10e-6 * (i + 1), 100 + i)) for i in range(10)))
    result = compare(base, now)
    assert result.failures == []
    assert {r.verdict for r in result.rows if r.metric.name == "p50"} == {"unchanged"}


def test_a_change_beyond_the_threshold_within_the_runs_own_drift_is_not_significant():
    # Each run swings +-20% between blocks of rounds; the new run's median is 15% higher. A
    # percentage gate alone fails it; the test cannot tell the change from the swing.
    base = document(entry("test_noisy", rounds(1e-3, 1, drift=0.2)))
    now = document(entry("test_noisy", rounds(1.15e-3, 2, drift=0.2)))
    result = compare(base, now)
    noisy = row(result, "test_noisy", "p50")
    gate = parse_gates("p50:10%")[0]
    assert gate.fails(noisy.baseline, noisy.now)  # the percentage alone
    assert noisy.shift.p_value > 0.01
    assert (noisy.verdict, noisy.failed) == ("not significant", False)
    assert result.failures == []


def test_a_timing_gate_needs_the_whole_interval_beyond_its_threshold():
    # 12% slower, measured tightly: the interval lies above 10%. 11% slower in a noisier run:
    # significant, but the interval reaches below 10%, so the gate holds (the verdict still says
    # it regressed).
    base = document(entry("test_tight", rounds(1e-3, 1, noise=0.005)), entry("test_loose", rounds(1e-3, 2, noise=0.15)))
    now = document(entry("test_tight", rounds(1.12e-3, 3, noise=0.005)), entry("test_loose", rounds(1.11e-3, 4, noise=0.15)))
    result = compare(base, now)
    tight, loose = row(result, "test_tight", "p50"), row(result, "test_loose", "p50")
    assert tight.shift.low > 10 and tight.failed
    assert loose.shift.p_value < 0.01 and loose.shift.low < 10
    assert (loose.verdict, loose.failed) == ("regressed", False)


def test_alpha_decides_significance():
    base = document(entry("test_a", rounds(1e-3, 1)))
    now = document(entry("test_a", rounds(1.3e-3, 2)))
    assert compare(base, now, alpha=0.01).failures
    # 16 blocks against 16 cannot reach p < 1e-9, however far apart they are.
    assert compare(base, now, alpha=1e-9).failures == []
    assert row(compare(base, now, alpha=1e-9), "test_a", "p50").verdict == "not significant"


def test_deterministic_metrics_need_no_test():
    base = document(entry("test_a", rounds(1e-3, 1), {"allocs_per_call": 100.0}))
    now = document(entry("test_a", rounds(1e-3, 2), {"allocs_per_call": 120.0}))
    result = compare(base, now, fail="allocs_per_call:10%")
    allocs = row(result, "test_a", "allocs_per_call")
    assert allocs.shift is None
    assert (allocs.change, allocs.verdict, allocs.failed) == (pytest.approx(20.0), "regressed", True)


def test_the_geometric_mean_row_averages_ratios():
    base = document(entry("test_a", rounds(1e-3, 1)), entry("test_b", rounds(1e-3, 2)))
    now = document(entry("test_a", rounds(2e-3, 3)), entry("test_b", rounds(0.5e-3, 4)))
    result = compare(base, now, fail="")
    (p50,) = [r for r in result.geomean if r.metric.name == "p50"]
    assert p50.change == pytest.approx(0.0, abs=1.5)  # x2 and x0.5 average to x1
    assert p50.verdict == "unchanged"
    assert GEOMEAN in format_comparison(result)


def test_plain_benchmarks_saved_with_their_data_are_tested_too():
    base = document(entry("test_plain", rounds(1e-3, 1), raw=True))
    now = document(entry("test_plain", rounds(1.25e-3, 2), raw=True))
    plain = row(compare(base, now), "test_plain", "p50")
    assert plain.shift is not None and plain.failed


def test_without_samples_a_timing_gate_is_a_percentage():
    base = document(entry("test_plain", rounds(1e-3, 1), raw=True))
    now = document(entry("test_plain", rounds(1.25e-3, 2), raw=True))
    for data in (base, now):
        del data["benchmarks"][0]["stats"]["data"]
    plain = row(compare(base, now), "test_plain", "p50")
    assert plain.shift is None and plain.failed and plain.verdict == "regressed"


def test_runs_from_different_environments_warn():
    env = {"cpu": "AMD EPYC", "cores": "2", "python": "CPython 3.11.7"}
    other = dict(env, cpu="Intel Xeon")
    result = compare(document(entry("test_a", rounds(1e-3, 1)), environment=env),
                     document(entry("test_a", rounds(1e-3, 2)), environment=other))
    (warning,) = result.warnings
    assert "different environments" in warning and "'AMD EPYC' vs 'Intel Xeon'" in warning
    assert "warning: the runs come from different environments" in format_comparison(result)
    same = compare(document(entry("test_a", rounds(1e-3, 1)), environment=env),
                   document(entry("test_a", rounds(1e-3, 2)), environment=dict(env)))
    assert same.warnings == []


def test_check_gates_on_plugin_records_uses_the_samples_and_alpha():
    base = entry("test_a", rounds(1e-3, 1))["extra_info"]["agentbench"]
    now = entry("test_a", rounds(1.3e-3, 2))["extra_info"]["agentbench"]
    gates = parse_gates("p50:10%")
    (failure,) = check_gates(gates, {"t": now}, {"t": base})
    assert failure.shift is not None and failure.shift.low > 10
    assert check_gates(gates, {"t": now}, {"t": base}, alpha=1e-9) == []


def test_a_damaged_summary_names_the_file_test_and_key(tmp_path):
    data = document(entry("test_a", rounds(1e-3, 1)))
    data["benchmarks"][0]["extra_info"]["agentbench"][SAMPLES_KEY]["count"] = 3
    path = tmp_path / "0001_base.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError) as exc:
        load_run(path)
    assert str(path) in str(exc.value)
    assert f"test_x.py::test_a: extra_info.agentbench.{SAMPLES_KEY}: the bins and zeros hold 320 values" in str(exc.value)


def test_output_formats():
    base = document(entry("test_slow", rounds(1e-3, 1), group="agents"))
    now = document(entry("test_slow", rounds(1.2e-3, 2), group="agents"))
    result = compare(base, now)
    table = format_comparison(result, columns=["test", "metric", "change", "verdict"])
    assert "-- agents --" in table
    assert "FAILED test_x.py::test_slow: p50" in table
    markdown = format_comparison(result, "markdown")
    assert "| test | metric | baseline | now | change | 95% CI | p | verdict | gate |" in markdown
    data = json.loads(format_comparison(result, "json"))
    (p50,) = [r for r in data["rows"] if r["metric"] == "p50"]
    assert p50["verdict"] == "regressed" and p50["failed"] is True and p50["replicates"] == [16, 16]
    with pytest.raises(ValueError, match="unknown sort"):
        format_comparison(result, sort="bogus")


def test_gate_percent_semantics_are_unchanged_for_higher_is_better_metrics():
    gate = Gate(metric("throughput"), 10.0)
    assert gate.fails(100.0, 85.0) and not gate.fails(100.0, 95.0)


def test_run_noise_is_the_robust_spread_of_the_benchmarks_changes():
    from pyagentbench.results.stats import run_noise

    assert run_noise([5.0] * 8) == 0.0  # all moved alike: no spread
    # log ratios +-d around their median: MAD = d, so the noise is expm1(1.4826 d).
    d = 0.1
    changes = [math.expm1(x) * 100 for x in (-d, -d, -d, 0.0, d, d, d)]
    assert run_noise(changes) == pytest.approx(math.expm1(1.4826 * d) * 100)
    # one benchmark that really changed does not move it
    assert run_noise(changes + [500.0]) == pytest.approx(run_noise(changes), rel=0.5)
    assert run_noise([1.0] * 5) is None  # too few benchmarks to tell


def test_a_machine_that_moved_between_runs_hides_what_it_cannot_tell_apart():
    # Twelve benchmarks: between the runs each one moved by up to +-30% (another job on the
    # machine), each run steady within itself. One really got 20% slower; no benchmark's change
    # stands out of the spread, so nothing fails, and the spread is reported.
    rng = random.Random(5)
    names = [f"test_{i}" for i in range(12)]
    moves = [rng.uniform(-0.3, 0.3) for _ in names]
    base = document(*(entry(n, rounds(1e-3, i)) for i, n in enumerate(names)))
    now = document(*(entry(n, rounds(1e-3 * (1 + move) * (1.2 if i == 0 else 1), 50 + i))
                     for i, (n, move) in enumerate(zip(names, moves))))
    result = compare(base, now)
    assert result.failures == []
    assert result.run_noise["p50"] > 10
    assert "run-to-run noise" in format_comparison(result)


def test_on_a_steady_machine_a_20_percent_slowdown_stands_out():
    names = [f"test_{i}" for i in range(12)]
    base = document(*(entry(n, rounds(1e-3, i)) for i, n in enumerate(names)))
    now = document(*(entry(n, rounds(1e-3 * (1.2 if i == 0 else 1), 50 + i)) for i, n in enumerate(names)))
    result = compare(base, now)
    assert result.run_noise["p50"] < 2
    assert [f.test for f in result.failures] == ["test_x.py::test_0"]


def test_benchmarks_with_few_rounds_are_tested_on_their_rounds():
    base = document(entry("test_few", rounds(1e-3, 1, n=12)))
    now = document(entry("test_few", rounds(1.3e-3, 2, n=12)))
    few = row(compare(base, now), "test_few", "p50")
    assert (few.shift.n, few.shift.m) == (12, 12)
    assert few.failed


def test_p_counts_every_benchmark_tested():
    from pyagentbench.results.stats import Shift, widen

    within = Shift(20.0, 15.0, 25.0, 0.001, 16, 16, p_within=0.001)
    assert widen(within, 0.0, tests=1).p_value == pytest.approx(0.001)
    assert widen(within, 0.0, tests=40).p_value == pytest.approx(0.04)
    assert widen(within, 0.0, tests=4000).p_value == 1.0
    # run-to-run noise of 10% makes a 20% change far less certain than the U test alone says
    assert widen(within, 10.0, tests=1).p_value > 0.01


def test_sort_and_group_by():
    base = document(entry("test_a", rounds(1e-3, 1), group="g1"), entry("test_b", rounds(1e-3, 2), group="g2"))
    now = document(entry("test_a", rounds(1.1e-3, 3), group="g1"), entry("test_b", rounds(1.5e-3, 4), group="g2"))
    result = compare(base, now, fail="")
    lines = format_comparison(result, columns=["test", "metric"], sort="change", group_by="metric").splitlines()
    p50 = lines[lines.index("-- p50 --") + 2:lines.index("-- p50 --") + 4]
    assert [line.split()[0] for line in p50] == ["test_x.py::test_b", "test_x.py::test_a"]  # worst first
    assert "-- g1 --" in format_comparison(result) and "-- g2 --" in format_comparison(result)


def test_a_change_common_to_every_benchmark_is_not_taken_for_noise():
    names = [f"test_{i}" for i in range(12)]
    base = document(*(entry(n, rounds(1e-3, i)) for i, n in enumerate(names)))
    now = document(*(entry(n, rounds(1.25e-3, 50 + i)) for i, n in enumerate(names)))
    result = compare(base, now)
    assert result.run_noise["p50"] < 2
    assert len(result.failures) == 12
    (p50,) = [r for r in result.geomean if r.metric.name == "p50"]
    assert p50.change == pytest.approx(25, abs=2) and p50.verdict == "regressed"
