"""Instruction counts per call under valgrind's callgrind: the measuring side.

A process started by :func:`valgrind_command` (with :func:`valgrind_env`) runs under callgrind with
a fixed, reproducible setup; inside it :func:`count_instructions` makes one warm call, then
:data:`LOOPS` calls with callgrind's counters zeroed just before and dumped just after them
(``_native.callgrind_count``), and reads the dump back: instructions per call (``Ir``) and, from
the cache simulation, an estimated number of cycles per call (:func:`estimated_cycles`).

What a window counts: every instruction any thread of the process executed between the zero and the
dump (collection is on for all threads, ``--separate-threads=no``), so work the target hands to a
thread it starts and joins is counted, and so is the native loop's own call overhead (a few hundred
instructions per call, the same for every target).

Nothing here is imported by a plain run: the pytest plugin and the command load it on request.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import _native

__all__ = [
    "LOOPS",
    "CACHE_GEOMETRY",
    "DIR_ENV",
    "ValgrindMissing",
    "InstructionCount",
    "valgrind_command",
    "valgrind_env",
    "under_callgrind",
    "parse_dump",
    "estimated_cycles",
    "count_instructions",
]

#: Calls per counted window. Counts need no calibration: a small fixed loop, after one warm call.
LOOPS = 10

#: The simulated caches (size in bytes, associativity, line size), fixed so that an estimated-cycles
#: figure does not depend on the machine that ran it: 32 KiB 8-way L1 I and D, 8 MiB 16-way last level.
CACHE_GEOMETRY = {"I1": (32768, 8, 64), "D1": (32768, 8, 64), "LL": (8388608, 16, 64)}

#: Environment variable naming the folder callgrind writes its dumps to; set for the child only.
DIR_ENV = "PYAGENTBENCH_CALLGRIND_DIR"

INSTALL_HINT = (
    "valgrind is not installed (or not on PATH); instruction counts run the benchmarks under "
    "valgrind's callgrind. Install it with `sudo apt-get install valgrind` (Debian/Ubuntu) or "
    "`sudo dnf install valgrind` (Fedora); valgrind runs on Linux"
)


class ValgrindMissing(RuntimeError):
    """valgrind cannot be found; the message says how to install it."""


@dataclass(frozen=True)
class InstructionCount:
    """One counted window: ``loops`` calls and callgrind's event totals over them; ``window_ns``
    is the window's wall time (under valgrind: tens of times the native time), ``result`` the warm
    call's value (awaited if fn is async)."""

    loops: int
    events: Mapping[str, int]
    window_ns: int = 0
    result: Any = field(default=None, compare=False, repr=False)

    @property
    def instructions_per_call(self) -> float:
        """Instructions executed per call (callgrind's ``Ir``), call overhead included."""
        return self.events.get("Ir", 0) / self.loops

    @property
    def est_cycles_per_call(self) -> float:
        """:func:`estimated_cycles` per call."""
        return estimated_cycles(self.events) / self.loops

    def metrics(self) -> dict[str, Any]:
        """Record keys for ``extra_info["agentbench"]``."""
        return {
            "instructions_per_call": self.instructions_per_call,
            "est_cycles_per_call": self.est_cycles_per_call,
            "instructions_loops": self.loops,
        }


def estimated_cycles(events: Mapping[str, int]) -> float:
    """Cycles estimated from callgrind's cache simulation::

        Ir + 10 * (I1mr + D1mr + D1mw) + 100 * (ILmr + DLmr + DLmw)

    one cycle per instruction, 10 more per first-level miss (instruction read, data read, data
    write) and 100 more per last-level miss, the weights of callgrind's own cycle estimate. Without
    the cache events (no ``--cache-sim=yes``) it is just ``Ir``."""
    l1 = events.get("I1mr", 0) + events.get("D1mr", 0) + events.get("D1mw", 0)
    ll = events.get("ILmr", 0) + events.get("DLmr", 0) + events.get("DLmw", 0)
    return float(events.get("Ir", 0) + 10 * l1 + 100 * ll)


def parse_dump(text: str, source: str = "callgrind dump") -> dict[str, int]:
    """Event totals of one callgrind output file: its ``events:`` names and the ``summary:`` line
    (``totals:`` if there is no summary). Trailing events callgrind leaves out are zero.
    ValueError naming *source* when the lines are missing or malformed."""
    names: list[str] | None = None
    values: list[str] | None = None
    totals: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("events:"):
            names = line.split(":", 1)[1].split()
        elif line.startswith("summary:"):
            values = line.split(":", 1)[1].split()
        elif line.startswith("totals:"):
            totals = line.split(":", 1)[1].split()
    values = values if values is not None else totals
    if not names or values is None:
        raise ValueError(f"{source}: no 'events:' and 'summary:'/'totals:' lines; not a callgrind dump")
    if len(values) > len(names) or not all(v.isdigit() for v in values):
        raise ValueError(f"{source}: malformed summary line {' '.join(values)!r} for events {names}")
    counts = dict.fromkeys(names, 0)
    counts.update({name: int(value) for name, value in zip(names, values)})
    return counts


