"""Saved runs to compare against: pytest-benchmark JSON files, read and checked.

A gate's verdict is only as good as its baseline. A missing baseline (a first run) is a fact to
report; a baseline that exists but cannot be read, is not a pytest-benchmark run, holds a value
that is not a number, or lacks a gated metric for a test that is there, is an error
(:class:`BaselineError`), never a silent pass. Every problem names the file, the test and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .metrics import EXTRA_INFO_KEY, Metric, metric_key, number_problem, short_repr

__all__ = [
    "BaselineError",
    "SavedTest",
    "read_document",
    "document_problems",
    "entry_problems",
    "saved_tests",
    "missing_gated_metrics",
]

#: Statistics pytest-benchmark shows and compares for every saved benchmark.
REQUIRED_STATS = ("min", "max", "mean", "stddev", "median", "rounds")
#: Statistics that, when present, must be numbers (pytest-benchmark computes with them).
NUMERIC_STATS = REQUIRED_STATS + (
    "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "ops", "total", "iterations",
    "iqr_outliers", "stddev_outliers",
)
#: Problems listed in one error before "... and N more".
MAX_LISTED = 12

_KINDS = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", type(None): "null",
          int: "a number", float: "a number"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


class BaselineError(ValueError):
    """A saved run we cannot compare against. ``path`` names the file, ``problems`` say what is
    wrong with it, each naming the test and key where there is one."""

    def __init__(self, path: str, problems: Sequence[str], advice: str = "") -> None:
        self.path = path
        self.problems = list(problems)
        self.advice = advice or (
            "Fix or delete the file, or save a new baseline (--benchmark-autosave or --benchmark-save)."
        )
        super().__init__(self.describe())

    def describe(self) -> str:
        """The whole message: the file, each problem on its own line (at most MAX_LISTED), the fix."""
        lines = [f"cannot compare against the saved run {self.path}:"]
        lines += [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        lines.append(self.advice)
        return "\n".join(lines)


@dataclass(frozen=True)
class SavedTest:
    """One test in a saved run: the file it came from and our metrics record (None if it had none)."""

    path: str
    fullname: str
    record: Mapping[str, Any] | None


def read_document(path: str | Path) -> Any:
    """The parsed JSON of *path*; BaselineError saying why when it cannot be read or parsed."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BaselineError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from None
    if not raw.strip():
        raise BaselineError(str(path), ["the file is empty"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BaselineError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.pos >= end or exc.msg.startswith("Unterminated string"):  # the text stops mid-way
            lines = text[:end].split("\n")
            problem = f"not valid JSON (truncated: it ends at line {len(lines)} column {len(lines[-1]) + 1})"
        else:
            problem = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise BaselineError(str(path), [problem]) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long for int()
        raise BaselineError(str(path), [f"not valid JSON ({exc})"]) from None


def _value_problem(where: str, value: Any) -> str | None:
    problem = number_problem(value)
    return None if problem is None else f"{where} {problem}"


def entry_problems(entry: Any, index: int, metrics: Iterable[Metric]) -> list[str]:
    """What is wrong with one saved benchmark (``benchmarks[index]``) for gates on *metrics*."""
    label = f"benchmarks[{index}]"
    if not isinstance(entry, dict):
        return [f"{label} is {_kind(entry)}, expected an object"]
    fullname = entry.get("fullname")
    if "fullname" not in entry:
        return [f"{label} (name {short_repr(entry.get('name'))}) has no 'fullname'"]
    if not isinstance(fullname, str):
        return [f"{label}: 'fullname' is {_kind(fullname)}, expected a string"]
    problems = []
    stats = entry.get("stats")
    if not isinstance(stats, dict):
        problems.append(f"{fullname}: 'stats' is missing" if stats is None
                        else f"{fullname}: 'stats' is {_kind(stats)}, expected an object")
    else:
        for key in REQUIRED_STATS:
            if key not in stats:
                problems.append(f"{fullname}: stats has no {key!r}")
        for key in NUMERIC_STATS:
            if key in stats:
                problem = _value_problem(f"{fullname}: stats.{key}", stats[key])
                if problem:
                    problems.append(problem)
    extra = entry.get("extra_info")
    if extra is not None and not isinstance(extra, dict):
        problems.append(f"{fullname}: 'extra_info' is {_kind(extra)}, expected an object")
        return problems
    record = (extra or {}).get(EXTRA_INFO_KEY)
    if record is not None and not isinstance(record, dict):
        problems.append(f"{fullname}: extra_info.{EXTRA_INFO_KEY} is {_kind(record)}, expected an object")
        return problems
    for m in metrics:
        for key in m.keys:
            if record and record.get(key) is not None:
                problem = _value_problem(f"{fullname}: extra_info.{EXTRA_INFO_KEY}.{key}", record[key])
                if problem:
                    problems.append(problem)
    return problems


def document_problems(data: Any, metrics: Iterable[Metric], need_machine_info: bool = True) -> list[str]:
    """What keeps *data* (a parsed JSON file) from being a pytest-benchmark run we can gate on."""
    if not isinstance(data, dict):
        return [f"the file holds {_kind(data)}, not a pytest-benchmark run (an object with 'benchmarks')"]
    benchmarks = data.get("benchmarks")
    if benchmarks is None:
        return ["no 'benchmarks' list: not a pytest-benchmark run"]
    if not isinstance(benchmarks, list):
        return [f"'benchmarks' is {_kind(benchmarks)}, expected a list"]
    problems = []
    if need_machine_info and "machine_info" not in data:
        problems.append("no 'machine_info' (pytest-benchmark needs it to compare)")
    metrics = list(metrics)
    for index, entry in enumerate(benchmarks):
        problems.extend(entry_problems(entry, index, metrics))
    return problems


def saved_tests(path: str, entries: Iterable[Mapping[str, Any]]) -> dict[str, SavedTest]:
    """Test fullname -> :class:`SavedTest`, from entries that passed :func:`entry_problems`."""
    tests = {}
    for entry in entries:
        record = (entry.get("extra_info") or {}).get(EXTRA_INFO_KEY)
        tests[entry["fullname"]] = SavedTest(path, entry["fullname"], record or None)
    return tests


def missing_gated_metrics(
    metrics: Iterable[Metric],
    current: Mapping[str, Mapping[str, Any]],
    saved: Mapping[str, SavedTest],
) -> list[tuple[str, str]]:
    """(file, problem) for each test in both runs whose saved record lacks a gated metric that this
    run measured: the gate cannot be checked, and passing it would be a verdict with no evidence."""
    found = []
    metrics = list(metrics)
    for test, record in current.items():
        before = saved.get(test)
        if before is None:
            continue
        for m in metrics:
            key = metric_key(record, m)
            if key is None or (before.record and metric_key(before.record, m) is not None):
                continue
            what = "no agentbench metrics" if not before.record else f"no {key}"
            found.append((before.path, f"{test}: {what} (gated by {m.name}), which this run measured"))
    return found
