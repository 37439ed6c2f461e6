"""Timing: the Timer, the native measure() loop and its result, Measurement.

measure() calls a function in a C loop (vectorcall), times each round of ``loops`` calls with
now_ns(), and returns per-call statistics computed over the rounds. Calibration and defaults live
here; the loop itself is ``pyagentbench._native.time_rounds``.
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import inspect
import math
import numbers
import threading
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from .. import _native
from ..results.units import format_duration, format_rate

__all__ = [
    "Timer",
    "Measurement",
    "measure",
    "measure_with_result",
    "call_outside_event_loop",
    "call_lending_loop",
    "borrowed_loop",
    "close_event_loop",
    "DEFAULT_MAX_TIME",
    "DEFAULT_MIN_ROUND_TIME",
    "DEFAULT_MIN_ROUNDS",
    "DEFAULT_MAX_ROUNDS",
    "DEFAULT_WARMUP_ROUNDS",
    "SLOW_CALL_TIME",
]

#: Seconds a measure() run aims to last when ``rounds`` is not given.
DEFAULT_MAX_TIME = 1.0
#: Lower bound on a round's length when ``loops`` is calibrated. The bound actually used is the
#: larger of this and 1000 x the clock's overhead, so that reading the clock costs under 0.1%.
DEFAULT_MIN_ROUND_TIME = 50e-6
#: Fewest and most rounds chosen when ``rounds`` is not given.
DEFAULT_MIN_ROUNDS = 5
DEFAULT_MAX_ROUNDS = 100_000
#: Untimed rounds run before the timed ones.
DEFAULT_WARMUP_ROUNDS = 1
#: A call at least this long (seconds) is slow: its first call is the calibration and the warm-up,
#: so a slow target costs one call more than its rounds, as pytest-benchmark's loop does.
SLOW_CALL_TIME = 0.010

_CALIBRATION_STEPS = 16


class Timer(_native.Timer):
    """Wall-clock timer on :func:`now_ns`, with CPU time.

    Use as a context manager (``with Timer() as t: ...``) or with :meth:`start` / :meth:`stop`.
    ``elapsed_ns`` and ``elapsed`` (seconds) give the last span, or the time so far while running;
    ``cpu_ns`` the CPU time spent in it on the clock chosen by ``cpu`` (``"process"``, the default;
    ``"thread"``; or ``None`` to read no CPU clock). :meth:`lap` returns the time since the previous
    lap and records it in ``laps``. A Timer can be started again after it stops (each start begins a
    new span); to time an inner span, nest a second Timer.
    """

    __slots__ = ()

    def __init__(self, cpu: str | None = "process") -> None:
        super().__init__(cpu)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        parts = [f"elapsed={format_duration(self.elapsed)}"]
        cpu_ns = self.cpu_ns
        if cpu_ns is not None:
            parts.append(f"cpu={format_duration(cpu_ns * 1e-9)}")
        if self.laps:
            parts.append(f"laps={len(self.laps)}")
        return f"<Timer {state} {' '.join(parts)}>"


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    rank = (n - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


class Measurement:
    """Result of :func:`measure`: per-round timings and per-call statistics.

    ``rounds_ns`` holds each round's total nanoseconds (an ``array.array('q')``, which supports the
    buffer protocol). Every statistic is per call, in seconds, taken over the rounds' per-call means
    (round ns / loops): ``min``, ``max``, ``mean``, ``median``, ``stddev`` (sample), ``iqr``,
    ``p95``, ``p99``, and ``ops`` (calls per second, 1 / mean). ``allocs_per_call`` and
    ``bytes_per_call`` are set when allocation counting was asked for, else None.
    """

    __slots__ = (
        "loops",
        "rounds",
        "rounds_ns",
        "min",
        "max",
        "mean",
        "median",
        "stddev",
        "iqr",
        "p95",
        "p99",
        "ops",
        "total",
        "allocs_per_call",
        "bytes_per_call",
    )

    def __init__(self, rounds_ns: array.array, loops: int) -> None:
        if len(rounds_ns) == 0:
            raise ValueError("Measurement needs at least one round")
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        self.rounds_ns = rounds_ns
        self.loops = loops
        self.rounds = len(rounds_ns)
        per_call = sorted(ns * 1e-9 / loops for ns in rounds_ns)
        n = len(per_call)
        self.min = per_call[0]
        self.max = per_call[-1]
        self.mean = math.fsum(per_call) / n
        self.median = _percentile(per_call, 50)
        self.stddev = (
            math.sqrt(math.fsum((x - self.mean) ** 2 for x in per_call) / (n - 1)) if n > 1 else 0.0
        )
        self.iqr = _percentile(per_call, 75) - _percentile(per_call, 25)
        self.p95 = _percentile(per_call, 95)
        self.p99 = _percentile(per_call, 99)
        self.ops = 1.0 / self.mean if self.mean > 0 else math.inf
        self.total = sum(rounds_ns) * 1e-9
        self.allocs_per_call: float | None = None
        self.bytes_per_call: float | None = None

    def per_call_ns(self) -> list[float]:
        """Each round's per-call time in nanoseconds, in run order."""
        return [ns / self.loops for ns in self.rounds_ns]

    def to_dict(self, include_rounds: bool = False) -> dict[str, Any]:
        """The statistics as plain JSON-ready values (seconds); add ``rounds_ns`` if asked."""
        data: dict[str, Any] = {
            "loops": self.loops,
            "rounds": self.rounds,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "stddev": self.stddev,
            "iqr": self.iqr,
            "p95": self.p95,
            "p99": self.p99,
            "ops": self.ops,
            "total": self.total,
            "allocs_per_call": self.allocs_per_call,
            "bytes_per_call": self.bytes_per_call,
        }
        if include_rounds:
            data["rounds_ns"] = list(self.rounds_ns)
        return data

    def __repr__(self) -> str:
        text = (
            f"<Measurement {self.rounds} rounds x {self.loops} loops: "
            f"mean {format_duration(self.mean)} ± {format_duration(self.stddev)}, "
            f"median {format_duration(self.median)}, min {format_duration(self.min)}, "
            f"p99 {format_duration(self.p99)}, {format_rate(self.ops)}"
        )
        if self.allocs_per_call is not None:
            text += f", {self.allocs_per_call:.4g} allocs/call"
        return text + ">"


