"""The compare engine: every metric of every benchmark of two saved runs, with the change, its 95%
confidence interval and p-value where the runs kept samples, a verdict, and regression gates.
Used by the pytest plugin (``--agentbench-compare-fail``) and by ``pyagentbench compare``.

Each metric knows which way is worse, so a gate is the allowed worsening: ``peak_rss:20%`` fails
when a benchmark's peak RSS grew by more than 20% over the baseline, ``throughput:10%`` when
throughput fell by more than 10%. A sign that agrees with the metric is accepted
(``peak_rss:+20%``, ``throughput:-10%``); one that contradicts it is an error whose message gives the
fix. Memory gates carry an absolute floor (``peak_rss:20%:floor=2MiB``, defaults in
:mod:`.metrics`): a change smaller than the floor is not a regression, whatever its percentage.

A timing gate (mean, p50) on a benchmark whose two runs both kept samples (see :mod:`.samples`)
fails only when the change is beyond its percentage *and* significant at ``alpha`` for the whole
compare: the replicates are blocks of rounds, the run-to-run noise (the spread of every
benchmark's change) widens each interval, and the test counts every benchmark tested
(Bonferroni). docs/compare.md says why.

Baselines are pytest-benchmark JSON files; our metrics sit in each entry's
``extra_info["agentbench"]``. This module reads JSON and never imports the pytest plugin.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .baseline import BaselineError, document_problems, read_document, saved_tests
from .metrics import EXTRA_INFO_KEY, METRICS, Metric, metric, metric_value, resolve_metric
from .samples import SAMPLES_KEY, Samples
from .stats import Shift, geometric_mean, log_shift, run_noise, widen
from .units import parse_duration, parse_size

__all__ = [
    "Gate",
    "Regression",
    "parse_gates",
    "check_gates",
    "load_records",
    "records_from_json",
    "format_regressions",
    "DEFAULT_ALPHA",
    "DEFAULT_FAIL",
    "timing_shift",
    "Benchmark",
    "Run",
    "Row",
    "Comparison",
    "load_run",
    "run_from_json",
    "compare_runs",
]

#: Significance level of timing gates (``--agentbench-alpha``, ``compare --alpha``).
DEFAULT_ALPHA = 0.01
#: The gate ``pyagentbench compare`` applies when ``--fail`` is not given.
DEFAULT_FAIL = "p50:10%"
#: Timing metrics a significance test applies to: the statistics of the rounds the samples hold.
TESTED_METRICS = ("mean", "p50")

_GATE = re.compile(
    r"^\s*([a-z_0-9.]+)\s*:\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*%\s*(?::\s*([a-z_]+)\s*=\s*(\S.*?))?\s*$"
)
_EXAMPLE = "e.g. peak_rss:20%, throughput:10% or peak_rss:20%:floor=2MiB"


@dataclass(frozen=True)
class Gate:
    """Fail when ``metric`` worsens by more than ``percent`` and by more than ``floor``.

    ``percent`` (>= 0) is the allowed worsening: growth for most metrics, a fall where higher is
    better (throughput); 0 fails on any worsening beyond the floor. ``floor`` is absolute, in the
    metric's unit (bytes, seconds, ...): a change no larger than it is never a regression.
    ``floor_text`` is the floor as the user wrote it ("" when the metric's default applies).
    """

    metric: Metric
    percent: float
    floor: float = 0.0
    floor_text: str = ""

    def __str__(self) -> str:
        text = f"{self.metric.name}:{self.percent:g}%"
        return f"{text}:floor={self.floor_text}" if self.floor_text else text

    def change(self, baseline: float, now: float) -> float:
        """Relative change in percent, signed as the value moved (inf when a zero baseline moved)."""
        if baseline == 0:
            return 0.0 if now == 0 else math.copysign(math.inf, now)
        return (now - baseline) / abs(baseline) * 100.0

    def worsening(self, baseline: float, now: float) -> float:
        """How much worse *now* is than *baseline*, in the metric's unit (< 0: it improved)."""
        return baseline - now if self.metric.higher_is_better else now - baseline

    def fails(self, baseline: float, now: float) -> bool:
        """True when *now* is worse than *baseline* by more than the percentage and the floor."""
        worse = self.worsening(baseline, now)
        if worse <= 0 or worse <= self.floor:
            return False
        if baseline == 0:
            return True
        return worse / abs(baseline) * 100.0 > self.percent

    def fails_tested(self, baseline: float, now: float, shift: Shift, alpha: float) -> bool:
        """For a timing with samples on both sides: True when *now* is worse by more than the
        percentage and the floor, the change is significant (``shift.p_value`` below *alpha*),
        and its one-sided ``1 - alpha / shift.tests`` confidence bound lies beyond the
        percentage: the change is beyond the threshold at level *alpha* for the whole run."""
        if not self.fails(baseline, now) or shift.p_value >= alpha:
            return False
        if self.metric.higher_is_better:
            return -shift.upper_bound(alpha) > self.percent
        return shift.lower_bound(alpha) > self.percent


@dataclass(frozen=True)
class Regression:
    """One failed gate for one benchmark (``shift``: the tested change, when samples allowed)."""

    test: str
    gate: Gate
    baseline: float
    now: float
    shift: Shift | None = None

    @property
    def change(self) -> float:
        """The relative change in percent, as :meth:`Gate.change`."""
        return self.gate.change(self.baseline, self.now)


def _parse_floor(entry: str, m: Metric, text: str) -> float:
    try:
        if m.kind == "size":
            return parse_size(text)
        if m.kind == "duration":
            return parse_duration(text)
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad gate {entry!r}: floor {exc}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bad gate {entry!r}: the floor must be a number >= 0, got {text!r}")
    return value


def _parse_gate(entry: str) -> Gate:
    match = _GATE.match(entry)
    if match is None:
        raise ValueError(f"bad gate {entry!r}: expected METRIC:PERCENT%, {_EXAMPLE}")
    name, sign, number, option, option_value = match.groups()
    m = metric(name)
    if sign == "-" and not m.higher_is_better and not m.custom:  # custom: direction in the record
        raise ValueError(
            f"{entry.strip()}: a fall in {name} is an improvement; "
            f"write {name}:{number}% to allow {number}% growth"
        )
    if sign == "+" and m.higher_is_better and not m.custom:
        raise ValueError(
            f"{entry.strip()}: a rise in {name} is an improvement; "
            f"write {name}:{number}% to allow a {number}% fall"
        )
    if not math.isfinite(float(number)):  # digits past a float's range
        raise ValueError(f"bad gate {entry!r}: the percentage must be a finite number, {_EXAMPLE}")
    if option is None:
        return Gate(m, float(number), m.floor)
    if option != "floor":
        raise ValueError(f"bad gate {entry!r}: unknown option {option!r}; the only one is floor=, {_EXAMPLE}")
    return Gate(m, float(number), _parse_floor(entry, m, option_value), option_value)


def parse_gates(text: str) -> list[Gate]:
    """``"peak_rss:20%,throughput:10%"`` -> gates; ValueError naming the bad entry and the fix."""
    gates = [_parse_gate(entry) for entry in text.split(",") if entry.strip()]
    if not gates:
        raise ValueError(f"no gates given: expected METRIC:PERCENT%, {_EXAMPLE}")
    return gates


def record_samples(record: Mapping[str, Any] | None) -> Samples | None:
    """The samples summary saved in *record* (an ``extra_info["agentbench"]`` dict), or None.

    ValueError naming the key when one is there but cannot be read.
    """
    if not record or record.get(SAMPLES_KEY) is None:
        return None
    try:
        return Samples.from_json(record[SAMPLES_KEY])
    except ValueError as exc:
        raise ValueError(f"{SAMPLES_KEY}: {exc}") from None


def _replicates(samples: Samples, blocks: bool) -> list[tuple[float, int]]:
    """The positive (value, count) replicates of *samples*: its blocks or its bucketed rounds.
    Rounds faster than the clock (zeros) stand at a picosecond, so they stay comparable."""
    pairs = [(b, 1) for b in samples.blocks] if blocks else samples.items()
    return [(max(value, 1e-12), count) for value, count in pairs]


def timing_shift(base: Samples, now: Samples) -> Shift:
    """The change of a timing from *base* to *now*, tested on their replicates: the time-ordered
    block medians when both kept them (a block of rounds is the unit that varies independently
    enough to be a replicate; see docs/compare.md), else the rounds themselves."""
    blocks = bool(base.blocks and now.blocks)
    return log_shift(_replicates(base, blocks), _replicates(now, blocks))


def check_gates(
    gates: Iterable[Gate],
    current: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]],
    alpha: float = DEFAULT_ALPHA,
) -> list[Regression]:
    """Every gate failed by a benchmark present in both; both map test name -> metrics record.

    Timing gates (mean, p50) on benchmarks whose records both hold samples also need the change
    to be significant at *alpha*, with the run-to-run noise of these records and their number
    counted (see :meth:`Gate.fails_tested` and :func:`compare_runs`). A gate whose metric either
    record lacks is skipped (see :func:`pyagentbench.results.baseline.missing_gated_metrics` for
    telling a user why). ValueError naming the test and key when a value is not a finite number.
    """
    gates = list(gates)
    found: list[tuple[str, Gate, float, float, Shift | None]] = []
    for test, record in current.items():
        base = baseline.get(test)
        if base is None:
            continue
        for gate in gates:
            if gate.metric.custom:  # its direction is the one the test recorded it with
                gate = replace(gate, metric=resolve_metric(gate.metric, record))
            try:
                now_value = metric_value(record, gate.metric)
                base_value = metric_value(base, gate.metric)
                shift = None
                if gate.metric.name in TESTED_METRICS:
                    now_samples, base_samples = record_samples(record), record_samples(base)
                    if now_samples is not None and base_samples is not None:
                        shift = timing_shift(base_samples, now_samples)
            except ValueError as exc:
                raise ValueError(f"{test}: {exc}") from None
            if now_value is not None and base_value is not None:
                found.append((test, gate, base_value, now_value, shift))
    noise, tests = _run_noise_by_metric([(gate.metric.name, shift) for _, gate, _, _, shift in found])
    regressions = []
    for test, gate, base_value, now_value, shift in found:
        if shift is not None:
            shift = widen(shift, noise.get(gate.metric.name, 0.0), tests[gate.metric.name])
        failed = (gate.fails(base_value, now_value) if shift is None
                  else gate.fails_tested(base_value, now_value, shift, alpha))
        if failed:
            regressions.append(Regression(test, gate, base_value, now_value, shift))
    return regressions


