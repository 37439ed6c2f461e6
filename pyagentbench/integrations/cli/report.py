"""``pyagentbench report [RUN]``: the performance test report of a saved run, as Markdown;
``pyagentbench report --html OUT.html [RUN...]``: the same runs as one self-contained HTML page
with plots, and trends across the runs given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...results.compare import parse_gates
from ...results.html import HTML_MARKER, render_html
from ...results.report import (
    REPORT_MARKER,
    Run,
    read_run,
    refuse_unless_new_or_own,
    render_markdown,
    write_new_or_own,
)
from ...results.verdicts import FAILED, MET, Change, baseline_changes
from .runs import _this_machine, add_storage_option, resolve_run, saved_runs, storage_folder

#: What counts as a regression or an improvement against --baseline when --fail is not given.
DEFAULT_REPORT_GATES = ("mean:10%,p50:10%,p99:10%,throughput:10%,error_rate:10%,peak_rss:10%,"
                        "allocs_per_call:10%,bytes_per_call:10%")
#: The HTML report's trends take at most this many runs of the storage (the newest).
MAX_TREND_RUNS = 50


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="the performance test report of a saved run, as Markdown",
        description="Write the performance test report of a saved run as Markdown: per benchmark "
        "its scenario, latency p50/p95/p99 and mean, throughput, error rate, peak memory, CPU and "
        "allocations; the SLO budgets and regression gates the run saved, with their verdicts; "
        "with --baseline the regressions and improvements; and observations the numbers "
        "support. Exit status 1 when a budget was missed, a saved gate failed or a metric "
        "regressed against --baseline.",
    )
    parser.add_argument("run_names", nargs="*", default=[], metavar="RUN",
                        help="a pytest-benchmark JSON file, or a saved run in the storage: its id "
                        "(0001), name, commit id, or 'latest' (default). With --html, several "
                        "runs, oldest first: the last is reported, all of them make the trends; "
                        "none: the newest runs of this machine in the storage (at most "
                        f"{MAX_TREND_RUNS})")
    parser.add_argument("--baseline", "-b", metavar="RUN",
                        help="a run to compare with (a file or a saved run, as RUN)")
    parser.add_argument("--fail", metavar="GATES", default=None,
                        help="with --baseline: what is a regression (and, the other way, an "
                        "improvement), in the plugin's gate syntax; default "
                        f"{DEFAULT_REPORT_GATES.replace('%', '%%')}")
    add_storage_option(parser)
    parser.add_argument("--output", "-o", metavar="PATH",
                        help="write the report to PATH instead of printing it; a file there is "
                        "replaced only if it is an earlier pyagentbench report")
    parser.add_argument("--html", metavar="OUT.html",
                        help="write the report as one self-contained HTML page with plots (no "
                        "network needed to open it) to OUT.html; a file there is replaced only if "
                        "it is an earlier pyagentbench HTML report")
    parser.set_defaults(run=run)


def compare_runs(now: Run, baseline: Run, gates_text: str) -> list[Change]:
    """The regressions and improvements of *now* against *baseline* under the gates: the one
    place the Markdown and HTML reports (its baseline view and its trend marks) ask it."""
    return baseline_changes(parse_gates(gates_text), now.records(), baseline.records())


def _storage_runs(storage: str) -> list[tuple[Path, str]]:
    """The newest runs (at most MAX_TREND_RUNS) of this machine's folder in *storage* (of all
    folders when it has none), oldest first."""
    runs = saved_runs(storage_folder(storage))
    own = [r for r in runs if r.machine == _this_machine()]
    chosen = (own or runs)[-MAX_TREND_RUNS:]
    if not chosen:
        raise ValueError(f"no saved runs in {storage}: save one first (pytest --benchmark-autosave)")
    return [(r.path, str(r.path)) for r in chosen]


def failed(run: Run, changes: list[Change] | None) -> bool:
    """True when the report shows a missed budget, a failed gate or a regression."""
    if any(v.get("verdict") != MET for b in run.benchmarks for v in b.budgets):
        return True
    if any(v.get("verdict") == FAILED for b in run.benchmarks for v in b.gates):
        return True
    return any(c.verdict == "regressed" for c in changes or ())


def run(args: argparse.Namespace) -> int:
    if args.fail is not None and args.baseline is None:
        raise ValueError("--fail says what regressed against a baseline: add --baseline RUN")
    if len(args.run_names) > 1 and args.html is None:
        raise ValueError("several RUNs make the trends of the HTML report: add --html OUT.html, "
                         "or give one RUN")
    if args.output is not None:  # before any work: a file it may not replace is a usage error
        refuse_unless_new_or_own(args.output, REPORT_MARKER)
    if args.html is not None:
        try:
            refuse_unless_new_or_own(args.html, HTML_MARKER)
        except ValueError as exc:
            raise ValueError(f"--html: {exc}") from None
    gates_text = args.fail or DEFAULT_REPORT_GATES
    try:
        parse_gates(gates_text)
    except ValueError as exc:
        raise ValueError(f"--fail: {exc}") from None
    if args.html is not None and not args.run_names:
        found = _storage_runs(args.storage)
    else:
        found = [resolve_run(name, args.storage) for name in args.run_names or [None]]
    runs = [read_run(path, shown) for path, shown in found]
    now, shown = runs[-1], found[-1][1]
    baseline = changes = None
    if args.baseline is not None:
        base_path, base_shown = resolve_run(args.baseline, args.storage)
        baseline = read_run(base_path, base_shown)
        changes = compare_runs(now, baseline, gates_text)
    if args.html is not None:
        page = render_html(runs, baseline, changes,
                           compare=lambda later, before: compare_runs(later, before, gates_text))
        write_new_or_own(args.html, page, HTML_MARKER)
        print(f"wrote the HTML report of {shown} to {args.html}"
              + (f" (trends over {len(runs)} runs)" if len(runs) > 1 else ""))
    text = render_markdown(now, baseline, changes)
    if args.output is None:
        if args.html is None:
            sys.stdout.write(text)
    else:
        write_new_or_own(args.output, text, REPORT_MARKER)
        print(f"wrote the report of {shown} to {args.output}")
    return 1 if failed(now, changes) else 0
