"""The ``pyagentbench`` command (console script, and ``python -m pyagentbench``).

Each subcommand lives in a module of its own here, with two functions: ``add_parser(subparsers)``
declares its arguments and ``run(args) -> int`` does the work and returns the exit status. The exit
statuses are the same for every subcommand:

    0  done, and no gate failed
    1  a gate or budget failed (a regression)
    2  a usage error or a file that cannot be read; the message names what is wrong

Errors are messages on stderr, never tracebacks: a subcommand raises :class:`CommandError` (or a
``ValueError``/``OSError`` from the results layer, which reads and checks files) and :func:`main`
prints it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from . import clocks, compare, instructions, report, runs

#: The subcommand modules, in the order ``--help`` lists them.
COMMANDS = (compare, report, runs, instructions, clocks)

USAGE_ERROR = 2


class CommandError(Exception):
    """A usage error or an unreadable input, said in one line: exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command, with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="pyagentbench",
        description="Compare and report pyagentbench / pytest-benchmark results.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (CommandError, ValueError, OSError) as exc:
        print(f"pyagentbench {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"pyagentbench {args.command}: interrupted", file=sys.stderr)
        return 130
