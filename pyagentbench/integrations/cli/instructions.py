"""``pyagentbench instructions -- PYTEST_ARGS``: run pytest under callgrind, counting instructions.

The same as ``pytest --agentbench-instructions PYTEST_ARGS``: the benchmarks' ``agent_benchmark``
calls are counted (``instructions_per_call``, ``est_cycles_per_call``) and pytest's exit status is
the command's (1 when an ``instructions:1%`` gate or an instruction budget fails).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "instructions",
        help="run pytest under valgrind's callgrind and record instructions per call",
        description="Run `pytest --agentbench-instructions PYTEST_ARGS`: pytest runs again under "
        "valgrind's callgrind, and each agent_benchmark call records its instructions per call "
        "(deterministic: gate on them with --agentbench-compare-fail=instructions:1%%). Needs "
        "valgrind (apt-get install valgrind).",
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
                        help="arguments for pytest, after --")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...instruments.callgrind import ValgrindMissing
    from ..instructions import run_pytest_under_callgrind

    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    try:
        return run_pytest_under_callgrind(pytest_args)
    except ValgrindMissing as exc:
        raise ValueError(str(exc)) from None  # main(): the message, exit status 2
