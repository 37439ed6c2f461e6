"""``pyagentbench clocks``: the native clocks, their source, resolution and cost, as a table."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ... import _native
from ...results.units import format_duration


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "clocks",
        help="the native clocks: source, resolution and cost of one reading",
        description="Show the native clocks (pyagentbench._native.clock_info()): where each reads "
        "its time, its resolution, and what one reading costs on this machine.",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="a table for people (default) or JSON")
    parser.set_defaults(run=run)


def _duration(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    return "-" if value is None else format_duration(value / 1e9)


def run(args: argparse.Namespace) -> int:
    info = _native.clock_info()
    if args.format == "json":
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    rows = [("clock", "source", "resolution", "cost per reading")]
    for name, clock in info.items():
        rows.append((name, str(clock.get("source", "-")), _duration(clock, "resolution_ns"),
                     _duration(clock, "overhead_ns")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
