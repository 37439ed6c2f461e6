"""``pyagentbench compare BASE [NOW]``: every metric of every benchmark in two saved runs, with
change, 95% confidence interval, p-value and verdict, and regression gates (exit 1 when one fails).

BASE and NOW are pytest-benchmark JSON files, or saved runs in the storage folder named as
pytest-benchmark names them: a number (``0001``), a name given to ``--benchmark-save``, a file
stem, or ``latest``. NOW defaults to the latest saved run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ...results.baseline import BaselineError
from ...results.compare import (
    COLUMNS,
    DEFAULT_ALPHA,
    DEFAULT_FAIL,
    GROUP_BY,
    SORTS,
    compare_runs,
    format_comparison,
    load_run,
    parse_columns,
    parse_gates,
)
from ...results.metrics import metric


class _UsageError(Exception):
    pass


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two saved runs: change, 95%% CI, p-value and verdict per metric; gates",
        description="Compare every metric of every benchmark in two saved pytest-benchmark runs: "
        "baseline, now, change, its 95%% confidence interval and the Mann-Whitney p-value where the "
        "runs kept samples, and a verdict (improved, regressed, unchanged, not significant), with a "
        "geometric-mean row per metric. Exits 1 when a gate fails: a timing gate only when the change "
        "is beyond its percentage and significant at --alpha. See docs/compare.md.",
    )
    parser.add_argument("base", metavar="BASE",
                        help="the baseline: a JSON file, or a saved run's number (0001), name or 'latest'")
    parser.add_argument("now", metavar="NOW", nargs="?", default="latest",
                        help="the run to judge (default: the latest saved run)")
    parser.add_argument("--storage", metavar="DIR", default=".benchmarks",
                        help="pytest-benchmark's storage folder (default .benchmarks); saved runs are "
                        "looked up in its folder for this machine, then in its other folders")
    parser.add_argument("--fail", metavar="GATES", default=DEFAULT_FAIL,
                        help=f"regression gates, as --agentbench-compare-fail takes them (default "
                        f"{DEFAULT_FAIL.replace('%', '%%')}; 'none' for no gates)")
    parser.add_argument("--alpha", metavar="P", type=float, default=DEFAULT_ALPHA,
                        help=f"significance level of timing gates and verdicts (default {DEFAULT_ALPHA:g})")
    parser.add_argument("--columns", metavar="LIST", default=None,
                        help=f"columns to show, comma-separated: {','.join(COLUMNS)}")
    parser.add_argument("--metrics", metavar="LIST", default=None,
                        help="metrics to compare, comma-separated (default: every metric both runs have)")
    parser.add_argument("--sort", choices=SORTS, default="name",
                        help="row order: name (default), change (worst first), p, verdict")
    parser.add_argument("--group-by", choices=GROUP_BY, default="group",
                        help="one table per pytest-benchmark group (default), test or metric, or none")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table",
                        help="a table for people (default), Markdown (PR comments, job summaries), or JSON")
    parser.set_defaults(run=run)


def _storage_folders(storage: Path) -> list[Path]:
    """This machine's folder first (as pytest-benchmark names it), then the storage's others."""
    folders = []
    try:
        from pytest_benchmark.utils import get_machine_id

        own = storage / get_machine_id()
        if own.is_dir():
            folders.append(own)
    except ImportError:  # pragma: no cover - pytest-benchmark is a dependency
        pass
    if storage.is_dir():
        folders += sorted(p for p in storage.iterdir() if p.is_dir() and p not in folders)
    return folders


def _saved_runs(storage: Path) -> list[Path]:
    for folder in _storage_folders(storage):
        runs = sorted(folder.glob("*.json"))
        if runs:
            return runs
    return []


def resolve(spec: str, storage: Path) -> Path:
    """The file *spec* names: a path, or a saved run (number, name, stem or 'latest')."""
    path = Path(spec)
    if path.is_file():
        return path
    if spec.endswith(".json") or "/" in spec:
        raise _UsageError(f"{spec}: no such file")
    runs = _saved_runs(storage)
    if not runs:
        raise _UsageError(f"no saved runs in {storage} to find {spec!r} in: save one with "
                          "pytest --benchmark-autosave, give --storage, or give a file")
    if spec == "latest":
        return runs[-1]
    found = [r for r in runs if r.stem == spec or r.stem.startswith(spec + "_") or r.stem.endswith("_" + spec)]
    if not found:
        shown = ", ".join(r.stem for r in runs[-5:])
        raise _UsageError(f"no saved run {spec!r} in {runs[0].parent} (the latest: {shown})")
    if len(found) > 1:
        raise _UsageError(f"{spec!r} names {len(found)} saved runs in {runs[0].parent}: "
                          f"{', '.join(r.stem for r in found[:5])}; give its number")
    return found[0]


def _parse_metrics(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("no metrics given")
    for name in names:
        metric(name)  # ValueError listing the known names
    return names


def _option(name: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """parse(value); a ValueError becomes a usage error naming the option."""
    try:
        return parse(value)
    except ValueError as exc:
        raise _UsageError(f"{name}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from . import CommandError

    try:
        storage = Path(args.storage)
        base_path, now_path = resolve(args.base, storage), resolve(args.now, storage)
        if base_path.resolve() == now_path.resolve():
            raise _UsageError(f"BASE and NOW are the same run ({base_path}); name two runs")
        gates = [] if args.fail.strip().lower() == "none" else _option("--fail", parse_gates, args.fail)
        columns = _option("--columns", parse_columns, args.columns)
        metrics = _option("--metrics", _parse_metrics, args.metrics) if args.metrics else None
        base, now = load_run(base_path), load_run(now_path)
        comparison = compare_runs(base, now, gates=gates, alpha=args.alpha, metrics=metrics)
        text = format_comparison(comparison, args.format, columns, args.sort, args.group_by)
    except BaselineError as exc:
        raise CommandError(f"{exc.path}: " + "; ".join(exc.problems[:3])
                           + (f"; ... and {len(exc.problems) - 3} more" if len(exc.problems) > 3 else "")) from None
    except _UsageError as exc:
        raise CommandError(str(exc)) from None
    print(text)
    return 1 if comparison.failures else 0
