"""The plugin's reports: verdicts saved in the JSON, ``--agentbench-report``, ``--agentbench-junit``,
``--agentbench-html`` and the GitHub Actions job summary.

- Each benchmark's SLO budgets, with what was measured and the verdict, go into its
  ``extra_info["agentbench"]["slo"]`` when its test ends; the regression gates checked for it go
  into ``["gates"]`` when pytest-benchmark writes its JSON (its ``pytest_benchmark_update_json``
  hook), so ``--benchmark-autosave``, ``--benchmark-save`` and ``--benchmark-json`` files hold them.
- At the end of the session the report (Markdown) and the JUnit XML are written where the options
  say, and, when ``GITHUB_STEP_SUMMARY`` is set and agent benchmarks ran, the report is appended to
  the job summary. A session that never used ``agent_benchmark`` writes nothing there.

The plugin calls :func:`add_options`, :func:`register` and :func:`save_budget_verdicts`; the rest
stays here.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import pytest

from ..results.html import HTML_MARKER, render_html
from ..results.junit import JUNIT_MARKER, render_junit
from ..results.metrics import EXTRA_INFO_KEY
from ..results.report import (
    REPORT_MARKER,
    refuse_unless_new_or_own,
    render_markdown,
    run_from_document,
    write_new_or_own,
)
from ..results.verdicts import GATES_KEY, SLO_KEY, budget_verdicts, gate_verdicts

__all__ = ["add_options", "register", "save_budget_verdicts", "STEP_SUMMARY_ENV"]

#: The file GitHub Actions shows as the job's summary (Markdown, appended to).
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
_PLUGIN_NAME = "agentbench-reports"


def add_options(group: Any) -> None:
    """``--agentbench-report`` and ``--agentbench-junit``."""
    group.addoption(
        "--agentbench-report", metavar="PATH", default=None,
        help="write the performance test report (Markdown: results, SLO budgets, gates, "
        "observations) to PATH at the end of the session; a file there is replaced only if it is "
        "an earlier pyagentbench report",
    )
    group.addoption(
        "--agentbench-junit", metavar="PATH", default=None,
        help="write the SLO budgets and regression gates as JUnit XML to PATH (one testcase per "
        "budget and per gate, a failure for each broken one); a file there is replaced only if "
        "pyagentbench wrote it",
    )
    add_html_option(group)


def add_html_option(group: Any) -> None:
    """``--agentbench-html``."""
    group.addoption(
        "--agentbench-html", metavar="PATH", default=None,
        help="write the report as one self-contained HTML page with plots (time per call, RSS "
        "timeline, load latency, budgets) to PATH at the end of the session; a file there is "
        "replaced only if it is an earlier pyagentbench HTML report",
    )


def save_budget_verdicts(fixture: Any, budgets: list) -> None:
    """Put the test's budgets, measured value and verdict into its saved ``extra_info``."""
    record = getattr(fixture, "record", None)
    if not budgets or not fixture.enabled or not record:
        return
    saved = fixture.extra_info.get(EXTRA_INFO_KEY)
    if isinstance(saved, dict):
        saved[SLO_KEY] = budget_verdicts(budgets, record)


def register(config: pytest.Config, state: Any) -> None:
    """Check the report options (a UsageError now, not a lost file later) and register the hooks
    that save gate verdicts and write the reports."""
    for option, marker in (("agentbench_report", REPORT_MARKER), ("agentbench_junit", JUNIT_MARKER),
                           ("agentbench_html", HTML_MARKER)):
        path = config.getoption(option, None)
        if path:
            try:
                refuse_unless_new_or_own(path, marker)
            except ValueError as exc:
                raise pytest.UsageError(f"--{option.replace('_', '-')}: {exc}") from None
    config.pluginmanager.register(_Reports(config, state), _PLUGIN_NAME)


def _gate_verdicts(state: Any) -> dict[str, list[dict[str, Any]]]:
    """Test fullname -> the gates checked for it, or {} when gates were not checked."""
    if not state.gates or state.no_baseline or state.benchmarks_off():
        return {}
    try:
        verdicts = gate_verdicts(state.gates, state.records, state.baseline())
    except ValueError:  # a value this run recorded; the session reports it and exits 2
        return {}
    for test, checked in verdicts.items():
        for verdict in checked:
            verdict["against"] = state.saved[test].path
    return verdicts


