"""A run's SLO budgets and regression gates as JUnit XML, the test-report format CI systems read.

One ``testcase`` per budget of each benchmark (suite ``pyagentbench.slo``) and per gate checked for
each benchmark (suite ``pyagentbench.gates``); a broken budget, a budget that was never measured,
and a failed gate each carry a ``failure`` element whose ``message`` says what was measured
against what. The ``classname`` is the benchmark's test in dotted form, as pytest's own
``--junitxml`` writes it, so CI shows the verdicts beside the test.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from typing import Any, Mapping

from .metrics import METRICS
from .report import Run
from .verdicts import FAILED, MET, MISSED, NOT_MEASURED

__all__ = ["JUNIT_SUITES_NAME", "JUNIT_MARKER", "render_junit"]

#: The ``name`` of the root ``testsuites`` element: marks a file this software wrote.
JUNIT_SUITES_NAME = "pyagentbench"
#: What a JUnit file this software wrote holds near its start (see report.write_new_or_own).
JUNIT_MARKER = f'<testsuites name="{JUNIT_SUITES_NAME}"'


def _classname(fullname: str) -> str:
    """``tests/test_a.py::TestX::test_y[1]`` -> ``tests.test_a.TestX.test_y[1]``."""
    path, _, rest = fullname.partition("::")
    if path.endswith(".py"):
        path = path[:-3]
    dotted = path.replace("/", ".").replace("\\", ".")
    return f"{dotted}.{rest.replace('::', '.')}" if rest else dotted


def _format(metric_name: str, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    m = METRICS.get(metric_name)
    return m.format(value) if m is not None else f"{value:g}"


def _budget_case(suite: ET.Element, fullname: str, verdict: Mapping[str, Any]) -> bool:
    keyword = str(verdict.get("keyword", ""))
    limit = str(verdict.get("limit_text", verdict.get("limit", "")))
    case = ET.SubElement(suite, "testcase", classname=_classname(fullname),
                         name=f"slo {keyword}={limit}", time="0")
    outcome = verdict.get("verdict")
    if outcome == MET:
        return False
    message = str(verdict.get("message") or "")
    if not message:
        measured = _format(str(verdict.get("metric", "")), verdict.get("value"))
        message = f"SLO budget {keyword}={limit!r} {'not measured' if outcome == NOT_MEASURED else 'broken'}: measured {measured}"
    failure = ET.SubElement(case, "failure", message=message,
                            type="SLOBudgetMissed" if outcome == MISSED else "SLOBudgetNotMeasured")
    failure.text = f"{fullname}: {message}"
    return True


def _gate_case(suite: ET.Element, fullname: str, verdict: Mapping[str, Any]) -> bool:
    gate = str(verdict.get("gate", ""))
    case = ET.SubElement(suite, "testcase", classname=_classname(fullname), name=f"gate {gate}",
                         time="0")
    if verdict.get("verdict") != FAILED:
        return False
    name = str(verdict.get("metric", ""))
    change = verdict.get("change_percent")
    moved = f"{change:+.1f}%" if isinstance(change, (int, float)) else "from 0"
    against = f" (against {verdict['against']})" if verdict.get("against") else ""
    message = (f"regression gate {gate} failed: {name} {_format(name, verdict.get('baseline'))} -> "
               f"{_format(name, verdict.get('now'))} ({moved}){against}")
    failure = ET.SubElement(case, "failure", message=message, type="RegressionGateFailed")
    failure.text = f"{fullname}: {message}"
    return True


def render_junit(run: Run, timestamp: str | None = None) -> str:
    """The JUnit XML document (text, with its XML declaration) for *run*'s saved verdicts."""
    root = ET.Element("testsuites", name=JUNIT_SUITES_NAME)
    totals = [0, 0]
    for suite_name, key, make in (("pyagentbench.slo", "budgets", _budget_case),
                                  ("pyagentbench.gates", "gates", _gate_case)):
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        tests = failures = 0
        for b in run.benchmarks:
            for verdict in getattr(b, key):
                tests += 1
                failures += make(suite, b.fullname, verdict)
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        suite.set("time", "0")
        suite.set("timestamp", timestamp or (run.datetime or ""))
        suite.set("hostname", str(run.machine.get("node") or socket.gethostname()))
        totals[0] += tests
        totals[1] += failures
    root.set("tests", str(totals[0]))
    root.set("failures", str(totals[1]))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
