"""pytest plugin (entry point ``pytest11``): the ``agent_benchmark`` fixture, the ``slo`` and
``agentbench`` markers, regression gates on memory/allocations/throughput/latency, and a summary
table after pytest-benchmark's.

A suite that never requests ``agent_benchmark`` sees no difference: nothing is printed, no
warning is raised and the exit status is pytest's own.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..results.compare import Regression, check_gates, format_regressions, parse_gates, records_from_json
from ..results.slo import check_budgets, parse_budgets
from ..results.units import format_bytes, format_count, format_duration, format_rate, parse_duration

_SESSION_KEY = pytest.StashKey["AgentBenchSession"]()
_BUDGETS_KEY = pytest.StashKey[list]()


class AgentBenchSession:
    """What the plugin collects over a session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}
        self.regressions: list[Regression] = []
        text = config.getoption("agentbench_compare_fail")
        try:
            self.gates = parse_gates(text) if text else []
        except ValueError as exc:
            raise pytest.UsageError(f"--agentbench-compare-fail: {exc}") from None
        if self.gates and not config.getoption("benchmark_compare", None):
            raise pytest.UsageError(
                "--agentbench-compare-fail compares against a saved run: add --benchmark-compare "
                "(the latest saved run) or --benchmark-compare=NUM"
            )
        self.no_baseline = False
        self.resources = not config.getoption("agentbench_no_resources")
        self.allocs = not config.getoption("agentbench_no_allocs")
        interval = config.getoption("agentbench_sample_interval")
        try:
            self.sample_interval = parse_duration(interval)
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"--agentbench-sample-interval: {exc}") from None
        if not 100e-6 <= self.sample_interval <= 10:
            raise pytest.UsageError("--agentbench-sample-interval must be from 100us to 10s")

    def baseline(self) -> dict[str, dict[str, Any]]:
        bs = getattr(self.config, "_benchmarksession", None)
        merged: dict[str, dict[str, Any]] = {}
        for compared in getattr(bs, "compared_mapping", {}).values():
            merged.update(records_from_json({"benchmarks": list(compared.values())}))
        return merged


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentbench", "pyagentbench: memory, allocations and throughput of benchmarks")
    group.addoption(
        "--agentbench-compare-fail", metavar="GATES", default=None,
        help="fail the session when a metric regressed against the --benchmark-compare baseline, "
        "e.g. peak_rss:20%%,allocs_per_call:10%%,throughput:-10%%,p99:15%% (a negative percentage "
        "fails on a fall). Metrics: peak_rss, rss_delta, cpu_percent, allocs_per_call, "
        "bytes_per_call, throughput, error_rate, mean, p50, p95, p99, max.",
    )
    group.addoption(
        "--agentbench-no-resources", action="store_true", default=False,
        help="do not record peak RSS, RSS delta and CPU %% around agent_benchmark runs",
    )
    group.addoption(
        "--agentbench-no-allocs", action="store_true", default=False,
        help="do not count allocations per call after agent_benchmark runs",
    )
    group.addoption(
        "--agentbench-sample-interval", metavar="DURATION", default="1ms",
        help="interval of the native RSS/CPU sampler during benchmarks (default: 1ms)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slo(p99=..., p95=..., mean=..., max_rss=..., max_rss_delta=..., max_allocs_per_call=..., "
        "min_throughput=..., max_error_rate=...): budgets an agent_benchmark test must meet.",
    )
    config.addinivalue_line(
        "markers",
        "agentbench(resources=True, allocs=True, sample_interval=None): what agent_benchmark "
        "records for this test.",
    )
    config.stash[_SESSION_KEY] = AgentBenchSession(config)


_SETTINGS_KEY = pytest.StashKey[dict]()
_RESOURCE_METRICS = {"peak_rss", "rss_delta", "cpu_percent"}
_ALLOC_METRICS = {"allocs_per_call", "bytes_per_call"}


def _marker_settings(item: pytest.Item, state: AgentBenchSession) -> dict[str, Any]:
    """resources / allocs / sample_interval for item, from the options and its agentbench marker."""
    settings: dict[str, Any] = {
        "resources": state.resources,
        "allocs": state.allocs,
        "sample_interval": state.sample_interval,
    }
    marker = item.get_closest_marker("agentbench")
    if marker is None:
        return settings
    unknown = sorted(set(marker.kwargs) - set(settings))
    if marker.args or unknown:
        raise ValueError(
            "@pytest.mark.agentbench takes resources=, allocs= and sample_interval= only "
            f"(got {unknown or list(marker.args)})"
        )
    for name in ("resources", "allocs"):
        if name in marker.kwargs:
            value = marker.kwargs[name]
            if not isinstance(value, bool):
                raise ValueError(f"@pytest.mark.agentbench({name}={value!r}): must be True or False")
            settings[name] = value
    if marker.kwargs.get("sample_interval") is not None:
        text = marker.kwargs["sample_interval"]
        try:
            interval = parse_duration(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"@pytest.mark.agentbench(sample_interval={text!r}): {exc}") from None
        if not 100e-6 <= interval <= 10:
            raise ValueError(
                f"@pytest.mark.agentbench(sample_interval={text!r}): must be from 100us to 10s"
            )
        settings["sample_interval"] = interval
    return settings


