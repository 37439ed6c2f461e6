"""Notebook magics: ``%load_ext pyagentbench`` registers ``%abench`` and ``%%abench``.

``%abench agent.run(task)`` times a statement like ``%timeit`` does, with the native loop, and also
reports peak RSS and allocations per call. A statement whose value is awaitable (``%abench
llm.acomplete(p)``, or written ``%abench await llm.acomplete(p)``) is awaited on each call; so is a
``%%abench`` cell that awaits (its body becomes an ``async def``). The awaits run on an event loop
of the measurement's own, on a helper thread when the kernel's loop is running. ``%%abench``
times a cell; code on the magic's own line runs once first, as setup. Both return an
:class:`AbenchResult`, which shows as a compact table in a notebook and is usable in code (``r =
%abench f()``; ``r.measurement.median``).

Options: ``-r ROUNDS``, ``-n LOOPS``, ``-t MAX_TIME`` (seconds), ``--no-allocs``,
``--no-resources``.
"""

from __future__ import annotations

import argparse
import ast
import html
import inspect
import shlex
import textwrap
from typing import Any

from ..instruments.observe import Observation, observe
from ..results.units import format_bytes, format_count, format_duration, format_rate

__all__ = ["AbenchResult", "load_ipython_extension", "abench_line", "abench_cell"]


class AbenchResult:
    """What ``%abench`` measured: ``measurement`` (a Measurement), ``metrics`` (the same keys the
    pytest plugin saves), and ``result`` (the statement's last value, for an expression)."""

    def __init__(self, statement: str, observation: Observation, magic: str = "%abench") -> None:
        self.statement = statement
        self.magic = magic
        self.measurement = observation.measurement
        self.metrics = observation.metrics
        self.result = observation.result

    def rows(self) -> list[tuple[str, str]]:
        m = self.measurement
        rows = [
            ("mean ± std", f"{format_duration(m.mean)} ± {format_duration(m.stddev)}"),
            ("median", format_duration(m.median)),
            ("min … max", f"{format_duration(m.min)} … {format_duration(m.max)}"),
            ("p99 (per call)", format_duration(m.p99)),
            ("ops", format_rate(m.ops)),
            ("rounds × loops", f"{m.rounds} × {m.loops}"),
        ]
        if m.ttft is not None:
            rows.append(("first item", format_duration(m.ttft)))
        if m.inter_item is not None:
            rows.append(("between items", format_duration(m.inter_item)))
        if "peak_rss_bytes" in self.metrics:
            rows.append(("peak RSS", format_bytes(self.metrics["peak_rss_bytes"])))
            rows.append(("RSS delta", format_bytes(self.metrics["rss_delta_bytes"])))
        if "allocs_per_call" in self.metrics:
            rows.append(("allocs/call", format_count(self.metrics["allocs_per_call"])))
            rows.append(("bytes/call", format_bytes(self.metrics["bytes_per_call"])))
        return rows

    def __repr__(self) -> str:
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        lines = [f"{self.magic} {self.statement}"] + [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:right'>{html.escape(value)}</td></tr>"
            for name, value in self.rows()
        )
        caption = html.escape(self.statement if len(self.statement) < 80 else self.statement[:77] + "...")
        return (
            "<table class='pyagentbench-abench'>"
            f"<caption style='text-align:left'><code>{caption}</code></caption>{cells}</table>"
        )


class _OptionParser(argparse.ArgumentParser):
    """Raises instead of printing usage and exiting, so a bad option is one clear error."""

    def error(self, message: str) -> Any:
        raise ValueError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _OptionParser(prog="%abench", add_help=False)
    parser.add_argument("-r", dest="rounds", type=int, default=None)
    parser.add_argument("-n", dest="loops", type=int, default=None)
    parser.add_argument("-t", dest="max_time", type=float, default=None)
    parser.add_argument("--no-allocs", dest="allocs", action="store_false")
    parser.add_argument("--no-resources", dest="resources", action="store_false")
    return parser


