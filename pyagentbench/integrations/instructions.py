"""``pytest --agentbench-instructions``: the same pytest run again, under valgrind's callgrind.

The option makes pytest start a child pytest with the same arguments, in the same folder, under
:func:`pyagentbench.instruments.callgrind.valgrind_command`, and exit with the child's status. The
child is the real session: it collects, runs, saves (``--benchmark-autosave``), compares and gates
as any run does, and its output is what the user reads. Re-running the whole pytest, rather than
each benchmark in a child process of its own, keeps fixtures, conftest files, markers and
pytest-benchmark's storage working unchanged, and starts valgrind once.

In the child, each ``agent_benchmark`` call counts instructions instead of timing: one warm call,
then :data:`~pyagentbench.instruments.callgrind.LOOPS` calls in a counted window, recorded as
``instructions_per_call`` and ``est_cycles_per_call``. Only the plugin imports this module, and only
when the option is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

import pytest

from ..instruments.callgrind import ValgrindMissing, count_instructions, under_callgrind, valgrind_command, valgrind_env

__all__ = ["OPTION", "in_child", "rerun_under_callgrind", "run_pytest_under_callgrind", "count_for_fixture"]

OPTION = "--agentbench-instructions"
#: How many lines of valgrind's own log a failed child shows.
_LOG_TAIL = 20


def in_child(config: pytest.Config) -> bool:
    """True in the child pytest that runs under callgrind; UsageError when pytest was started
    under valgrind by hand (the option starts valgrind itself, with the settings that make counts
    reproducible)."""
    from .. import _native

    if under_callgrind():
        return True
    if _native.running_on_valgrind():
        raise pytest.UsageError(
            f"{OPTION} starts valgrind itself: run `pytest {OPTION} ...` without valgrind"
        )
    return False


def run_pytest_under_callgrind(args: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> int:
    """Run ``python -m pytest ARGS --agentbench-instructions`` under callgrind in *cwd* and return its
    exit status. ValgrindMissing (with how to install it) when valgrind is not on PATH."""
    argv = [sys.executable, "-m", "pytest", *args]
    if OPTION not in args:
        argv.append(OPTION)
    with tempfile.TemporaryDirectory(prefix="pyagentbench-callgrind-") as folder:
        log = Path(folder) / "valgrind.log"
        command = valgrind_command(argv, folder)
        command.insert(command.index("--quiet") + 1, f"--log-file={log}")
        done = subprocess.run(command, cwd=cwd, env=valgrind_env(folder))
        if done.returncode not in range(0, 6) and log.exists():  # not a pytest status: valgrind's
            lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL:]
            print("\n".join(["agentbench: valgrind's log (last lines):", *lines]), file=sys.stderr)
        return done.returncode


def rerun_under_callgrind(config: pytest.Config) -> int:
    """The parent side of the option: run this pytest again under callgrind; its exit status."""
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") not in (None, "no"):
        raise pytest.UsageError(f"{OPTION} runs benchmarks serially under valgrind: drop -n/--dist")
    try:
        return run_pytest_under_callgrind(list(config.invocation_params.args), config.invocation_params.dir)
    except ValgrindMissing as exc:
        raise pytest.UsageError(f"{OPTION}: {exc}") from None


def count_for_fixture(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None, name: str
                      ) -> tuple[Any, Any, dict[str, Any]]:
    """(fn's result, a measurement with the window as pytest-benchmark's one round, the metrics)
    for an agent_benchmark call in the child."""
    count = count_instructions(fn, args, kwargs, name=name)
    measurement = SimpleNamespace(loops=count.loops, rounds_ns=[count.window_ns])
    return count.result, measurement, count.metrics()