def _unmeasurable(budgets: list, settings: dict[str, Any]) -> list[str]:
    problems = []
    for budget in budgets:
        name = budget.metric.name
        if name in _RESOURCE_METRICS and not settings["resources"]:
            problems.append(f"budget {budget.keyword} needs resource metrics, which are off for this "
                            "test (@pytest.mark.agentbench(resources=False) or --agentbench-no-resources)")
        elif name in _ALLOC_METRICS and not settings["allocs"]:
            problems.append(f"budget {budget.keyword} needs allocation counts, which are off for this "
                            "test (@pytest.mark.agentbench(allocs=False) or --agentbench-no-allocs)")
    return problems


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    state = config.stash[_SESSION_KEY]
    problems = []
    for item in items:
        uses_fixture = "agent_benchmark" in getattr(item, "fixturenames", ())
        try:
            settings = _marker_settings(item, state)
        except ValueError as exc:
            problems.append(f"{item.nodeid}: {exc}")
            continue
        item.stash[_SETTINGS_KEY] = settings
        marker = item.get_closest_marker("slo")
        if marker is None:
            continue
        if not uses_fixture:
            problems.append(f"{item.nodeid}: @pytest.mark.slo budgets are measured by the "
                            "agent_benchmark fixture, which this test does not use")
            continue
        try:
            budgets = parse_budgets(marker.args, marker.kwargs)
        except ValueError as exc:
            problems.append(f"{item.nodeid}: {exc}")
            continue
        problems.extend(f"{item.nodeid}: {p}" for p in _unmeasurable(budgets, settings))
        item.stash[_BUDGETS_KEY] = budgets
    if problems:
        raise pytest.UsageError("invalid SLO budgets or agentbench markers:\n  " + "\n  ".join(problems))


def _settings(request: pytest.FixtureRequest, state: AgentBenchSession) -> Any:
    from .fixture import FixtureSettings  # the timing machinery loads when a test asks for it

    values = request.node.stash.get(_SETTINGS_KEY, None)
    if values is None:  # an item collected outside this session's hooks
        values = _marker_settings(request.node, state)
    return FixtureSettings(**values)


@pytest.fixture
def agent_benchmark(benchmark: Any, request: pytest.FixtureRequest) -> Any:
    """Benchmark agent code with the native loop; see :class:`pyagentbench.integrations.fixture.AgentBenchmark`."""
    from .fixture import AgentBenchmark  # the timing machinery loads when a test asks for it

    state = request.config.stash[_SESSION_KEY]
    budgets = request.node.stash.get(_BUDGETS_KEY, [])

    def on_record(fixture: AgentBenchmark) -> None:
        state.records[fixture.fullname] = dict(fixture.record)
        broken, _ = check_budgets(budgets, fixture.record)
        if broken:
            pytest.fail("\n".join(broken), pytrace=False)

    fixture = AgentBenchmark(benchmark, _settings(request, state), on_record)
    yield fixture
    if budgets and fixture.enabled and fixture.record:
        _, unmeasured = check_budgets(budgets, fixture.record)
        if unmeasured:
            reasons = [
                f"{b.keyword}: needs agent_benchmark.throughput(...)"
                if b.metric.name in ("throughput", "error_rate")
                else f"{b.keyword}: this test's agent_benchmark run did not measure {b.metric.name}"
                for b in unmeasured
            ]
            pytest.fail("SLO budgets set but never measured:\n  " + "\n  ".join(reasons),
                        pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION_KEY, None)
    if state is None or not state.gates:
        return
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and bs.disabled:
        return
    if not getattr(bs, "compared_mapping", None):
        state.no_baseline = True  # a first run: nothing saved yet to compare with
        return
    state.regressions = check_gates(state.gates, state.records, state.baseline())
    if state.regressions and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _summary_rows(records: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    def get(record: dict[str, Any], key: str, fmt: Any) -> str:
        value = record.get(key)
        return "-" if value is None else fmt(value)

    rows: list[tuple[str, ...]] = [("Name", "peak RSS", "RSS delta", "CPU", "allocs/call", "throughput", "p99")]
    for name, record in records.items():
        p99 = record.get("latency_p99_s", record.get("p99_s"))
        rows.append((
            name.split("::", 1)[-1],
            get(record, "peak_rss_bytes", format_bytes),
            get(record, "rss_delta_bytes", format_bytes),
            get(record, "cpu_percent", lambda v: f"{v:.0f}%"),
            get(record, "allocs_per_call", lambda v: format_count(v)),
            get(record, "throughput_per_s", lambda v: format_rate(v, "tasks")),
            "-" if p99 is None else format_duration(p99),
        ))
    return rows


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_SESSION_KEY, None)
    if state is None or not state.records:
        return
    if state.no_baseline:
        terminalreporter.write_line(
            "agentbench: no saved run to compare with; --agentbench-compare-fail gates not checked",
            yellow=True,
        )
    rows = _summary_rows(state.records)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    terminalreporter.write_sep("-", "agentbench: memory, allocations, throughput")
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        terminalreporter.write_line("  ".join(cells), bold=index == 0)
    if state.regressions:
        terminalreporter.write_sep("-", "agentbench: regressions against the baseline", red=True)
        for line in format_regressions(state.regressions):
            terminalreporter.write_line(line, red=True)