def valgrind_command(argv: Sequence[str], out_dir: str | os.PathLike[str]) -> list[str]:
    """The command that runs *argv* (a Python command line) under callgrind, reproducibly:
    address randomisation off (``setarch -R``, where present), the cache geometry of
    :data:`CACHE_GEOMETRY`, collection on for every thread and one dump file per counted window in
    *out_dir*. :class:`ValgrindMissing` when valgrind is not on PATH."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing(INSTALL_HINT)
    command: list[str] = []
    setarch = shutil.which("setarch")
    if setarch is not None:
        command += [setarch, platform.machine(), "-R"]
    command += [
        valgrind, "--tool=callgrind", "--quiet",
        "--collect-atstart=yes", "--separate-threads=no",
        "--cache-sim=yes",
        *(f"--{name}={','.join(map(str, geometry))}" for name, geometry in CACHE_GEOMETRY.items()),
        f"--callgrind-out-file={Path(out_dir) / 'callgrind.out'}",
    ]
    if _native.callgrind_client_requests():
        # Uninstrumented outside the benchmarks (pytest, imports, fixtures): valgrind runs them a few
        # times slower instead of 50-100 times; each count turns instrumentation on around its calls.
        command.append("--instr-atstart=no")
    else:  # built without valgrind's header: name the window function
        symbol = _native.CALLGRIND_WINDOW_SYMBOL
        command += [f"--zero-before={symbol}", f"--dump-after={symbol}"]
    return command + list(argv)


def valgrind_env(out_dir: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: *base* (default ``os.environ``) with the system allocator
    (``PYTHONMALLOC=malloc``, which valgrind tracks), a fixed hash seed (``PYTHONHASHSEED=0``
    unless set: str hashes order sets and dicts, and so the work done) and :data:`DIR_ENV`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONMALLOC"] = "malloc"
    env.setdefault("PYTHONHASHSEED", "0")
    env[DIR_ENV] = str(out_dir)
    return env


def under_callgrind() -> bool:
    """True in a process :func:`valgrind_command` started: it runs on valgrind and has a dump folder."""
    return bool(os.environ.get(DIR_ENV)) and _native.running_on_valgrind()


def _dump_numbers(folder: Path) -> set[int]:
    numbers = set()
    for path in folder.glob("callgrind.out.*"):
        match = re.fullmatch(r"callgrind\.out\.(\d+)", path.name)
        if match:
            numbers.add(int(match.group(1)))
    return numbers


def _callable_for_count(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None
                        ) -> tuple[Callable[..., Any], tuple, dict | None, Callable[[], None], Any]:
    """(callable, args, kwargs, close, the warm call's value) to count: fn itself, after one warm call; an async fn runs
    each call to completion on an event loop of its own (its overhead counted), a generator
    function's generators are consumed."""
    kwargs = dict(kwargs) if kwargs else None
    value = fn(*args, **(kwargs or {}))  # the warm call
    if inspect.isawaitable(value) or inspect.isasyncgen(value):
        loop = asyncio.new_event_loop()

        async def drain(awaitable_or_stream: Any) -> Any:
            if inspect.isasyncgen(awaitable_or_stream):
                async for _ in awaitable_or_stream:
                    pass
                return awaitable_or_stream
            return await awaitable_or_stream

        try:
            value = loop.run_until_complete(drain(value))
        except BaseException:
            loop.close()
            raise

        def run_async(*a: Any, **k: Any) -> None:
            loop.run_until_complete(drain(fn(*a, **k)))

        return run_async, args, kwargs, loop.close, value
    if inspect.isgenerator(value):
        for _ in value:
            pass

        def consume(*a: Any, **k: Any) -> None:
            for _ in fn(*a, **k):
                pass

        return consume, args, kwargs, lambda: None, value
    return fn, args, kwargs, lambda: None, value


def count_instructions(fn: Callable[..., Any], args: tuple = (), kwargs: Mapping[str, Any] | None = None,
                       loops: int = LOOPS, name: str = "agentbench") -> InstructionCount:
    """Count the instructions of ``fn(*args, **kwargs)`` under callgrind: one warm call, then
    *loops* calls in a counted window. Needs a process started by :func:`valgrind_command`
    (RuntimeError otherwise); fn's exceptions propagate. Each window's dump is read and removed."""
    folder = os.environ.get(DIR_ENV)
    if not folder or not _native.running_on_valgrind():
        raise RuntimeError(
            "count_instructions() counts under callgrind only: run pytest with "
            "--agentbench-instructions (or `pyagentbench instructions -- ...`), which starts valgrind"
        )
    if not asyncio_loop_running():
        return _count(fn, args, kwargs, loops, name, Path(folder))
    from .timers import call_outside_event_loop  # an async test: our own loop on a helper thread

    result: InstructionCount = call_outside_event_loop(lambda: _count(fn, args, kwargs, loops, name, Path(folder)))
    return result


def asyncio_loop_running() -> bool:
    """True when this thread runs an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _count(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None, loops: int,
           name: str, folder: Path) -> InstructionCount:
    _native.callgrind_instrumentation(True)  # before the warm call: it warms the simulated caches
    try:
        return _count_instrumented(fn, args, kwargs, loops, name, folder)
    finally:
        _native.callgrind_instrumentation(False)


def _count_instrumented(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None,
                        loops: int, name: str, folder: Path) -> InstructionCount:
    target, call_args, call_kwargs, close, result = _callable_for_count(fn, tuple(args), kwargs)
    before = _dump_numbers(folder)
    try:
        start = _native.now_ns()
        _native.callgrind_count(target, call_args, call_kwargs, loops, name)
        window_ns = _native.now_ns() - start
    except BaseException:
        for number in _dump_numbers(folder) - before:  # a window cut short by fn's exception
            (folder / f"callgrind.out.{number}").unlink(missing_ok=True)
        raise
    finally:
        close()
    new = sorted(_dump_numbers(folder) - before)
    if not new:
        raise RuntimeError(f"callgrind wrote no dump to {folder} for {name}")
    path = folder / f"callgrind.out.{new[-1]}"
    try:
        events = parse_dump(path.read_text(errors="replace"), str(path))
    finally:
        path.unlink(missing_ok=True)
    return InstructionCount(loops, events, window_ns, result)