def _split_options(line: str) -> tuple[argparse.Namespace, str]:
    """Leading options, then the statement (which may itself contain dashes)."""
    words = shlex.split(line, posix=True) if line.strip() else []
    options: list[str] = []
    index = 0
    while index < len(words) and words[index].startswith("-"):
        options.append(words[index])
        if words[index] in ("-r", "-n", "-t") and index + 1 < len(words):
            options.append(words[index + 1])
            index += 1
        index += 1
    try:
        namespace = _parser().parse_args(options)
    except ValueError as exc:
        raise ValueError(f"%abench: bad options {' '.join(options)!r}: {exc}") from None
    rest = line
    for word in options:  # drop the options from the raw text, keeping the statement verbatim
        rest = rest.split(word, 1)[1] if word in rest else rest
    return namespace, rest.strip()


def _has_top_level_await(source: str) -> bool:
    """True if source awaits outside any function (``await``, ``async for``, ``async with``)."""
    try:
        code = compile(source, "<abench>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False  # reported when the function is compiled, in the user's own words
    return bool(code.co_flags & inspect.CO_COROUTINE)


def _compile_function(body: str, namespace: dict[str, Any], returns_value: bool) -> Any:
    """A function whose globals are the user's namespace, running body (returning its value if
    body is one expression and returns_value). A body that awaits becomes an ``async def``, whose
    every call the measurement awaits."""
    source = body
    if returns_value:
        try:
            compile(body, "<abench>", "eval")
            source = f"return ({body})"
        except SyntaxError:
            pass
    define = "async def" if _has_top_level_await(body) else "def"
    code = f"{define} __abench_target__():\n" + textwrap.indent(source or "pass", "    ") + "\n"
    local: dict[str, Any] = {}
    exec(compile(code, "<abench>", "exec"), namespace, local)
    return local["__abench_target__"]


def _run(statement: str, options: argparse.Namespace, namespace: dict[str, Any],
         returns_value: bool, magic: str = "%abench", shown: str | None = None) -> AbenchResult:
    """Time statement; the result names it as shown (what the user typed), if given."""
    target = _compile_function(statement, namespace, returns_value)
    measure_options = {k: v for k, v in (("rounds", options.rounds), ("loops", options.loops),
                                         ("max_time", options.max_time)) if v is not None}
    observation = observe(target, resources_on=options.resources, allocs_on=options.allocs,
                          **measure_options)
    return AbenchResult(statement if shown is None else shown, observation, magic)


def abench_line(line: str, namespace: dict[str, Any]) -> AbenchResult:
    """``%abench [options] statement`` against *namespace*."""
    options, statement = _split_options(line)
    typed = statement
    if statement.startswith("await "):
        # The timed function awaits whatever the statement returns, so `await` is implied.
        statement = statement[len("await "):].strip()
    if not statement:
        raise ValueError("%abench needs a statement, e.g. %abench agent.run(task)")
    return _run(statement, options, namespace, returns_value=True, shown=typed)


def abench_cell(line: str, cell: str, namespace: dict[str, Any]) -> AbenchResult:
    """``%%abench [options] [setup]`` with the cell as the timed body."""
    options, setup = _split_options(line)
    if setup:
        exec(compile(setup, "<abench-setup>", "exec"), namespace)
    body = textwrap.dedent(cell).strip("\n")
    if not body.strip():
        raise ValueError("%%abench needs a cell body to time")
    return _run(body, options, namespace, returns_value=False, magic="%%abench")


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%abench`` and ``%%abench`` with an IPython shell."""

    def abench(line: str, cell: str | None = None) -> AbenchResult:
        if cell is None:
            return abench_line(line, ipython.user_ns)
        return abench_cell(line, cell, ipython.user_ns)

    abench.__doc__ = __doc__
    ipython.register_magic_function(abench, magic_kind="line_cell", magic_name="abench")
