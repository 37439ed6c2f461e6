"""pytest plugin (entry point ``pytest11``): the ``agent_benchmark`` fixture, the ``slo`` and
``agentbench`` markers, regression gates on memory/allocations/throughput/latency, and a summary
table after pytest-benchmark's.

A suite that never requests ``agent_benchmark`` sees no difference: nothing is printed, no
warning is raised and the exit status is pytest's own. A gated run (``--agentbench-compare-fail``)
exits 1 on a regression and 2 when the saved run cannot be read or lacks a gated metric; budgets
and gates that benchmarks-off runs (--benchmark-disable, xdist) skip are counted in one line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Generator

import pytest

from ..results.baseline import (
    BaselineError,
    SavedTest,
    document_problems,
    entry_problems,
    missing_gated_metrics,
    read_document,
    saved_tests,
)
from ..results.compare import (
    DEFAULT_ALPHA,
    FINGERPRINT_KEY,
    Regression,
    check_gates,
    format_regressions,
    parse_gates,
)
from ..results.metrics import CUSTOM_INFO_KEY, METRICS, Metric, metric, metric_key, resolve_metric
from ..results.slo import check_budgets, merge_markers, parse_budgets
from ..results.units import format_bytes, format_count, format_duration, format_rate, parse_duration
from . import xdist
from . import reports

_SESSION_KEY = pytest.StashKey["AgentBenchSession"]()
_BUDGETS_KEY = pytest.StashKey[list]()
#: What an xdist worker hands its controller (``config.workeroutput``): budgets it could not check.
_WORKER_OUTPUT_KEY = "agentbench_unchecked_budgets"
#: Exit status of a gated run whose saved run cannot be read, or lacks a gated metric: the verdict
#: is unknown, which is neither a pass (0) nor a regression (1).
BASELINE_ERROR_EXIT = 2
_SAVED_RUN_GLOB = "[0-9][0-9][0-9][0-9]_"  # pytest-benchmark's pattern for numbered saved runs


class AgentBenchSession:
    """What the plugin collects over a session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session: pytest.Session | None = None
        self.records: dict[str, dict[str, Any]] = {}
        self.regressions: list[Regression] = []
        self.saved: dict[str, SavedTest] = {}  # test fullname -> its entry in the saved run
        self.baseline_problems: list[tuple[str, str]] = []  # (file, problem) found after the run
        self.unchecked_budgets = 0  # budgets on tests that ran with benchmarks off
        self.unchecked_budget_tests = 0
        self.unchecked_gates = 0
        self.not_in_baseline = 0  # benchmarks of this run the saved run does not have
        self.check_at_start = False  # saved runs in a storage we cannot list: check them loaded
        self.xdist = xdist.Controller()  # --agentbench-xdist: what the workers sent
        self.placement: xdist.Placement | None = None  # --agentbench-xdist, on a worker: its CPU
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
        self.instructions = False  # --agentbench-instructions, in the child under callgrind
        if config.getoption("agentbench_instructions", False):
            from .instructions import in_child  # loaded only when asked for

            self.instructions = in_child(config)
        for gate in self.gates:
            name = gate.metric.name
            if name in _RESOURCE_METRICS and not self.resources:
                raise pytest.UsageError(
                    f"--agentbench-compare-fail: gate {gate} needs resource metrics, which "
                    "--agentbench-no-resources turns off"
                )
            if name in _INSTRUCTION_METRICS and not self.instructions:
                raise pytest.UsageError(
                    f"--agentbench-compare-fail: gate {gate} compares instruction counts: add "
                    "--agentbench-instructions (and save the baseline with it too)"
                )
            if name in _ALLOC_METRICS and not self.allocs:
                raise pytest.UsageError(
                    f"--agentbench-compare-fail: gate {gate} needs allocation counts, which "
                    "--agentbench-no-allocs turns off"
                )
        alpha = config.getoption("agentbench_alpha")
        if not 0 < alpha < 1:
            raise pytest.UsageError(f"--agentbench-alpha must be between 0 and 1 (e.g. 0.01), got {alpha:g}")
        self.alpha = alpha
        interval = config.getoption("agentbench_sample_interval")
        try:
            self.sample_interval = parse_duration(interval)
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"--agentbench-sample-interval: {exc}") from None
        if not 100e-6 <= self.sample_interval <= 10:
            raise pytest.UsageError("--agentbench-sample-interval must be from 100us to 10s")
        self.prices, self.usage_calls, self.columns = _usage_options(config)

    def benchmarks_off(self) -> str | None:
        """Why pytest-benchmark times nothing in this session, or None when it does."""
        bs = getattr(self.config, "_benchmarksession", None)
        if bs is None or not bs.disabled:
            return None
        if getattr(bs, "xdist_warning", False) or hasattr(self.config, "workerinput"):
            return ("pytest-xdist is on and pytest-benchmark turns benchmarks off under it; run them "
                    "without -n, or with --agentbench-xdist")
        return "benchmarks are off (--benchmark-disable)"

    def baseline(self) -> dict[str, dict[str, Any]]:
        """Test fullname -> its metrics record in the saved run (empty for a test without one)."""
        return {test: dict(saved.record or {}) for test, saved in self.saved.items()}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentbench", "pyagentbench: memory, allocations and throughput of benchmarks")
    group.addoption(
        "--agentbench-compare-fail", metavar="GATES", default=None,
        help="fail the session when a metric got worse than in the --benchmark-compare baseline by "
        "more than the percentage, e.g. peak_rss:20%%,allocs_per_call:10%%,throughput:10%%,p99:15%%. "
        "The percentage is the allowed worsening: growth, or a fall for throughput. Memory gates "
        "ignore changes below a floor (default 1 MiB for RSS, 1 KiB for bytes_per_call; set it "
        "with peak_rss:20%%:floor=4MiB). Metrics: peak_rss, process_peak_rss, rss_delta, "
        "cpu_percent, allocs_per_call, bytes_per_call, throughput, error_rate, mean, p50, p95, "
        "p99, max, ttft, inter_item, instructions, est_cycles (--agentbench-instructions), "
        "llm_calls_per_call, tool_calls_per_call, tokens_per_call, "
        "cost_per_call, cpu_per_call, wait_per_call, gc_pause (docs/agent-metrics.md lists all), "
        "and metric.NAME for agent_benchmark.metric(NAME, ...). A saved run that cannot be read "
        "exits with status 2.",
    )
    group.addoption(
        "--agentbench-alpha", metavar="P", type=float, default=DEFAULT_ALPHA,
        help="significance level of timing gates (mean, p50) on benchmarks with saved samples: "
        "such a gate fails only when the change is beyond its percentage and significant at P "
        f"(default {DEFAULT_ALPHA:g})",
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
        "--agentbench-xdist", action="store_true", default=False,
        help="keep benchmarks on under pytest-xdist (-n N): each worker times on a CPU of its own, "
        "and the controller writes one JSON, one table and one set of gates, as a serial run",
    )
    group.addoption(
        "--agentbench-sample-interval", metavar="DURATION", default="1ms",
        help="interval of the native RSS/CPU sampler during benchmarks (default: 1ms)",
    )
    group.addoption(
        "--agentbench-instructions", action="store_true", default=False,
        help="run the session again under valgrind's callgrind and record instructions per call "
        "(instructions_per_call, est_cycles_per_call) instead of timing; deterministic, for gates "
        "such as instructions:1%%. Needs valgrind (apt-get install valgrind)",
    )
    reports.add_options(group)
    _add_usage_options(group)


