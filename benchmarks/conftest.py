"""The project's own benchmark suite: our code beside the anchor it must beat, in the same run.

Convention: each comparison is one pytest-benchmark group. The anchor's test sets
``benchmark.extra_info["anchor"] = True``; each of ours may set ``benchmark.extra_info["target"]``
to the ratio it must reach against the anchor, e.g. ``"<= 0.9x"`` (time ratio, ours / anchor) or
``">= 3x"`` (how many times faster). After the run a table lists, per group, each benchmark's
median over the anchor's median beside its target.
"""

from __future__ import annotations

import re

import pytest

_TARGET = re.compile(r"^\s*(<=|>=)\s*([0-9.]+)\s*x\s*$")


def _ratio_lines(benchmarks) -> list[str]:
    groups: dict[str, list] = {}
    for bench in benchmarks:
        groups.setdefault(bench.group or bench.name, []).append(bench)
    lines = []
    for group, members in sorted(groups.items()):
        anchors = [b for b in members if b.extra_info.get("anchor")]
        if len(anchors) != 1:
            continue
        anchor = anchors[0]
        anchor_median = anchor.stats.median
        for bench in members:
            if bench is anchor or not anchor_median:
                continue
            ratio = bench.stats.median / anchor_median
            target = bench.extra_info.get("target", "")
            verdict = ""
            match = _TARGET.match(target) if target else None
            if match:
                op, bound = match.group(1), float(match.group(2))
                # "<= Nx": time ratio at most N. ">= Nx": at least N times faster (time ratio <= 1/N).
                ok = ratio <= bound if op == "<=" else ratio <= 1.0 / bound
                verdict = "met" if ok else "MISSED"
            lines.append(
                f"{group[:48]:48} {bench.name[:44]:44} {ratio:8.3f}x {1 / ratio if ratio else 0:8.2f}x faster"
                f"  {target:>8} {verdict}"
            )
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    lines = _ratio_lines(session.benchmarks)
    if lines:
        terminalreporter.write_sep("-", "ours / anchor (median time ratio)")
        for line in lines:
            terminalreporter.write_line(line)
