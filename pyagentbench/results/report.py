"""The performance test report: a saved run as Markdown.

A run is a pytest-benchmark JSON document (``--benchmark-autosave``, ``--benchmark-save``,
``--benchmark-json``). The report shows, per benchmark, its scenario (test, params, load settings as
recorded), latency p50/p95/p99 and mean, throughput, error rate, peak memory, CPU and allocations
per call; the SLO budgets and regression gates the run saved, with their verdicts; against a
baseline run, the regressions and improvements; and short observations the numbers support.

This module reads data and writes text; it never imports the pytest plugin or the runtime.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .baseline import BaselineError, document_problems, read_document
from .metrics import EXTRA_INFO_KEY, METRICS, RSS_DELTA_FLOOR_BYTES, metric, metric_value
from .units import format_bytes, format_duration
from .verdicts import (
    FAILED,
    GATES_KEY,
    MET,
    MISSED,
    NOT_MEASURED,
    PASSED,
    SLO_KEY,
    Change,
)

__all__ = [
    "REPORT_MARKER",
    "BenchmarkResult",
    "Run",
    "read_run",
    "run_from_document",
    "render_markdown",
    "observations",
    "write_new_or_own",
    "refuse_unless_new_or_own",
]

#: The first line of every report: marks a file this software wrote, which it may overwrite.
REPORT_MARKER = "<!-- pyagentbench report -->"

#: Thresholds of the observations (each says what it takes in its sentence).
CPU_BOUND_PERCENT = 90.0
WAITING_CPU_PERCENT = 20.0
WAITING_MIN_LATENCY_S = 1e-3
HEAVY_TAIL_RATIO = 5.0
NOISY_IQR_RATIO = 0.25
MAX_LISTED_PROBLEMS = 3


@dataclass(frozen=True)
class BenchmarkResult:
    """One saved benchmark: pytest-benchmark's fields, our metrics record, the saved verdicts."""

    fullname: str
    name: str
    group: str | None
    params: Mapping[str, Any] | None
    stats: Mapping[str, Any]
    record: Mapping[str, Any]
    budgets: Sequence[Mapping[str, Any]] = ()
    gates: Sequence[Mapping[str, Any]] = ()

    def value(self, name: str) -> float | None:
        """The metric *name* (see :mod:`.metrics`), from our record; mean and p50 fall back to
        pytest-benchmark's own mean and median for a benchmark without our record."""
        found = metric_value(self.record, metric(name))
        if found is None and name in ("mean", "p50"):
            stat = self.stats.get("mean" if name == "mean" else "median")
            found = float(stat) if isinstance(stat, (int, float)) else None
        return found


@dataclass(frozen=True)
class Run:
    """A saved run: where it came from, when, which commit and machine, and its benchmarks."""

    source: str
    datetime: str | None
    commit: Mapping[str, Any]
    machine: Mapping[str, Any]
    benchmarks: list[BenchmarkResult] = field(default_factory=list)

    def records(self) -> dict[str, dict[str, Any]]:
        """Test fullname -> our metrics record, for the benchmarks that have one."""
        return {b.fullname: dict(b.record) for b in self.benchmarks if b.record}


def _verdict_problems(where: str, value: Any, key: str, allowed: set[str]) -> list[str]:
    if not isinstance(value, list):
        return [f"{where}.{key} is not a list"]
    problems = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("verdict") not in allowed:
            problems.append(f"{where}.{key}[{index}] is not a saved verdict "
                            f"(an object whose 'verdict' is one of {', '.join(sorted(allowed))})")
    return problems