def _add_usage_options(group: Any) -> None:
    """Options of the usage metrics: prices, counted calls, summary table columns."""
    group.addoption(
        "--agentbench-prices", metavar="FILE", default=None,
        help="price table for the cost of LLM calls: a .json or .toml file mapping each model to "
        '{"in_per_1k": ..., "out_per_1k": ...} (TOML needs Python 3.11+ or tomli)',
    )
    group.addoption(
        "--agentbench-usage-calls", metavar="N", type=int, default=5,
        help="calls of the benchmarked function counted one by one before the timed rounds, for "
        "its LLM and tool calls, tokens, cost, custom metrics and wall/CPU/wait time (default: 5; "
        "0: none)",
    )
    group.addoption(
        "--agentbench-columns", metavar="METRICS", default=None,
        help="the summary table's columns, in order: metric names separated by commas, e.g. "
        "peak_rss,tokens_per_call,cost_per_call,cpu_per_call,metric.hit_rate",
    )


def _usage_options(config: pytest.Config) -> tuple[dict[str, Any], int, list[Any] | None]:
    """--agentbench-prices (read), --agentbench-usage-calls and --agentbench-columns (checked)."""
    prices: dict[str, Any] = {}
    path = config.getoption("agentbench_prices", None)
    if path:
        from ..agents.usage import load_prices

        try:
            prices = load_prices(path)
        except OSError as exc:
            raise pytest.UsageError(f"--agentbench-prices: cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise pytest.UsageError(f"--agentbench-prices: {exc}") from None
    calls = config.getoption("agentbench_usage_calls", 5)
    if calls is None or calls < 0:
        raise pytest.UsageError(f"--agentbench-usage-calls must be >= 0, got {calls}")
    text = config.getoption("agentbench_columns", None)
    columns = None
    if text is not None:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise pytest.UsageError("--agentbench-columns: name at least one metric, e.g. peak_rss,tokens_per_call")
        try:
            columns = [metric(name) for name in names]
        except ValueError as exc:
            raise pytest.UsageError(f"--agentbench-columns: {exc}") from None
    return prices, calls, columns


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """--agentbench-instructions: run this pytest again under callgrind and exit with its status."""
    if not config.getoption("agentbench_instructions", False):
        return None
    from .instructions import in_child, rerun_under_callgrind  # loaded only when asked for

    return None if in_child(config) else rerun_under_callgrind(config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slo(p99=..., p95=..., mean=..., ttft=..., max_rss=..., max_rss_delta=..., "
        "max_allocs_per_call=..., min_throughput=..., max_error_rate=..., max_tokens_per_call=..., "
        "max_cost_per_call=..., metrics={'NAME': '>=x'}): budgets an "
        "agent_benchmark test must meet. Stacked markers (module, class, method) merge; the "
        "nearest wins per keyword.",
    )
    config.addinivalue_line(
        "markers",
        "agentbench(resources=True, allocs=True, sample_interval=None, usage_calls=None): what "
        "agent_benchmark records for this test.",
    )
    xdist.check_usable(config)
    xdist.keep_benchmarks_on(config)  # before pytest-benchmark's own (trylast) configure
    state = config.stash[_SESSION_KEY] = AgentBenchSession(config)
    state.placement = xdist.pin_worker(config)
    reports.register(config, state)
    if state.gates:
        # A gated first run has nothing saved yet: pytest-benchmark's configure (after this one)
        # warns "Can't compare. No benchmark files", an INTERNALERROR under filterwarnings=error.
        # The gates own that case: the run passes and says they were not checked. (pytest runs
        # the configure hooks inside catch_warnings, so this filter ends with them.)
        warnings.filterwarnings("ignore", message="Can't compare. No benchmark files")
    # pytest-benchmark loads the saved runs in its own (trylast) pytest_configure, after this one:
    # skipping with a warning a file it cannot parse, crashing on an entry without fullname.
    # A gated run checks the files first, so it stops with the file, test and key named.
    message = _check_saved_runs(config, state)
    if message is not None:
        pytest.exit(message, returncode=BASELINE_ERROR_EXIT)


def _shown(path: Path) -> str:
    """*path* as the user would type it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _benchmarks_will_be_off(config: pytest.Config) -> bool:
    """pytest-benchmark's own rule (its session does not exist yet): --benchmark-disable, or xdist."""
    if config.getoption("benchmark_disable", False) and not config.getoption("benchmark_enable", False):
        return True
    if xdist.enabled(config):
        return False
    dist = config.getoption("dist", "no") or "no"
    return dist != "no" or bool(os.environ.get("PYTEST_XDIST_WORKER")) or hasattr(config, "workerinput")


def _saved_run_files(config: pytest.Config) -> tuple[list[Path], list[Path], Path] | None:
    """(the files --benchmark-compare will choose, every numbered saved run, the storage folder),
    found the way pytest-benchmark's file storage finds them; None for another storage."""
    compare = config.getoption("benchmark_compare", None)
    location = config.getoption("benchmark_storage", None)
    if not compare or not isinstance(location, str):
        return None
    if "://" not in location:
        location = "file://" + location
    if not location.startswith("file://"):
        return None  # elasticsearch: what pytest-benchmark loaded is checked at session start
    try:
        from pytest_benchmark.storage.file import FileStorage
        from pytest_benchmark.utils import get_machine_id

        storage = FileStorage(location[len("file://"):], logger=None, default_machine_id=get_machine_id())
        every = list(storage.query(_SAVED_RUN_GLOB))
        chosen = every[-1:] if compare is True else list(storage.query(compare))
    except Exception:  # another pytest-benchmark layout, or a glob it rejects (it says so itself)
        return None
    return chosen, every, storage.path


def _check_saved_runs(config: pytest.Config, state: AgentBenchSession) -> str | None:
    """The error that stops a gated run whose saved run cannot be used, or None.

    Every file --benchmark-compare will choose must be a pytest-benchmark run whose gated values
    are numbers. pytest-benchmark itself skips a file it cannot parse (comparing against an
    older run, or none, and the gates then passed) and crashes on an entry without ``fullname``.
    Sets ``state.saved`` (the saved tests and their records) or ``state.no_baseline``.
    """
    if not state.gates or _benchmarks_will_be_off(config) or xdist.is_worker(config):
        return None  # (under --agentbench-xdist the controller checks the gates)
    found = _saved_run_files(config)
    if found is None:
        state.check_at_start = True
        return None
    files, every, folder = found
    if not files:
        if config.getoption("benchmark_compare") is True or not every:
            state.no_baseline = True  # a true first run: nothing saved yet
            return None
        saved = ", ".join(path.stem for path in every[-5:])
        return _stop_message([BaselineError(
            _shown(folder),
            [f"--benchmark-compare={config.getoption('benchmark_compare')} matches none of the "
             f"saved runs ({saved})"],
            advice="Name a saved run that exists, or use --benchmark-compare for the latest.",
        )])
    metrics = [gate.metric for gate in state.gates]
    errors = []
    for file in files:
        shown = _shown(file)
        try:
            data = read_document(file)
        except BaselineError as exc:
            errors.append(BaselineError(shown, exc.problems))
            continue
        problems = document_problems(data, metrics)
        if problems:
            errors.append(BaselineError(shown, problems))
        else:
            state.saved.update(saved_tests(shown, data["benchmarks"]))
    return _stop_message(errors) if errors else None


def _check_loaded_runs(config: pytest.Config, state: AgentBenchSession) -> str | None:
    """For a storage we cannot list (elasticsearch): check what pytest-benchmark loaded."""
    bs = getattr(config, "_benchmarksession", None)
    mapping = getattr(bs, "compared_mapping", None) or {}
    metrics = [gate.metric for gate in state.gates]
    for path, entries in mapping.items():
        values = list(entries.values())
        problems = [p for i, e in enumerate(values) for p in entry_problems(e, i, metrics)]
        if problems:
            return _stop_message([BaselineError(str(path), problems)])
        state.saved.update(saved_tests(str(path), values))
    state.no_baseline = not mapping
    return None


def _stop_message(errors: list[BaselineError]) -> str:
    lines = ["agentbench: " + errors[0].describe().splitlines()[0]]
    for index, error in enumerate(errors):
        text = error.describe().splitlines()
        lines += text[1:-1] if index == 0 else text[:-1]
    lines.append(errors[-1].advice)
    return "\n".join(lines)


_SETTINGS_KEY = pytest.StashKey[dict]()
_RESOURCE_METRICS = {"peak_rss", "process_peak_rss", "rss_delta", "cpu_percent"}
_ALLOC_METRICS = {"allocs_per_call", "bytes_per_call"}
_INSTRUCTION_METRICS = {"instructions", "est_cycles"}


def _marker_settings(item: pytest.Item, state: AgentBenchSession) -> dict[str, Any]:
    """resources / allocs / sample_interval for item, from the options and its agentbench marker."""
    settings: dict[str, Any] = {
        "resources": state.resources,
        "allocs": state.allocs,
        "sample_interval": state.sample_interval,
        "usage_calls": state.usage_calls,
    }
    marker = item.get_closest_marker("agentbench")
    if marker is None:
        return settings
    unknown = sorted(set(marker.kwargs) - set(settings))
    if marker.args or unknown:
        raise ValueError(
            "@pytest.mark.agentbench takes resources=, allocs=, sample_interval= and usage_calls= "
            f"only (got {unknown or list(marker.args)})"
        )
    _marker_usage_calls(marker.kwargs, settings)
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


def _marker_usage_calls(kwargs: dict[str, Any], settings: dict[str, Any]) -> None:
    """@pytest.mark.agentbench(usage_calls=N): this test's counted calls."""
    if "usage_calls" not in kwargs:
        return
    value = kwargs["usage_calls"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"@pytest.mark.agentbench(usage_calls={value!r}): must be an int >= 0")
    settings["usage_calls"] = value


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
        markers = list(item.iter_markers("slo"))  # nearest first: method, class, module
        if not markers:
            continue
        if not uses_fixture:
            problems.append(f"{item.nodeid}: @pytest.mark.slo budgets are measured by the "
                            "agent_benchmark fixture, which this test does not use")
            continue
        try:
            budgets = parse_budgets(*merge_markers((m.args, m.kwargs) for m in markers))
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
    return FixtureSettings(**values, prices=state.prices, instructions=state.instructions)


@pytest.fixture
def agent_benchmark(benchmark: Any, request: pytest.FixtureRequest) -> Any:
    """Benchmark agent code with the native loop; see :class:`pyagentbench.integrations.fixture.AgentBenchmark`."""
    from .fixture import AgentBenchmark  # the timing machinery loads when a test asks for it

    state = request.config.stash[_SESSION_KEY]
    # Instruction budgets are checked under --agentbench-instructions, and only they are: that run
    # counts instead of timing.
    budgets = [b for b in request.node.stash.get(_BUDGETS_KEY, [])
               if (b.metric.name in _INSTRUCTION_METRICS) == state.instructions]

    def on_record(fixture: AgentBenchmark) -> None:
        state.records[fixture.fullname] = dict(fixture.record)
        broken, _ = check_budgets(budgets, fixture.record)
        if broken:
            pytest.fail("\n".join(broken), pytrace=False)

    fixture = AgentBenchmark(benchmark, _settings(request, state), on_record)
    yield fixture
    reports.save_budget_verdicts(fixture, budgets)
    if budgets and not fixture.enabled:
        state.unchecked_budgets += len(budgets)
        state.unchecked_budget_tests += 1
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


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Save the environment fingerprint with a run in which agent_benchmark ran (a compare across
    different fingerprints warns). It is a top-level key of its own: in ``machine_info`` it would
    make pytest-benchmark warn on every later --benchmark-compare against an older run. A suite
    that never uses agent_benchmark keeps pytest-benchmark's JSON as it is."""
    state = config.stash.get(_SESSION_KEY, None)
    if state is None or not state.records:
        return
    from .fixture import environment_fingerprint

    output_json[FINGERPRINT_KEY] = environment_fingerprint()


def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    state.session = session
    if state.check_at_start:
        message = _check_loaded_runs(session.config, state)
        if message is not None:
            pytest.exit(message, returncode=BASELINE_ERROR_EXIT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: add up the budgets each worker ran without checking; under
    --agentbench-xdist, take in the benchmarks and records it timed."""
    state = node.config.stash.get(_SESSION_KEY, None)
    if state is not None:
        state.xdist.node_down(node.config, node, state.records)
    unchecked = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY)
    if state is not None and unchecked:
        state.unchecked_budgets += unchecked[0]
        state.unchecked_budget_tests += unchecked[1]


def _unrecorded_custom_gates(state: AgentBenchSession) -> list[tuple[str, str]]:
    """A gate on a custom metric (metric.NAME) that no benchmark of this run recorded: a typo, or
    a metric the tests stopped recording; passing it would be a verdict with no evidence."""
    problems = []
    for gate in state.gates:
        if gate.metric.custom and not any(metric_key(r, gate.metric) for r in state.records.values()):
            recorded = sorted({name for r in state.records.values() for name in r.get(CUSTOM_INFO_KEY) or {}})
            known = ", ".join(f"metric.{name}" for name in recorded) or "none"
            problems.append(("this run", f"gate {gate}: no benchmark recorded {gate.metric.name} "
                                         f"(recorded: {known})"))
    return problems


def _raise_exit_status(session: pytest.Session, status: int) -> None:
    """Set the session's exit status to *status* unless it is already a worse failure."""
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) and session.exitstatus < status:
        session.exitstatus = status


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKER_OUTPUT_KEY] = (state.unchecked_budgets, state.unchecked_budget_tests)
        xdist.worker_output(session.config, state.records, state.placement)
        if xdist.enabled(session.config):
            return  # the controller checks the gates, on every worker's records
    if not state.gates:
        return
    if state.benchmarks_off():
        state.unchecked_gates = len(state.gates)
        return
    if state.no_baseline:
        return
    state.not_in_baseline = sum(1 for test in state.records if test not in state.saved)
    state.baseline_problems = _unrecorded_custom_gates(state)
    state.baseline_problems += missing_gated_metrics(
        [gate.metric for gate in state.gates], state.records, state.saved
    )
    try:
        state.regressions = check_gates(state.gates, state.records, state.baseline(), state.alpha)
    except ValueError as exc:  # a value this run recorded; the saved ones were checked at the start
        state.baseline_problems.append(("this run", str(exc)))
    if state.baseline_problems:
        _raise_exit_status(session, BASELINE_ERROR_EXIT)
    elif state.regressions:
        _raise_exit_status(session, pytest.ExitCode.TESTS_FAILED)


def _ratio_percent(value: float) -> str:
    return f"{value * 100:.3g}%"


# Summary table columns: header, record keys (first present wins), formatter, always shown.
_COLUMNS: list[tuple[str, tuple[str, ...], Any, bool]] = [
    ("peak RSS", ("peak_rss_bytes",), format_bytes, True),
    ("process RSS", ("process_peak_rss_bytes",), format_bytes, False),
    ("RSS delta", ("rss_delta_bytes",), format_bytes, True),
    ("CPU", ("cpu_percent",), lambda v: f"{v:.0f}%", True),
    ("allocs/call", ("allocs_per_call",), format_count, True),
    ("throughput", ("throughput_per_s",), lambda v: format_rate(v, "tasks"), False),
    ("errors", ("error_rate",), _ratio_percent, False),
    ("p99", ("latency_p99_s", "p99_s"), format_duration, True),
    ("instr/call", ("instructions_per_call",), format_count, False),
    ("est. cycles/call", ("est_cycles_per_call",), format_count, False),
    ("TTFT", ("ttft_s",), format_duration, False),
    ("inter-item", ("inter_item_s",), format_duration, False),
]


#: The standard columns by metric name, for --agentbench-columns to use their header and format.
_STANDARD_COLUMNS = dict(zip(
    ("peak_rss", "process_peak_rss", "rss_delta", "cpu_percent", "allocs_per_call", "throughput",
     "error_rate", "p99", "ttft", "inter_item"), _COLUMNS))


def _cell(record: dict[str, Any], keys: tuple[str, ...], fmt: Any) -> str:
    for key in keys:
        value = record.get(key)
        if value is not None:
            return fmt(value)
    return "-"


def _summary_rows(records: dict[str, dict[str, Any]],
                  chosen: list[Metric] | None = None) -> list[tuple[str, ...]]:
    """The table: a header and one row per test; a column that is optional and empty in every row
    (throughput, errors, TTFT, ... in a suite with no load runs or streams) is left out."""
    columns = _table_columns(records, chosen)
    cells = [[_cell(record, keys, fmt) for _, keys, fmt, _ in columns] for record in records.values()]
    shown = [i for i, (_, _, _, always) in enumerate(columns)
             if always or any(row[i] != "-" for row in cells)]
    rows: list[tuple[str, ...]] = [("Name",) + tuple(columns[i][0] for i in shown)]
    for name, row in zip(records, cells):
        rows.append((name.split("::", 1)[-1],) + tuple(row[i] for i in shown))
    return rows


def _table_columns(records: dict[str, dict[str, Any]],
                   chosen: list[Metric] | None) -> list[tuple[str, tuple[str, ...], Any, bool]]:
    """The table's columns: --agentbench-columns (each shown), else the standard ones, then every
    registry metric shown when present (LLM calls, tokens, cost, ...) and every custom metric a
    test recorded."""
    def column(m: Metric, always: bool) -> tuple[str, tuple[str, ...], Any, bool]:
        if not m.custom:
            return (m.header or m.name, m.keys, lambda v: m.format(v, label=False), always)
        # formatted the way the test that recorded it described it
        record = next((r for r in records.values() if metric_key(r, m)), {})
        return (m.header, m.keys, resolve_metric(m, record).format, always)

    if chosen is not None:
        by_name = {metric(name).name: entry for name, entry in _STANDARD_COLUMNS.items()}
        return [by_name[m.name][:3] + (True,) if m.name in by_name else column(m, True) for m in chosen]
    columns = list(_COLUMNS)
    columns += [column(m, False) for m in METRICS.values() if m.column == "present"]
    recorded = dict.fromkeys(name for r in records.values() for name in r.get(CUSTOM_INFO_KEY) or {})
    columns += [column(metric("metric." + name), False) for name in recorded]
    return columns


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _unchecked_line(state: AgentBenchSession) -> str | None:
    parts = []
    if state.unchecked_budgets:
        parts.append(f"{_plural(state.unchecked_budgets, 'SLO budget')} "
                     f"(on {_plural(state.unchecked_budget_tests, 'test')})")
    if state.unchecked_gates:
        parts.append(_plural(state.unchecked_gates, "regression gate"))
    if not parts:
        return None
    reason = state.benchmarks_off() or "benchmarks are off"
    verb = "was" if state.unchecked_budgets + state.unchecked_gates == 1 else "were"
    return f"agentbench: {' and '.join(parts)} {verb} not checked: {reason}"


def _performance_regression(outcome: Any) -> bool:
    """True when pytest-benchmark's summary raised PerformanceRegression (--benchmark-compare-fail)."""
    if not outcome.excinfo:
        return False
    try:
        from pytest_benchmark.session import PerformanceRegression
    except ImportError:  # pragma: no cover - pytest-benchmark is a dependency
        return False
    return isinstance(outcome.excinfo[1], PerformanceRegression)


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Generator[None, Any, None]:
    """Our notes, table and verdicts after every other summary, pytest-benchmark's included.

    pytest-benchmark's ``--benchmark-compare-fail`` raises PerformanceRegression from its summary,
    which would cut off ours and pytest's final "N passed" line. After printing its own list it
    has said why; when agent_benchmark ran, the exception is taken back here, the rest of the
    summary printed, and the session fails with status 1 as it would have.
    """
    outcome = yield
    state = config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    if _performance_regression(outcome) and (state.records or state.gates):
        outcome.force_result(None)
        if state.session is not None:
            _raise_exit_status(state.session, pytest.ExitCode.TESTS_FAILED)
        _write_summary(terminalreporter, state)
        bs = getattr(config, "_benchmarksession", None)
        if bs is not None and not bs.quiet:
            bs.display_cprofile(terminalreporter)
        return
    _write_summary(terminalreporter, state)


def _write_summary(terminalreporter: Any, state: AgentBenchSession) -> None:
    if state.gates and state.no_baseline:
        terminalreporter.write_line(
            "agentbench: no saved run to compare with; --agentbench-compare-fail gates not checked",
            yellow=True,
        )
    unchecked = _unchecked_line(state)
    if unchecked:
        terminalreporter.write_line(unchecked, yellow=True)
    if state.not_in_baseline:
        count = state.not_in_baseline
        terminalreporter.write_line(
            f"agentbench: {_plural(count, 'benchmark')} of this run {'is' if count == 1 else 'are'} "
            "not in the saved run (new, or renamed): gates not checked for "
            f"{'it' if count == 1 else 'them'}",
            yellow=True,
        )
    for line, warning in state.xdist.summary_lines():
        terminalreporter.write_line(line, yellow=warning, bold=warning)
    if state.records:
        rows = _summary_rows(state.records, state.columns)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        terminalreporter.write_sep("-", "agentbench: memory, allocations, throughput")
        for index, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
            terminalreporter.write_line("  ".join(cells), bold=index == 0)
    if state.baseline_problems:
        terminalreporter.write_sep("-", "agentbench: gates that cannot be checked against the saved run", red=True)
        by_file: dict[str, list[str]] = {}
        for path, problem in state.baseline_problems:
            by_file.setdefault(path, []).append(problem)
        for path, problems in by_file.items():
            terminalreporter.write_line(f"{path}:", red=True)
            for problem in problems:
                terminalreporter.write_line(f"  {problem}", red=True)
        terminalreporter.write_line(
            f"These gates cannot be checked (exit status {BASELINE_ERROR_EXIT}): save a new baseline "
            "(--benchmark-autosave), or drop the gate.", red=True,
        )
    if state.regressions:
        terminalreporter.write_sep("-", "agentbench: regressions against the baseline", red=True)
        for line in format_regressions(state.regressions):
            terminalreporter.write_line(line, red=True)