# ---- argument checking ----


def _check_count(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"measure(): {name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"measure(): {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_seconds(name: str, value: Any, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"measure(): {name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"measure(): {name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"measure(): {name} must be {bound} seconds, got {value!r}")
    return seconds


def _clock_overhead_ns() -> float:
    global _CLOCK_OVERHEAD_NS
    if _CLOCK_OVERHEAD_NS is None:
        _CLOCK_OVERHEAD_NS = float(_native.clock_info()["now_ns"]["overhead_ns"])
    return _CLOCK_OVERHEAD_NS


_CLOCK_OVERHEAD_NS: float | None = None


# ---- round runners: sync through the C loop, async on one persistent event loop ----


class _SyncRounds:
    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict | None) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None

    def run(self, loops: int, rounds: int) -> array.array:
        out = array.array("q", bytes(8 * rounds))
        self.result = _native.time_rounds(self.fn, self.args, self.kwargs, loops, out)
        return out

    def close(self) -> None:
        pass


class _AsyncRounds:
    """Runs every round on one event loop, timing ``loops`` awaits per round inside the loop.

    The loop is, in order: the loop lent to this thread by :func:`call_lending_loop` (an async
    test's own loop, running on another thread; borrowed, never closed here); else a new loop
    of its own, run in place, or on a thread of its own when this thread already runs a loop
    (a sync form called from an async test, a notebook kernel). Whatever the loop, the clock is
    read inside it, so handing a round to another thread is never timed. Every round goes
    through :meth:`_complete`.
    """

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict | None) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self.result: Any = None
        self._loop_thread: threading.Thread | None = None
        lent = borrowed_loop()
        if lent is not None:
            self.loop, self._owned, self._elsewhere = lent, False, True
            return
        self.loop, self._owned = asyncio.new_event_loop(), True
        self._elsewhere = _loop_running_here()
        if self._elsewhere:
            self._loop_thread = threading.Thread(target=_serve_loop, args=(self.loop,), daemon=True,
                                                 name="pyagentbench-event-loop")
            self._loop_thread.start()

    async def _rounds(self, loops: int, rounds: int) -> array.array:
        fn, args, kwargs, now_ns = self.fn, self.args, self.kwargs, _native.now_ns
        out = array.array("q", bytes(8 * rounds))
        result = None
        for r in range(rounds):
            start = now_ns()
            for _ in range(loops):
                result = await fn(*args, **kwargs)
            out[r] = now_ns() - start
        self.result = result
        return out

    def _complete(self, coroutine: Any) -> Any:
        """Run coroutine to its end on this runner's loop and return its value."""
        if not self._elsewhere:
            return self.loop.run_until_complete(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def run(self, loops: int, rounds: int) -> array.array:
        return self._complete(self._rounds(loops, rounds))

    def run_awaitable(self, awaitable: Any) -> Any:
        """Await one awaitable on this runner's loop and return its result."""
        return self._complete(_await(awaitable))

    def close(self) -> None:
        if not self._owned:
            return
        self._owned = False  # closed once
        if self._loop_thread is None:
            close_event_loop(self.loop)
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join()


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """A runner's loop thread: serve rounds until stopped, then close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        close_event_loop(loop)
        asyncio.set_event_loop(None)


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(awaitable: Any) -> Any:
    return await awaitable


def close_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close a loop the way asyncio.run() does: cancel the tasks left on it (e.g. an agent's
    workers) and let them finish, then shut down async generators and the default executor."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)
    )


def measure(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    rounds: int | None = None,
    loops: int | None = None,
    warmup_rounds: int | None = None,
    min_round_time: float | None = None,
    max_time: float | None = None,
    min_rounds: int | None = None,
) -> Measurement:
    """Time ``fn(*args, **kwargs)`` in a native loop and return a :class:`Measurement`.

    Each round calls fn ``loops`` times back to back and is timed with :func:`now_ns`.

    - ``loops``: when not given, calibrated so that a round lasts at least ``min_round_time``
      (default: the larger of 50 us and 1000 x the clock's overhead, so reading the clock costs
      under 0.1% of a round).
    - ``rounds``: when not given, as many as fit in ``max_time`` (default 1 s), at least
      ``min_rounds`` (default 5) and at most 100,000.
    - ``warmup_rounds``: untimed rounds first (default 1; none by default when one call takes
      ``SLOW_CALL_TIME``, 10 ms, or more: the first call, which calibrates, is the warm-up).

    Coroutine functions (and callables returning awaitables) are awaited, every round on one
    event loop created for the run; if this thread already runs an event loop, the measurement
    runs on a helper thread. An exception from fn propagates unchanged; Ctrl-C stops the loop at
    once, even when fn is a fast C function.
    """
    return measure_with_result(
        fn, args, kwargs, rounds=rounds, loops=loops, warmup_rounds=warmup_rounds,
        min_round_time=min_round_time, max_time=max_time, min_rounds=min_rounds,
    )[0]


def measure_with_result(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    rounds: int | None = None,
    loops: int | None = None,
    warmup_rounds: int | None = None,
    min_round_time: float | None = None,
    max_time: float | None = None,
    min_rounds: int | None = None,
    warmup_calls: int | None = None,
) -> tuple[Measurement, Any]:
    """:func:`measure`, also returning what the final timed call returned (awaited if async).

    ``warmup_calls`` (pytest-benchmark's ``--benchmark-warmup-iterations`` when its warm-up is
    on) replaces ``warmup_rounds``: untimed rounds of the calibrated loop count until that many
    calls ran or ``max_time`` is spent, whichever comes first; at least one round."""
    if not callable(fn):
        raise TypeError(f"measure(): fn must be callable, not {type(fn).__name__}")
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"measure(): args must be a tuple or list, not {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"measure(): kwargs must be a mapping or None, not {type(kwargs).__name__}")
    rounds = _check_count("rounds", rounds, 1)
    loops = _check_count("loops", loops, 1)
    min_rounds = _check_count("min_rounds", min_rounds, 1)
    warmup_rounds = _check_count("warmup_rounds", warmup_rounds, 0)
    warmup_calls = _check_count("warmup_calls", warmup_calls, 1)
    min_round_time = _check_seconds("min_round_time", min_round_time, allow_zero=True)
    max_time = _check_seconds("max_time", max_time, allow_zero=False)
    call_args = tuple(args)
    call_kwargs = dict(kwargs) if kwargs else None

    plan = _Plan(rounds, loops, warmup_rounds, min_round_time, max_time, min_rounds, warmup_calls)
    if _is_async(fn):
        return _measure_async(fn, call_args, call_kwargs, plan)
    # One probe call tells a plain function from one that returns awaitables (a lambda or
    # partial around a coroutine function); it also warms fn up, and its time tells a slow
    # target, for which it is the calibration as well.
    start = _native.now_ns()
    probe = fn(*call_args, **(call_kwargs or {}))
    probe_ns = _native.now_ns() - start
    if inspect.isawaitable(probe):
        _close_awaitable(probe)
        return _measure_async(fn, call_args, call_kwargs, plan)
    del probe
    runner = _SyncRounds(fn, call_args, call_kwargs)
    return _run(runner, plan, probe_ns)


def _close_awaitable(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _measure_async(fn, args, kwargs, plan: "_Plan"):
    def run() -> tuple[Measurement, Any]:
        runner = _AsyncRounds(fn, args, kwargs)
        try:
            return _run(runner, plan, None)
        finally:
            runner.close()

    return call_outside_event_loop(run)


def call_outside_event_loop(func: Callable[[], Any]) -> Any:
    """Return func(), run on a helper thread if this thread is already running an event loop
    (func starts an event loop of its own, which a running one forbids). Exceptions propagate."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return func()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc

    helper = threading.Thread(target=target, name="pyagentbench-event-loop")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _LentLoop(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_LENT = _LentLoop()


def borrowed_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop lent to this thread by :func:`call_lending_loop`, else None."""
    loop = _LENT.loop
    return loop if loop is not None and not loop.is_closed() else None


async def call_lending_loop(func: Callable[[], Any]) -> Any:
    """Await func(), run on a helper thread that awaits on the caller's own event loop.

    func is synchronous and may block (the timing and observing machinery is); while it runs, the
    caller's loop stays free, and every await it makes through an event-loop runner here
    (:class:`_AsyncRounds`, hence measure() of a coroutine function) runs as a task on the
    caller's loop, so objects bound to that loop work. func runs in a copy of the caller's
    context (contextvars). Its exception, of any kind, is raised here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("this needs a running asyncio event loop (await it in an asyncio or "
                           "anyio-on-asyncio test); elsewhere use the synchronous form") from None
    done: asyncio.Future = loop.create_future()
    context = contextvars.copy_context()

    def settle(error: BaseException | None, value: Any) -> None:
        if done.done():  # the awaiting task was cancelled
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)

    def helper_thread_main() -> None:
        _LENT.loop = loop
        try:
            value, error = context.run(func), None
        except BaseException as exc:  # handed to the awaiting task
            value, error = None, exc
        finally:
            _LENT.loop = None
        try:
            loop.call_soon_threadsafe(settle, error, value)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=helper_thread_main, name="pyagentbench-beside-loop", daemon=True).start()
    return await done


def _calibrate_loops(runner: Any, min_round_ns: float) -> tuple[int, float]:
    """Smallest loop count (grown geometrically) whose round lasts at least min_round_ns."""
    loops = 1
    round_ns = float(runner.run(loops, 1)[0])
    for _ in range(_CALIBRATION_STEPS):
        if round_ns >= min_round_ns:
            break
        if round_ns <= 0:
            loops *= 10
        else:
            loops = max(loops * 2, math.ceil(loops * min_round_ns * 1.2 / round_ns))
        round_ns = float(runner.run(loops, 1)[0])
    return loops, round_ns


class _Plan(NamedTuple):
    """measure()'s options, checked; None where the default applies."""

    rounds: int | None
    loops: int | None
    warmup_rounds: int | None
    min_round_time: float | None
    max_time: float | None
    min_rounds: int | None
    warmup_calls: int | None


def _run(runner, plan: _Plan, probe_ns: int | None) -> tuple[Measurement, Any]:
    """Calibrate, warm up and time runner's rounds. probe_ns: how long an untimed first call
    (already made) took, if one was made."""
    rounds, loops, warmup_rounds, min_round_time, max_time, min_rounds, warmup_calls = plan
    if max_time is None:
        max_time = DEFAULT_MAX_TIME
    if min_round_time is None:
        min_round_ns = max(DEFAULT_MIN_ROUND_TIME * 1e9, 1000.0 * _clock_overhead_ns())
    else:
        min_round_ns = min_round_time * 1e9

    slow_ns = SLOW_CALL_TIME * 1e9
    if loops is None and probe_ns is not None and probe_ns >= max(slow_ns, min_round_ns):
        # A slow call: the probe already was one loop's round, and the warm-up.
        loops, round_ns = 1, float(probe_ns)
        warmed = True
    elif loops is None:
        loops, round_ns = _calibrate_loops(runner, min_round_ns)
        warmed = loops == 1 and round_ns >= slow_ns  # the calibration call warmed a slow target
    else:
        round_ns, warmed = None, False
    if warmup_calls is not None:
        by_time = int(max_time * 1e9 / max(round_ns or 1.0, 1.0))
        warmup_rounds = max(1, min(warmup_calls // loops, by_time))
    elif warmup_rounds is None:
        warmup_rounds = 0 if warmed else DEFAULT_WARMUP_ROUNDS
    if warmup_rounds:
        warm = runner.run(loops, warmup_rounds)
        round_ns = float(min(warm)) if round_ns is None else min(round_ns, float(min(warm)))
    if rounds is None:
        if round_ns is None:
            round_ns = float(runner.run(loops, 1)[0])
        fit = int(max_time * 1e9 / max(round_ns, 1.0))
        floor = DEFAULT_MIN_ROUNDS if min_rounds is None else min_rounds
        rounds = max(min(fit, DEFAULT_MAX_ROUNDS), floor)
    return Measurement(runner.run(loops, rounds), loops), runner.result