def run_from_document(data: Any, source: str) -> Run:
    """The :class:`Run` in a parsed pytest-benchmark document; ValueError naming *source*, the
    test and the key when it is not one (or holds a metric or verdict that is not valid)."""
    problems = document_problems(data, METRICS.values(), need_machine_info=False)
    benchmarks = []
    if not problems:
        for entry in data["benchmarks"]:
            extra = entry.get("extra_info") or {}
            record = dict(extra.get(EXTRA_INFO_KEY) or {})
            where = f"{entry['fullname']}: extra_info.{EXTRA_INFO_KEY}"
            budgets = record.pop(SLO_KEY, [])
            gates = record.pop(GATES_KEY, [])
            problems += _verdict_problems(where, budgets, SLO_KEY, {MET, MISSED, NOT_MEASURED})
            problems += _verdict_problems(where, gates, GATES_KEY, {PASSED, FAILED})
            params = entry.get("params")
            benchmarks.append(BenchmarkResult(
                fullname=entry["fullname"],
                name=str(entry.get("name") or entry["fullname"]),
                group=entry.get("group"),
                params=params if isinstance(params, dict) else None,
                stats=entry["stats"],
                record=record,
                budgets=budgets if isinstance(budgets, list) else [],
                gates=gates if isinstance(gates, list) else [],
            ))
    if problems:
        shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        raise ValueError(
            f"{source}: not a run a report can be made from: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
        )
    commit = data.get("commit_info")
    machine = data.get("machine_info")
    return Run(
        source=source,
        datetime=data.get("datetime") if isinstance(data.get("datetime"), str) else None,
        commit=commit if isinstance(commit, dict) else {},
        machine=machine if isinstance(machine, dict) else {},
        benchmarks=benchmarks,
    )


def read_run(path: str | Path, shown: str | None = None) -> Run:
    """The run saved in the JSON file *path*; ValueError naming the file (as *shown*, default the
    path) and the problem when it cannot be read or is not a pytest-benchmark run."""
    label = shown or str(path)
    try:
        data = read_document(path)
    except BaselineError as exc:
        raise ValueError(f"{label}: {'; '.join(exc.problems)}") from None
    return run_from_document(data, label)


# ---- Markdown ----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """*text* as inline code in a table cell (a name with a backtick is left as plain text)."""
    return _cell(text) if "`" in text else f"`{_cell(text)}`"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] = ()) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if i < len(right) and right[i] else "---" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _percent_of_core(value: float) -> str:
    return f"{value:.0f}%"


def _change(value: float | None) -> str:
    return "from 0" if value is None or not math.isfinite(value) else f"{value:+.1f}%"


#: The results table: header, metric name, formatter (None: the metric's own).
_RESULT_COLUMNS: list[tuple[str, str, Callable[[float], str] | None]] = [
    ("p50", "p50", None),
    ("p95", "p95", None),
    ("p99", "p99", None),
    ("mean", "mean", None),
    ("throughput", "throughput", None),
    ("errors", "error_rate", None),
    ("peak memory", "peak_rss", None),
    ("CPU", "cpu_percent", _percent_of_core),
    ("allocs/call", "allocs_per_call", None),
]


def _display_names(run: Run) -> dict[str, str]:
    """Each benchmark's short name, or its full name where two short names are the same."""
    counts: dict[str, int] = {}
    for b in run.benchmarks:
        counts[b.name] = counts.get(b.name, 0) + 1
    return {b.fullname: b.name if counts[b.name] == 1 else b.fullname for b in run.benchmarks}


def _format(name: str, value: float | None, fmt: Callable[[float], str] | None = None) -> str:
    if value is None:
        return "-"
    return (fmt or metric(name).format)(value)


def _header_lines(run: Run, baseline: Run | None) -> list[str]:
    lines = [f"- Run: `{run.source}`"]
    if run.datetime:
        lines.append(f"- Date: {_date(run.datetime)}")
    commit = run.commit
    if commit.get("id"):
        text = f"- Commit: `{str(commit['id'])[:12]}`"
        branch = commit.get("branch")
        if branch and branch != "(unknown)":
            text += f" on `{branch}`"
        if commit.get("dirty"):
            text += " (with uncommitted changes)"
        lines.append(text)
    machine = _machine(run.machine)
    if machine:
        lines.append(f"- Machine: {machine}")
    if baseline is not None:
        when = f", {_date(baseline.datetime)}" if baseline.datetime else ""
        lines.append(f"- Baseline: `{baseline.source}`{when}")
    return lines


