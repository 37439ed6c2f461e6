"""``pyagentbench list``: the runs saved in a pytest-benchmark storage folder, oldest first.

Also how the other subcommands find a saved run by what the user typed: a file, or an id or name
in the storage folder (``0001``, ``latest``, the name given to ``--benchmark-save``, a commit id
``--benchmark-autosave`` put in the file name, or ``MACHINE/0001``).
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...results.baseline import BaselineError, read_document

#: A usage error of the command (exit status 2); cli.main() prints its message. (ValueError, not
#: cli.CommandError: this module is imported while the cli package is still loading.)
CommandError = ValueError

#: pytest-benchmark's default storage, relative to the working directory.
DEFAULT_STORAGE = ".benchmarks"
_NUMBERED = re.compile(r"^(\d{4})_(.*)$")


@dataclass(frozen=True)
class SavedRun:
    """A numbered run file in the storage: ``MACHINE/NNNN_NAME.json``."""

    path: Path
    machine: str  # the machine folder pytest-benchmark saved it in ("" at the storage's top)
    number: str
    name: str

    @property
    def label(self) -> str:
        """What the user can type to name it: ``MACHINE/NNNN_NAME``."""
        stem = self.path.stem
        return f"{self.machine}/{stem}" if self.machine else stem


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    """``--storage``, as pytest-benchmark's ``--benchmark-storage`` (a folder)."""
    parser.add_argument("--storage", "-s", metavar="FOLDER", default=DEFAULT_STORAGE,
                        help="the pytest-benchmark storage folder (default: .benchmarks, as "
                        "--benchmark-storage)")


def storage_folder(text: str) -> Path:
    """The folder of a ``--storage`` value (a path, or ``file://PATH``); CommandError when it is
    another kind of storage or does not exist."""
    if "://" in text:
        if not text.startswith("file://"):
            raise CommandError(f"--storage {text}: only a folder storage (a path, or file://PATH) "
                               "can be read")
        text = text[len("file://"):]
    folder = Path(text)
    if not folder.is_dir():
        raise CommandError(f"the storage folder {text} does not exist: save a run first "
                           "(pytest --benchmark-autosave), or give the folder with --storage")
    return folder


def saved_runs(folder: Path) -> list[SavedRun]:
    """Every numbered run in the storage *folder* (its machine folders and its top), in
    pytest-benchmark's order: by number, then machine."""
    found = []
    for path in list(folder.glob("*/*.json")) + list(folder.glob("*.json")):
        match = _NUMBERED.match(path.stem)
        if match is None or not path.is_file():
            continue
        machine = "" if path.parent == folder else path.parent.name
        found.append(SavedRun(path, machine, match.group(1), match.group(2)))
    return sorted(found, key=lambda run: (run.number, run.machine, run.name))


def _this_machine() -> str:
    try:
        from pytest_benchmark.utils import get_machine_id
    except ImportError:  # pragma: no cover - pytest-benchmark is a dependency
        return ""
    return str(get_machine_id())


def _matches(run: SavedRun, wanted: str) -> bool:
    if wanted.isdigit():
        return int(run.number) == int(wanted)
    return run.path.stem == wanted or run.name == wanted or run.name.startswith(wanted + "_")


def resolve_run(wanted: str | None, storage: str) -> tuple[Path, str]:
    """(the file, how to show it) for a RUN argument: an existing file, or ``latest`` (also when
    *wanted* is None), an id (``0001``, ``1``), a saved name or a commit id in *storage*,
    optionally as ``MACHINE/RUN``. Runs of this machine's folder are preferred, as
    pytest-benchmark does. CommandError saying what exists when nothing or several match."""
    if wanted is not None and Path(wanted).is_file():
        return Path(wanted), wanted
    if wanted is not None and wanted.endswith(".json"):
        raise CommandError(f"{wanted}: no such file")
    folder = storage_folder(storage)
    runs = saved_runs(folder)
    text = wanted or "latest"
    machine, _, rest = text.rpartition("/")
    if machine:
        runs = [run for run in runs if run.machine == machine]
        if not runs:
            raise CommandError(f"no machine folder {machine!r} with saved runs in {folder}")
        text = rest
    else:
        own = [run for run in runs if run.machine == _this_machine()]
        runs = own or runs
    if not runs:
        raise CommandError(f"no saved runs in {folder}: save one first (pytest --benchmark-autosave)")
    if text == "latest":
        chosen = [max(runs, key=lambda run: (run.number, run.path.stat().st_mtime))]
    else:
        chosen = [run for run in runs if _matches(run, text)]
    if not chosen:
        recent = ", ".join(run.label for run in runs[-5:])
        raise CommandError(f"no saved run {wanted!r} in {folder} (the newest: {recent}; "
                           "see pyagentbench list)")
    if len(chosen) > 1:
        raise CommandError(f"{wanted!r} names {len(chosen)} saved runs in {folder}: "
                           f"{', '.join(run.label for run in chosen)}; give the id or the file")
    return chosen[0].path, str(chosen[0].path)


# ---- the subcommand ----------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "list",
        help="the runs saved in the storage folder: date, commit, machine, benchmarks",
        description="List the runs saved in a pytest-benchmark storage folder (--benchmark-save, "
        "--benchmark-autosave), oldest first, with the date each was saved, its commit, the "
        "machine folder it is in and how many benchmarks it holds. The id (or MACHINE/id) is "
        "what 'pyagentbench report' and 'compare' take.",
    )
    add_storage_option(parser)
    parser.set_defaults(run=run)


def _row(saved: SavedRun) -> tuple[tuple[str, ...], str | None, str]:
    """(the row, the problem if the file cannot be read, the sort key: its saved date)."""
    machine = saved.machine or "-"
    try:
        modified = datetime.fromtimestamp(saved.path.stat().st_mtime, timezone.utc).isoformat()
    except OSError:
        modified = ""
    try:
        data = read_document(saved.path)
    except BaselineError as exc:
        return (saved.number, "-", "-", machine, "-", saved.name), "; ".join(exc.problems), modified
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        return ((saved.number, "-", "-", machine, "-", saved.name),
                "not a pytest-benchmark run (no 'benchmarks' list)", modified)
    when = data.get("datetime") if isinstance(data.get("datetime"), str) else modified
    date = when[:19].replace("T", " ") if when else "-"
    commit_info = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    commit = str(commit_info.get("id") or "-")[:12]
    if commit_info.get("dirty"):
        commit += "*"
    return (saved.number, date, commit, machine, str(len(data["benchmarks"])), saved.name), None, when


def run(args: argparse.Namespace) -> int:
    folder = storage_folder(args.storage)
    runs = saved_runs(folder)
    if not runs:
        print(f"no saved runs in {folder}")
        return 0
    rows, problems = [], []
    for saved in runs:
        row, problem, when = _row(saved)
        rows.append((when, saved.number, row))
        if problem is not None:
            problems.append(f"{saved.path}: {problem}")
    # Oldest first: by saved date where the file says it, keeping pytest-benchmark's order otherwise.
    rows = [row for _, _, row in sorted(rows, key=lambda item: (item[0], item[1]))]
    table = [("id", "date (UTC)", "commit", "machine", "benchmarks", "name")] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if problems:
        raise CommandError("cannot read " + "; ".join(problems))
    return 0