def _add_gate_verdicts(output_json: dict[str, Any], verdicts: dict[str, list[dict[str, Any]]]) -> None:
    for entry in output_json.get("benchmarks", ()):
        checked = verdicts.get(entry.get("fullname"))
        if checked:
            extra = entry.setdefault("extra_info", {})
            extra.setdefault(EXTRA_INFO_KEY, {})[GATES_KEY] = checked


def _quick_machine_info() -> dict[str, Any]:
    """What the report shows of the machine, without pytest-benchmark's slow CPU probe."""
    return {
        "node": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "cpu": {"count": os.cpu_count()},
    }


class _Reports:
    """The hooks of the reports (registered as a plugin of its own)."""

    def __init__(self, config: pytest.Config, state: Any) -> None:
        self.config = config
        self.state = state
        self.document: dict[str, Any] | None = None  # the last JSON pytest-benchmark wrote
        self.lines: list[tuple[str, bool]] = []  # (what to tell the user, is it a problem)

    @pytest.hookimpl(optionalhook=True)
    def pytest_benchmark_update_json(self, config: pytest.Config, benchmarks: Any,
                                     output_json: dict[str, Any]) -> None:
        _add_gate_verdicts(output_json, _gate_verdicts(self.state))
        self.document = output_json

    def _session_document(self, with_data: bool = False) -> dict[str, Any]:
        """The run as pytest-benchmark saves it: the JSON it wrote, or one made now. *with_data*:
        with each benchmark's rounds (``stats.data``), which a saved JSON holds only with
        --benchmark-json or --benchmark-save-data."""
        if self.document is not None and (not with_data or all(
                "data" in (entry.get("stats") or {}) for entry in self.document.get("benchmarks", ()))):
            return self.document
        bs = getattr(self.config, "_benchmarksession", None)
        benchmarks = list(getattr(bs, "benchmarks", None) or [])
        try:
            commit_info = self.config.hook.pytest_benchmark_generate_commit_info(config=self.config)
        except Exception:  # no git, or another VCS error: the report just has no commit line
            commit_info = {}
        document = self.config.hook.pytest_benchmark_generate_json(
            config=self.config, benchmarks=benchmarks, include_data=with_data,
            machine_info=_quick_machine_info(), commit_info=commit_info,
        )
        _add_gate_verdicts(document, _gate_verdicts(self.state))
        return document

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller reports
            return
        report_path = self.config.getoption("agentbench_report", None)
        junit_path = self.config.getoption("agentbench_junit", None)
        html_path = self.config.getoption("agentbench_html", None)
        summary_path = os.environ.get(STEP_SUMMARY_ENV) if self.state.records else None
        if not (report_path or junit_path or summary_path or html_path):
            return
        try:
            run = run_from_document(self._session_document(with_data=bool(html_path)), "this session")
        except ValueError as exc:  # a value this run recorded is not a number: say so, don't crash
            self.lines.append((f"agentbench: no report written: {exc}", True))
            return
        text = render_markdown(run) if report_path or summary_path else ""
        for path, content, marker, what in (
            (report_path, text, REPORT_MARKER, "the report"),
            (junit_path, render_junit(run) if junit_path else "", JUNIT_MARKER, "the JUnit XML"),
            (html_path, render_html([run]) if html_path else "", HTML_MARKER, "the HTML report"),
        ):
            if not path:
                continue
            try:
                write_new_or_own(path, content, marker)
            except (OSError, ValueError) as exc:
                self.lines.append((f"agentbench: could not write {what} to {path}: {exc}", True))
            else:
                self.lines.append((f"agentbench: wrote {what} to {path}", False))
        if summary_path:
            try:
                with open(summary_path, "a", encoding="utf-8") as summary:
                    summary.write(text + "\n")
            except OSError as exc:
                self.lines.append((f"agentbench: could not append the report to "
                                   f"{STEP_SUMMARY_ENV} ({summary_path}): {exc.strerror or exc}", True))

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line, problem in self.lines:
            terminalreporter.write_line(line, red=problem, yellow=False)