def _date(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _machine(info: Mapping[str, Any]) -> str:
    parts = []
    cpu = info.get("cpu")
    if isinstance(cpu, dict):
        brand = cpu.get("brand_raw") or cpu.get("brand")
        if brand:
            parts.append(str(brand))
        if cpu.get("count"):
            parts.append(f"{cpu['count']} CPUs")
    for key in ("system", "release"):
        if info.get(key):
            parts.append(str(info[key]))
    if info.get("python_implementation") and info.get("python_version"):
        parts.append(f"{info['python_implementation']} {info['python_version']}")
    if info.get("node"):
        parts.append(f"host {info['node']}")
    return ", ".join(parts)


def _count_line(run: Run, changes: Sequence[Change] | None) -> str:
    budgets = [v for b in run.benchmarks for v in b.budgets]
    gates = [v for b in run.benchmarks for v in b.gates]
    n = len(run.benchmarks)
    parts = [f"{n} benchmark{'s' if n != 1 else ''}"]
    if budgets:
        met = sum(1 for v in budgets if v.get("verdict") == MET)
        parts.append(f"SLO budgets: {met} met, {len(budgets) - met} missed")
    if gates:
        failed = sum(1 for v in gates if v.get("verdict") == FAILED)
        parts.append(f"regression gates: {len(gates) - failed} passed, {failed} failed")
    if changes is not None:
        worse = sum(1 for c in changes if c.verdict == "regressed")
        parts.append(f"against the baseline: {worse} regression{'s' if worse != 1 else ''}, "
                     f"{len(changes) - worse} improvement{'s' if len(changes) - worse != 1 else ''}")
    return "**" + " · ".join(parts) + "**"


def _scenario(b: BenchmarkResult) -> tuple[str, str, str]:
    """(params, load, rounds) cells of a benchmark's scenario row."""
    params = ", ".join(f"{k}={v!r}" for k, v in (b.params or {}).items()) or "-"
    r = b.record
    load = "-"
    if r.get("load_mode") is not None or r.get("completed") is not None:
        pieces = []
        if r.get("load_mode"):
            pieces.append(f"{r['load_mode']} loop")
        done, failed = r.get("completed"), r.get("failed")
        if done is not None:
            pieces.append(f"{done} tasks" + (f" ({failed} failed)" if failed else ""))
        if r.get("load_duration_s") is not None:
            pieces.append(f"in {format_duration(r['load_duration_s'])}")
        if r.get("achieved_concurrency") is not None:
            pieces.append(f"concurrency {r['achieved_concurrency']:.2f} achieved")
        load = ", ".join(pieces)
    rounds = b.stats.get("rounds")
    iterations = b.stats.get("iterations")
    shown = f"{rounds}" if rounds is not None else "-"
    if isinstance(iterations, int) and iterations > 1:
        shown += f" rounds of {iterations} calls"
    return params, load, shown


def render_markdown(run: Run, baseline: Run | None = None, changes: Sequence[Change] | None = None,
                    title: str = "Performance test report") -> str:
    """The report of *run* as Markdown; *changes* (from
    :func:`pyagentbench.results.verdicts.baseline_changes`) against *baseline* when given."""
    names = _display_names(run)
    lines = [REPORT_MARKER, f"# {title}", ""]
    lines += _header_lines(run, baseline)
    lines += ["", _count_line(run, changes), ""]
    if not run.benchmarks:
        lines += ["The run holds no benchmarks.", ""]
        return "\n".join(lines)

    # Results: one row per benchmark; columns no benchmark has are left out.
    values = [[b.value(m) for _, m, _ in _RESULT_COLUMNS] for b in run.benchmarks]
    shown = [i for i in range(len(_RESULT_COLUMNS)) if any(row[i] is not None for row in values)]
    rows = []
    for b, row in zip(run.benchmarks, values):
        rows.append([_code(names[b.fullname])] + [
            _format(_RESULT_COLUMNS[i][1], row[i], _RESULT_COLUMNS[i][2]) for i in shown
        ])
    lines += ["## Results", ""]
    lines += _table(["Benchmark"] + [_RESULT_COLUMNS[i][0] for i in shown], rows,
                    [False] + [True] * len(shown))
    lines.append("")

    budget_rows = []
    for b in run.benchmarks:
        for v in b.budgets:
            name = str(v.get("metric", ""))
            value = v.get("value")
            measured = _format(name, value if isinstance(value, (int, float)) else None,
                               _percent_of_core if name == "cpu_percent" else None) \
                if name in METRICS else "-"
            bound = "at most" if v.get("bound") == "max" else "at least"
            verdict = {MET: "MET", MISSED: "**MISSED**", NOT_MEASURED: "**NOT MEASURED**"}[v["verdict"]]
            budget_rows.append([_code(names[b.fullname]), _cell(str(v.get("keyword", ""))),
                                f"{bound} {_cell(str(v.get('limit_text', v.get('limit', ''))))}",
                                measured, verdict])
    if budget_rows:
        lines += ["## SLO budgets", ""]
        lines += _table(["Benchmark", "Budget", "Limit", "Measured", "Verdict"], budget_rows)
        lines.append("")

    gate_rows = []
    against = set()
    for b in run.benchmarks:
        for v in b.gates:
            name = str(v.get("metric", ""))
            known = name in METRICS

            def shown_value(key: str) -> str:
                value = v.get(key)
                return metric(name).format(value) if known and isinstance(value, (int, float)) else "-"

            if v.get("against"):
                against.add(str(v["against"]))
            gate_rows.append([_code(names[b.fullname]), _cell(str(v.get("gate", ""))),
                              shown_value("baseline"), shown_value("now"),
                              _change(v.get("change_percent")),
                              "**FAILED**" if v["verdict"] == FAILED else "passed"])
    if gate_rows:
        where = f" (against `{', '.join(sorted(against))}`)" if against else ""
        lines += [f"## Regression gates{where}", ""]
        lines += _table(["Benchmark", "Gate", "Baseline", "Now", "Change", "Verdict"], gate_rows)
        lines.append("")

    if changes is not None:
        lines += ["## Against the baseline", ""]
        fullnames = {b.fullname for b in run.benchmarks}
        for verdict, heading in (("regressed", "Regressions"), ("improved", "Improvements")):
            picked = [c for c in changes if c.verdict == verdict]
            lines += [f"### {heading}", ""]
            if not picked:
                lines += ["None.", ""]
                continue
            lines += _table(
                ["Benchmark", "Metric", "Baseline", "Now", "Change", "Threshold"],
                ([_code(names.get(c.test, c.test) if c.test in fullnames else c.test),
                  c.gate.metric.name, c.gate.metric.format(c.baseline), c.gate.metric.format(c.now),
                  _change(c.change_percent), _cell(str(c.gate))] for c in picked),
            )
            lines.append("")

    lines += ["## Scenarios", ""]
    scenario_rows = []
    for b in run.benchmarks:
        params, load, rounds = _scenario(b)
        scenario_rows.append([_code(names[b.fullname]), _code(b.fullname), _cell(params),
                              _cell(load), rounds])
    lines += _table(["Benchmark", "Test", "Params", "Load", "Rounds"], scenario_rows)
    lines.append("")

    notes = [(b, note) for b in run.benchmarks for note in observations(b, changes or ())]
    if notes:
        lines += ["## Observations", ""]
        lines += [f"- {_code(names[b.fullname])}: {note}" for b, note in notes]
        lines.append("")
    return "\n".join(lines)


# ---- Observations ------------------------------------------------------------------------------


def _moved(changes: Sequence[Change], test: str, metric_name: str, verdict: str) -> Change | None:
    for c in changes:
        if c.test == test and c.gate.metric.name == metric_name and c.verdict == verdict:
            return c
    return None


def _size(change: Change) -> str:
    return "from 0" if change.change_percent is None else f"{abs(change.change_percent):.0f}%"


def _cpu_bound(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    cpu = b.value("cpu_percent")
    if cpu is None or cpu < CPU_BOUND_PERCENT:
        return None
    fell = _moved(changes, b.fullname, "throughput", "regressed")
    if fell is not None:
        return f"CPU {cpu:.0f}% while throughput fell {_size(fell)}: CPU-bound, the time went to computing"
    for name in ("mean", "p50"):
        rose = _moved(changes, b.fullname, name, "regressed")
        if rose is not None:
            return f"CPU {cpu:.0f}% while the {name} rose {_size(rose)}: CPU-bound, the time went to computing"
    return f"CPU {cpu:.0f}% of a core over the run: CPU-bound"


def _waiting(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    cpu = b.value("cpu_percent")
    latency = b.value("p50")
    if cpu is None or latency is None or cpu >= WAITING_CPU_PERCENT or latency < WAITING_MIN_LATENCY_S:
        return None
    fell = _moved(changes, b.fullname, "throughput", "regressed")
    if fell is not None:
        return (f"CPU {cpu:.0f}% while throughput fell {_size(fell)}: the time went to waiting "
                "(I/O, sleeps, locks, a slower dependency), not computing")
    return (f"CPU {cpu:.0f}% at {format_duration(latency)} per call (p50): most of the time is "
            "spent waiting (I/O, sleeps, locks), not computing")


def _heavy_tail(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    p50, p99 = b.value("p50"), b.value("p99")
    if p50 is None or p99 is None or p50 <= 0 or p99 < HEAVY_TAIL_RATIO * p50:
        return None
    return (f"p99 ({format_duration(p99)}) is {p99 / p50:.0f}x the median ({format_duration(p50)}): "
            "a few slow calls make the tail")


def _errors(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    rate = b.value("error_rate")
    if rate is None or rate <= 0:
        return None
    by_type = b.record.get("errors_by_type")
    detail = ""
    if isinstance(by_type, dict) and by_type:
        detail = " (" + ", ".join(f"{name}: {count}" for name, count in by_type.items()) + ")"
    return f"{rate * 100:.3g}% of tasks failed{detail}"


def _memory_kept(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    delta = b.value("rss_delta")
    if delta is None or delta <= RSS_DELTA_FLOOR_BYTES:
        return None
    return (f"RSS ended {format_bytes(delta)} above its start: memory held after the run "
            "(a cache, a leak, or freed memory the allocator kept)")


def _noisy(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    iqr, median, rounds = b.stats.get("iqr"), b.stats.get("median"), b.stats.get("rounds")
    if not all(isinstance(v, (int, float)) for v in (iqr, median, rounds)):
        return None
    if rounds < 5 or median <= 0 or iqr / median < NOISY_IQR_RATIO:
        return None
    return (f"the middle half of the rounds spans {iqr / median * 100:.0f}% of the median: noisy "
            "timings, so a smaller change is not evidence")


def _allocs_with_time(b: BenchmarkResult, changes: Sequence[Change]) -> str | None:
    allocs = _moved(changes, b.fullname, "allocs_per_call", "regressed")
    if allocs is None:
        return None
    for name in ("mean", "p50"):
        rose = _moved(changes, b.fullname, name, "regressed")
        if rose is not None:
            return (f"allocations per call rose {_size(allocs)} along with the {name} "
                    f"({_size(rose)}): the added time comes with added allocation")
    return None


#: The observation rules, in the order they are listed.
RULES: tuple[Callable[[BenchmarkResult, Sequence[Change]], str | None], ...] = (
    _cpu_bound, _waiting, _heavy_tail, _errors, _memory_kept, _noisy, _allocs_with_time,
)


def observations(b: BenchmarkResult, changes: Sequence[Change] = ()) -> list[str]:
    """What the numbers of *b* (and its *changes* against a baseline) support saying, in words."""
    return [note for rule in RULES if (note := rule(b, changes)) is not None]


# ---- Writing -----------------------------------------------------------------------------------


def write_new_or_own(path: str | Path, text: str, marker: str) -> None:
    """Write *text* to *path*, which must be new or a file this software wrote (its text holds
    *marker* within the first 512 bytes): nothing else is overwritten. The file is replaced in one
    step, so a failure leaves the old one whole. ValueError naming the file otherwise."""
    target = Path(path)
    refuse_unless_new_or_own(target, marker)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        mode = target.stat().st_mode & 0o777  # a replaced file keeps its permissions
    except OSError:
        mode = 0o666 & ~_umask()  # a new one gets what open() would give it
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    """The process's umask: read on Linux (setting it to read it, elsewhere, is a brief change
    other threads could see)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def refuse_unless_new_or_own(path: str | Path, marker: str) -> None:
    """ValueError when *path* exists and is not a file this software wrote (see
    :func:`write_new_or_own`), or when its folder does not exist."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: the folder {parent} does not exist")
    if target.exists():
        try:
            with open(target, "rb") as existing:
                head = existing.read(512)
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
        if marker.encode() not in head:
            raise ValueError(f"{path} exists and was not written by pyagentbench; "
                             "remove it or choose another file name")