def _run_noise_by_metric(shifts: Iterable[tuple[str, Shift | None]]) -> tuple[dict[str, float], dict[str, int]]:
    """(metric name -> run-to-run noise in percent, for metrics with enough tested benchmarks (see
    :func:`pyagentbench.results.stats.run_noise`); metric name -> how many were tested)."""
    changes: dict[str, dict[int, float]] = {}
    for name, shift in shifts:
        if shift is not None:
            changes.setdefault(name, {})[id(shift)] = shift.change
    noise = {}
    for name, values in changes.items():
        value = run_noise(values.values())
        if value is not None:
            noise[name] = value
    return noise, {name: len(values) for name, values in changes.items()}


def records_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a loaded pytest-benchmark JSON document.

    :class:`pyagentbench.results.baseline.BaselineError` naming the test and key when the document
    is not a pytest-benchmark run.
    """
    problems = document_problems(data, (), need_machine_info=False)
    if problems:
        raise BaselineError("<document>", problems)
    return {test: dict(saved.record) for test, saved in saved_tests("", data["benchmarks"]).items()
            if saved.record}


def load_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Test fullname -> our metrics record, from a pytest-benchmark JSON file.

    :class:`pyagentbench.results.baseline.BaselineError` naming the file, test and key when it
    cannot be read.
    """
    data = read_document(path)
    try:
        return records_from_json(data)
    except BaselineError as exc:
        raise BaselineError(str(path), exc.problems) from None


def format_regressions(regressions: list[Regression]) -> list[str]:
    """Aligned lines: test, metric, baseline, now, change, gate; one per regression. When a
    timing gate was tested, also its 95% interval and p-value."""
    tested = any(r.shift is not None for r in regressions)
    rows = [("test", "metric", "baseline", "now", "change") + (("95% CI", "p") if tested else ()) + ("gate",)]
    for r in regressions:
        change = "new" if math.isinf(r.change) else f"{r.change:+.1f}%"
        extra: tuple[str, ...] = ()
        if tested:
            extra = ("-", "-") if r.shift is None else (
                f"[{r.shift.low:+.1f}%, {r.shift.high:+.1f}%]", f"{r.shift.p_value:.2g}")
        rows.append(
            (r.test, r.gate.metric.name, r.gate.metric.format(r.baseline),
             r.gate.metric.format(r.now), change) + extra + (str(r.gate),)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


# ---- the engine: two saved runs, every metric of every benchmark ----

#: Top-level key of the environment fingerprint in a saved run (the plugin writes it).
FINGERPRINT_KEY = "agentbench_environment"
#: The change (in percent, either way) below which a metric without a gate is "unchanged".
DEFAULT_BAND = 5.0
#: pytest-benchmark's statistics that stand for our timing metrics when a test has no record.
_STATS_FOR = {"mean": "mean", "p50": "median", "max": "max"}
GEOMEAN = "(geometric mean)"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of a saved run: pytest-benchmark's stats, our record, and its samples."""

    fullname: str
    name: str
    group: str | None
    stats: Mapping[str, Any]
    record: Mapping[str, Any]
    samples: Samples | None

    def value(self, m: Metric) -> float | None:
        """The metric's value: from our record, else (timings) from pytest-benchmark's stats."""
        value = metric_value(self.record, m) if self.record else None
        if value is None and m.name in _STATS_FOR:
            stat = self.stats.get(_STATS_FOR[m.name])
            value = None if stat is None else float(stat)
        return value


@dataclass(frozen=True)
class Run:
    """A saved run, read and checked: its benchmarks by fullname and its environment."""

    path: str
    benchmarks: Mapping[str, Benchmark]
    fingerprint: Mapping[str, str]
    datetime: str = ""
    commit: str = ""


def _fingerprint(data: Mapping[str, Any]) -> dict[str, str]:
    """The run's environment: ours when the plugin saved one, else what pytest-benchmark's
    machine_info says."""
    ours = data.get(FINGERPRINT_KEY)
    if isinstance(ours, dict):
        return {str(k): str(v) for k, v in ours.items()}
    info = data.get("machine_info")
    if not isinstance(info, dict):
        return {}
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    found = {
        "cpu": cpu.get("brand_raw"),
        "cores": cpu.get("count"),
        "python": " ".join(str(info[k]) for k in ("python_implementation", "python_version") if info.get(k)),
        "os": " ".join(str(info[k]) for k in ("system", "release", "machine") if info.get(k)),
    }
    return {k: str(v) for k, v in found.items() if v not in (None, "")}


def _short_name(fullname: str) -> str:
    """``benchmarks/test_x.py::test_y[a]`` -> ``test_x.py::test_y[a]``: unique, and short."""
    path, sep, rest = fullname.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest if sep else fullname


def run_from_json(data: Any, path: str) -> Run:
    """The :class:`Run` in a parsed pytest-benchmark document; BaselineError naming *path*, the
    test and the key for anything we cannot use (our samples included)."""
    problems = document_problems(data, METRICS.values(), need_machine_info=False)
    if problems:
        raise BaselineError(path, problems)
    benchmarks: dict[str, Benchmark] = {}
    for entry in data["benchmarks"]:
        fullname = entry["fullname"]
        record = (entry.get("extra_info") or {}).get(EXTRA_INFO_KEY) or {}
        try:
            samples = record_samples(record)
        except ValueError as exc:
            problems.append(f"{fullname}: extra_info.{EXTRA_INFO_KEY}.{exc}")
            continue
        raw = entry["stats"].get("data")
        if samples is None and isinstance(raw, list) and raw:
            # pytest-benchmark's own rounds (--benchmark-save-data), in the order they ran.
            try:
                samples = Samples.from_values(raw)
            except (TypeError, ValueError):
                problems.append(f"{fullname}: stats.data holds something other than finite numbers")
                continue
        stats = {k: v for k, v in entry["stats"].items() if k != "data"}  # summarised in samples
        benchmarks[fullname] = Benchmark(fullname, _short_name(fullname), entry.get("group"),
                                         stats, record, samples)
    if problems:
        raise BaselineError(path, problems)
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    return Run(path, benchmarks, _fingerprint(data), str(data.get("datetime") or ""),
               str(commit.get("id") or "")[:12])


def load_run(path: str | Path) -> Run:
    """The saved run in the pytest-benchmark JSON file *path* (BaselineError saying what is wrong)."""
    return run_from_json(read_document(path), str(path))


@dataclass(frozen=True)
class Row:
    """One metric of one benchmark in both runs. ``change`` is in percent (None: no baseline to
    divide by); ``shift`` the tested change with its interval and p, where samples allowed;
    ``verdict`` one of improved, regressed, unchanged, not significant; ``failed`` whether
    ``gate`` failed."""

    test: str
    name: str
    group: str | None
    metric: Metric
    baseline: float
    now: float
    change: float | None
    shift: Shift | None
    verdict: str
    gate: Gate | None = None
    failed: bool = False


@dataclass
class Comparison:
    """Everything a compare found: rows, geometric-mean rows (one per metric), failed gates,
    warnings (a different environment, benchmarks in one run only), and the two runs."""

    base: Run
    now: Run
    rows: list[Row]
    geomean: list[Row]
    failures: list[Regression]
    warnings: list[str]
    alpha: float
    gates: list[Gate]
    #: Metric name -> the run-to-run noise (percent) its tested intervals include.
    run_noise: dict[str, float] = field(default_factory=dict)


def _change(baseline: float, now: float) -> float | None:
    if baseline == 0:
        return 0.0 if now == 0 else None
    return (now - baseline) / abs(baseline) * 100.0


def _verdict(m: Metric, baseline: float, now: float, shift: Shift | None, gate: Gate | None,
             alpha: float) -> str:
    band = gate.percent if gate is not None else DEFAULT_BAND
    if shift is not None:
        if -band < shift.low and shift.high < band:
            return "unchanged"
        if shift.p_value >= alpha or shift.low <= 0 <= shift.high:
            return "not significant"
        worse = shift.change < 0 if m.higher_is_better else shift.change > 0
        return "regressed" if worse else "improved"
    floor = gate.floor if gate is not None else m.floor
    change = _change(baseline, now)
    if abs(now - baseline) <= floor or (change is not None and abs(change) <= band):
        return "unchanged"
    worse = now < baseline if m.higher_is_better else now > baseline
    return "regressed" if worse else "improved"


def _environment_warning(base: Run, now: Run) -> str | None:
    differ = [f"{key} {base.fingerprint[key]!r} vs {now.fingerprint[key]!r}"
              for key in base.fingerprint
              if key in now.fingerprint and base.fingerprint[key] != now.fingerprint[key]]
    if not differ:
        return None
    return ("the runs come from different environments, so a change may be the machine's, not the "
            "code's: " + "; ".join(differ))


def compare_runs(
    base: Run,
    now: Run,
    gates: Iterable[Gate] = (),
    alpha: float = DEFAULT_ALPHA,
    metrics: Iterable[str] | None = None,
) -> Comparison:
    """Compare every metric of every benchmark in both runs (or only *metrics*, by name), check
    *gates* (timing gates tested at *alpha*), and add a geometric-mean row per metric."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (e.g. 0.01), got {alpha:g}")
    gates = list(gates)
    chosen = [metric(name) for name in metrics] if metrics is not None else list(METRICS.values())
    by_metric = {gate.metric.name: gate for gate in gates}
    rows: list[Row] = []
    failures: list[Regression] = []
    measured: list[tuple[Benchmark, Metric, float, float, Shift | None]] = []
    for test, bench in now.benchmarks.items():
        before = base.benchmarks.get(test)
        if before is None:
            continue
        for m in chosen:
            try:
                b, n = before.value(m), bench.value(m)
            except ValueError as exc:
                raise ValueError(f"{test}: {exc}") from None
            if b is None or n is None:
                continue
            shift = None
            if m.name in TESTED_METRICS and before.samples is not None and bench.samples is not None:
                shift = timing_shift(before.samples, bench.samples)
            measured.append((bench, m, b, n, shift))
    noise, tests = _run_noise_by_metric([(m.name, shift) for _, m, _, _, shift in measured])
    for bench, m, b, n, shift in measured:
        test = bench.fullname
        if shift is not None:
            shift = widen(shift, noise.get(m.name, 0.0), tests[m.name])
        gate = by_metric.get(m.name)
        failed = False
        if gate is not None:
            failed = gate.fails(b, n) if shift is None else gate.fails_tested(b, n, shift, alpha)
            if failed:
                failures.append(Regression(test, gate, b, n, shift))
        rows.append(Row(test, bench.name, bench.group, m, b, n, _change(b, n), shift,
                        _verdict(m, b, n, shift, gate, alpha), gate, failed))
    geomean = []
    for m in chosen:
        ratios = [r.now / r.baseline for r in rows if r.metric is m and r.baseline > 0 and r.now > 0]
        if not ratios:
            continue
        g = geometric_mean(ratios)
        gate = by_metric.get(m.name)
        band = gate.percent if gate is not None else DEFAULT_BAND
        change = (g - 1) * 100
        worse = change < 0 if m.higher_is_better else change > 0
        verdict = "unchanged" if abs(change) <= band else "regressed" if worse else "improved"
        geomean.append(Row(GEOMEAN, GEOMEAN, None, m, 1.0, g, change, None, verdict, gate))
    warnings = []
    environment = _environment_warning(base, now)
    if environment:
        warnings.append(environment)
    only_base = [t for t in base.benchmarks if t not in now.benchmarks]
    only_now = [t for t in now.benchmarks if t not in base.benchmarks]
    if only_base:
        warnings.append(f"{len(only_base)} benchmark(s) only in the baseline (removed or renamed): "
                        + ", ".join(only_base[:5]) + (" ..." if len(only_base) > 5 else ""))
    if only_now:
        warnings.append(f"{len(only_now)} benchmark(s) only in the new run (new or renamed): "
                        + ", ".join(only_now[:5]) + (" ..." if len(only_now) > 5 else ""))
    return Comparison(base, now, rows, geomean, failures, warnings, alpha, gates, noise)


# ---- output ----

#: Columns of a compare table, in their default order.
COLUMNS = ("test", "metric", "baseline", "now", "change", "ci", "p", "verdict", "gate")
_HEADERS = {"test": "test", "metric": "metric", "baseline": "baseline", "now": "now",
            "change": "change", "ci": "95% CI", "p": "p", "verdict": "verdict", "gate": "gate"}
SORTS = ("name", "change", "p", "verdict")
GROUP_BY = ("group", "test", "metric", "none")
_VERDICT_ORDER = {"regressed": 0, "not significant": 1, "improved": 2, "unchanged": 3}


def _percent(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "new"
    return f"{value:+.1f}%"


def _cells(row: Row, geomean: bool = False) -> dict[str, str]:
    m = row.metric
    return {
        "test": row.name,
        "metric": m.name,
        "baseline": "1" if geomean else m.format(row.baseline),
        "now": f"{row.now:.4g}x" if geomean else m.format(row.now),
        "change": _percent(row.change),
        "ci": "-" if row.shift is None else f"[{row.shift.low:+.1f}%, {row.shift.high:+.1f}%]",
        "p": "-" if row.shift is None else f"{row.shift.p_value:.2g}",
        "verdict": row.verdict,
        "gate": "" if row.gate is None else f"{row.gate} {'FAILED' if row.failed else 'ok'}",
    }


def _worsening(row: Row) -> float:
    change = row.change
    if change is None:
        return math.inf
    return -change if row.metric.higher_is_better else change


def _sorted(rows: list[Row], sort: str) -> list[Row]:
    order = list(METRICS)
    if sort == "change":
        return sorted(rows, key=lambda r: -_worsening(r))
    if sort == "p":
        return sorted(rows, key=lambda r: (r.shift.p_value if r.shift else 2.0, r.test))
    if sort == "verdict":
        return sorted(rows, key=lambda r: (_VERDICT_ORDER.get(r.verdict, 9), r.test, order.index(r.metric.name)))
    return sorted(rows, key=lambda r: (r.test, order.index(r.metric.name)))


def _groups(rows: list[Row], group_by: str) -> list[tuple[str, list[Row]]]:
    if group_by == "none":
        return [("", rows)]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = {"group": row.group or "(no group)", "test": row.test, "metric": row.metric.name}[group_by]
        groups.setdefault(key, []).append(row)
    return sorted(groups.items())


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")


def parse_columns(text: str | None) -> list[str]:
    """``"test,change,p"`` -> the column names, checked; None -> every column."""
    if not text:
        return list(COLUMNS)
    columns = [c.strip() for c in text.split(",") if c.strip()]
    for column in columns:
        _check_choice("column", column, COLUMNS)
    if not columns:
        raise ValueError(f"no columns given; choose from {', '.join(COLUMNS)}")
    return columns


def _table(rows: list[list[str]], markdown: bool) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if markdown:
        lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.insert(1, "|" + "|".join("---" for _ in widths) + "|")
        return lines
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _describe_run(label: str, run: Run) -> str:
    extra = ", ".join(x for x in (run.datetime, f"commit {run.commit}" if run.commit else "") if x)
    return f"{label}: {run.path}" + (f" ({extra})" if extra else "")


def gate_summary(comparison: Comparison) -> str:
    """One line: which gates were checked and how many failed."""
    if not comparison.gates:
        return "no gates checked"
    gates = ", ".join(str(g) for g in comparison.gates)
    if not comparison.failures:
        return f"gates {gates} passed (timings tested at alpha {comparison.alpha:g})"
    return (f"{len(comparison.failures)} gate failure(s) of {gates} "
            f"(timings tested at alpha {comparison.alpha:g})")


def format_comparison(comparison: Comparison, fmt: str = "table", columns: Iterable[str] | None = None,
                      sort: str = "name", group_by: str = "group") -> str:
    """The comparison for people (``table``, ``markdown``) or programs (``json``)."""
    _check_choice("format", fmt, ("table", "markdown", "json"))
    _check_choice("sort", sort, SORTS)
    _check_choice("group-by", group_by, GROUP_BY)
    if fmt == "json":
        return format_json(comparison)
    columns = list(columns) if columns is not None else list(COLUMNS)
    markdown = fmt == "markdown"
    lines = [_describe_run("baseline", comparison.base), _describe_run("now", comparison.now)]
    if markdown:
        lines = [f"- {line}" for line in lines]
    for warning in comparison.warnings:
        lines.append(f"> **warning:** {warning}" if markdown else f"warning: {warning}")
    if comparison.run_noise:
        noise = ", ".join(f"{name} +-{value:.1f}%" for name, value in sorted(comparison.run_noise.items()))
        lines.append(f"run-to-run noise (the spread of all benchmarks' changes; each 95% CI includes it): {noise}")
    header = [_HEADERS[c] for c in columns]
    for title, rows in _groups(_sorted(comparison.rows, sort), group_by):
        lines.append("")
        if title:
            lines.append(f"### {title}" if markdown else f"-- {title} --")
            if markdown:
                lines.append("")
        table = [header] + [[_cells(r)[c] for c in columns] for r in rows]
        lines += _table(table, markdown)
    if comparison.geomean:
        lines.append("")
        lines.append("### geometric mean of now / baseline over the benchmarks" if markdown
                     else "-- geometric mean of now / baseline over the benchmarks --")
        if markdown:
            lines.append("")
        table = [header] + [[_cells(r, geomean=True)[c] for c in columns] for r in comparison.geomean]
        lines += _table(table, markdown)
    if not comparison.rows:
        lines.append("")
        lines.append("no benchmark is in both runs")
    lines.append("")
    lines.append(gate_summary(comparison))
    for failure in comparison.failures:
        extra = ""
        if failure.shift is not None:
            extra = (f", 95% CI [{failure.shift.low:+.1f}%, {failure.shift.high:+.1f}%], "
                     f"p={failure.shift.p_value:.2g}")
        lines.append(f"{'- ' if markdown else '  '}FAILED {failure.test}: {failure.gate.metric.name} "
                     f"{failure.gate.metric.format(failure.baseline)} -> {failure.gate.metric.format(failure.now)} "
                     f"({_percent(failure.change)}{extra}), gate {failure.gate}")
    return "\n".join(lines)


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "test": row.test, "name": row.name, "group": row.group, "metric": row.metric.name,
        "baseline": row.baseline, "now": row.now, "change_percent": row.change,
        "ci_percent": None if row.shift is None else [row.shift.low, row.shift.high],
        "p_value": None if row.shift is None else row.shift.p_value,
        "p_within": None if row.shift is None else row.shift.p_within,
        "run_noise_percent": None if row.shift is None else row.shift.run_noise,
        "benchmarks_tested": None if row.shift is None else row.shift.tests,
        "replicates": None if row.shift is None else [row.shift.n, row.shift.m],
        "verdict": row.verdict, "gate": None if row.gate is None else str(row.gate), "failed": row.failed,
    }


def format_json(comparison: Comparison) -> str:
    """The comparison as a JSON document (numbers in the metrics' units: seconds, bytes, ...)."""
    import json

    def run(r: Run) -> dict[str, Any]:
        return {"path": r.path, "datetime": r.datetime, "commit": r.commit, "environment": dict(r.fingerprint)}

    data = {
        "baseline": run(comparison.base), "now": run(comparison.now), "alpha": comparison.alpha,
        "gates": [str(g) for g in comparison.gates], "warnings": comparison.warnings,
        "run_noise_percent": comparison.run_noise,
        "rows": [_row_json(r) for r in comparison.rows],
        "geomean": [_row_json(r) for r in comparison.geomean],
        "failures": [{"test": f.test, "gate": str(f.gate), "baseline": f.baseline, "now": f.now,
                      "change_percent": f.change} for f in comparison.failures],
    }
    return json.dumps(data, indent=2, allow_nan=False, default=str)
