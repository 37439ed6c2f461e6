"""Load runs: drive an agent or a function with many concurrent tasks and measure it, :func:`run_load`.

Closed loop (``rate=None``): ``concurrency`` workers each start the next task as soon as their last
one ends; latency is each call's own time. Open loop (``rate`` tasks/s): task ``i`` is scheduled at
``start + i / rate`` whatever happened before; at most ``concurrency`` run at once, and latency is
measured from the scheduled start, so a slow system shows its queueing delay instead of hiding it.

Sync targets run on threads, async targets as tasks on an event loop (:func:`arun_load` inside a
running loop; :func:`run_load` makes one). A native Sampler (when available) records RSS and CPU.

A task fails when its call raises an ``Exception``, or when ``timeout`` is set and the call runs
longer than that. :attr:`LoadResult.failures` keeps, per exception type, a count and the first
message; :attr:`LoadResult.first_error` the first failure's formatted traceback. Both are bounded
whatever the number of failures (:data:`MAX_FAILURE_TYPES`, :data:`MAX_MESSAGE_CHARS`,
:data:`MAX_TRACEBACK_CHARS`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import numbers
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Optional

from .._native import now_ns
from ..instruments.resources import Sampler
from ..runtime.histogram import Histogram

__all__ = [
    "run_load", "arun_load", "LoadResult", "Failure", "PROGRESS_AFTER_S", "MAX_FAILURE_TYPES",
    "MAX_MESSAGE_CHARS", "MAX_TRACEBACK_CHARS", "OTHER_FAILURES",
]

#: A progress line appears on a terminal once a run has lasted this many seconds.
PROGRESS_AFTER_S = 2.0

#: LoadResult.failures keeps at most this many exception types apart (the first seen); failures of
#: further types are counted together under :data:`OTHER_FAILURES`.
MAX_FAILURE_TYPES = 32

#: The key under which failures of types beyond :data:`MAX_FAILURE_TYPES` are counted.
OTHER_FAILURES = "(other types)"

#: A failure's message is kept up to this many characters (longer ones are cut, ending in "...").
MAX_MESSAGE_CHARS = 500

#: LoadResult.first_error keeps the last this many characters of the formatted traceback.
MAX_TRACEBACK_CHARS = 8000


@dataclasses.dataclass(frozen=True)
class Failure:
    """The failures of one exception type in a load run: how many tasks failed with it, and the
    message (``str(exception)``, cut to :data:`MAX_MESSAGE_CHARS`) of the first one seen."""

    count: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        """``{"count": ..., "message": ...}``."""
        return {"count": self.count, "message": self.message}


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """The outcome of a load run. ``throughput`` is completed (successful) tasks per second of wall
    time, so failing fast never looks fast; ``attempted_throughput`` counts completed + failed.
    Latencies are nanoseconds over every task, failed ones included (``latency_mean_ns`` is the
    exact mean, the percentiles come from a histogram with 3 significant digits);
    ``achieved_concurrency`` is the mean number of tasks in flight (total busy time / wall time);
    ``resources`` a ResourceSummary, or None where no Sampler is available.

    ``failures`` maps each exception type's name (as a traceback prints it: ``"ValueError"``,
    ``"mypkg.errors.RateLimited"``; tasks over the timeout are ``"TimeoutError"``) to a
    :class:`Failure`, in the order first seen; ``first_error`` is the formatted traceback of the
    first failure (None if none failed)."""

    mode: str
    completed: int
    failed: int
    error_rate: float
    throughput: float
    attempted_throughput: float
    duration_s: float
    latency_mean_ns: float
    latency_p50_ns: int
    latency_p95_ns: int
    latency_p99_ns: int
    latency_max_ns: int
    achieved_concurrency: float
    resources: Any = dataclasses.field(repr=False, default=None)
    latency: Any = dataclasses.field(repr=False, compare=False, default=None)
    failures: Mapping[str, Failure] = dataclasses.field(default_factory=dict)
    first_error: Optional[str] = dataclasses.field(repr=False, default=None)

    @property
    def errors_by_type(self) -> dict[str, int]:
        """How many tasks failed with each exception type, e.g. ``{"ValueError": 3}``."""
        return {name: f.count for name, f in self.failures.items()}

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields, the failures and the resource summary as a JSON-ready dict."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("resources", "latency", "failures")
        }
        out["failures"] = {name: f.to_dict() for name, f in self.failures.items()}
        res = self.resources
        out["resources"] = res.to_dict() if res is not None and hasattr(res, "to_dict") else None
        return out


def _target(obj: Any) -> tuple[Callable[[Any], Any], bool]:
    from .agent import _as_target

    return _as_target(obj, "target")


def _positive(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or None, not {type(value).__name__}")
    # numbers.Real only promises < and <= (typeshed has no > for it); same test as "not (value > 0)".
    if value <= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class _Plan:
    """Which payload task i runs, when it is due, and when the run ends."""

    def __init__(self, payloads: list, duration: Optional[float], rate: Optional[float]) -> None:
        self.payloads = payloads
        self.duration_ns = None if duration is None else int(duration * 1e9)
        self.interval_ns = None if rate is None else 1e9 / rate
        self.start_ns = 0
        self.stopped = False  # set when a worker found the run cannot go on
        self._next = itertools.count()

    def claim(self) -> Optional[tuple[Any, int]]:
        """The next (payload, scheduled_ns), or None when the run is over. Thread-safe."""
        if self.stopped:
            return None
        i = next(self._next)  # atomic on CPython; each index is handed out once
        n = len(self.payloads)
        if self.duration_ns is None and i >= n:
            return None
        due = self.start_ns if self.interval_ns is None else self.start_ns + int(i * self.interval_ns)
        if self.duration_ns is not None:
            limit = self.start_ns + self.duration_ns
            if (due if self.interval_ns is not None else now_ns()) >= limit:
                return None
        return self.payloads[i % n], due


def _type_name(exc_type: type) -> str:
    """The exception type's name as a traceback prints it (module-qualified unless builtin)."""
    if exc_type is asyncio.TimeoutError:  # before Python 3.11 not the builtin TimeoutError
        return "TimeoutError"
    module, name = exc_type.__module__, exc_type.__qualname__
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not end the run
        text = f"<unprintable {type(exc).__name__}>"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _formatted(exc: BaseException) -> str:
    """The traceback as Python prints it, from the first frame outside pyagentbench (the load
    worker and wrappers say nothing about the target's bug), cut to MAX_TRACEBACK_CHARS."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = f"{_type_name(type(exc))}: {_message(exc)}\n"
    return text if len(text) <= MAX_TRACEBACK_CHARS else "...\n" + text[-(MAX_TRACEBACK_CHARS - 4):]


def _timeout_error(timeout: float, elapsed_ns: int, sync: bool) -> TimeoutError:
    if sync:
        return TimeoutError(
            f"the task ran {elapsed_ns * 1e-9:.3g} s, longer than the {timeout:g} s timeout "
            "(a sync call is not interrupted: it ran to its end and its outcome was dropped)"
        )
    return TimeoutError(f"the task ran longer than the {timeout:g} s timeout and was cancelled")


class _Counts:
    """One worker's tallies (only that worker writes them; merged when the run ends)."""

    __slots__ = ("completed", "failed", "busy_ns", "latency", "failures", "other", "first_error")

    def __init__(self) -> None:
        self.completed = self.failed = self.busy_ns = 0
        self.latency = Histogram()
        # exception type -> [count, first seen (ns), first message, name]; at most MAX_FAILURE_TYPES
        # keys, further types are tallied in other: [count, first seen (ns), "name: first message"]
        self.failures: dict[type, list] = {}
        self.other: Optional[list] = None
        self.first_error: Optional[tuple[int, str]] = None  # (seen at ns, formatted traceback)

    def fail(self, exc: BaseException) -> None:
        """Count a failed task: one dict lookup after the first failure of each type."""
        self.failed += 1
        entry = self.failures.get(type(exc))
        if entry is not None:
            entry[0] += 1
        else:
            self._first_of_its_type(exc)

    def _first_of_its_type(self, exc: BaseException) -> None:
        seen = now_ns()
        name = _type_name(type(exc))
        if len(self.failures) < MAX_FAILURE_TYPES:
            self.failures[type(exc)] = [1, seen, _message(exc), name]
        elif self.other is None:
            self.other = [1, seen, f"{name}: {_message(exc)}"]
        else:
            self.other[0] += 1
        if self.first_error is None:
            self.first_error = (seen, _formatted(exc))


def _merge_failures(counts: list) -> tuple[dict[str, Failure], Optional[str]]:
    """The workers' failures by type name, earliest first seen first, bounded as one worker's are."""
    merged: dict[str, list] = {}

    def add(name: str, count: int, seen: int, message: str) -> None:
        entry = merged.get(name)
        if entry is None:
            merged[name] = [count, seen, message]
        else:
            entry[0] += count
            if seen < entry[1]:
                entry[1], entry[2] = seen, message

    for c in counts:
        for count, seen, message, name in c.failures.values():
            add(name, count, seen, message)
        if c.other is not None:
            add(OTHER_FAILURES, *c.other)
    ordered = sorted(merged.items(), key=lambda item: (item[0] == OTHER_FAILURES, item[1][1]))
    kept: dict[str, Failure] = {}
    other: Optional[list] = None
    for name, (count, seen, message) in ordered:
        if name != OTHER_FAILURES and len(kept) < MAX_FAILURE_TYPES:
            kept[name] = Failure(count, message)
            continue
        text = message if name == OTHER_FAILURES else f"{name}: {message}"
        if other is None:
            other = [count, seen, text]
        else:
            other[0] += count
            if seen < other[1]:
                other[1], other[2] = seen, text
    if other is not None:
        kept[OTHER_FAILURES] = Failure(other[0], other[2])
    firsts = [c.first_error for c in counts if c.first_error is not None]
    return kept, min(firsts)[1] if firsts else None


class _Progress:
    def __init__(self, enabled: bool, counts: list) -> None:
        self.enabled = enabled
        self.counts = counts
        self.shown = False
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self.start = time.monotonic()
            self.thread = threading.Thread(target=self._main, daemon=True)
            self.thread.start()
        return self

    def _main(self) -> None:
        if self.stop.wait(PROGRESS_AFTER_S):
            return
        while not self.stop.wait(0.5):
            elapsed = time.monotonic() - self.start
            done = sum(c.completed for c in self.counts)
            failed = sum(c.failed for c in self.counts)
            sys.stderr.write(
                f"\rrun_load: {elapsed:6.1f} s  {done} completed  {failed} failed  {done / elapsed:,.0f} completed tasks/s "
            )
            sys.stderr.flush()
            self.shown = True

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _sampler() -> Sampler:
    return Sampler(interval=0.005)


def _result(mode: str, counts: list, wall_ns: int, sampler: Any) -> LoadResult:
    merged = Histogram()
    completed = failed = busy = 0
    for c in counts:
        completed += c.completed
        failed += c.failed
        busy += c.busy_ns
        merged.merge(c.latency)
    done = completed + failed
    wall = wall_ns * 1e-9
    has = merged.count > 0
    failures, first_error = _merge_failures(counts)
    return LoadResult(
        mode=mode,
        completed=completed,
        failed=failed,
        error_rate=failed / done if done else 0.0,
        throughput=completed / wall if wall > 0 else 0.0,
        attempted_throughput=done / wall if wall > 0 else 0.0,
        duration_s=wall,
        latency_mean_ns=float(merged.mean) if has else 0.0,
        latency_p50_ns=merged.percentile(50) if has else 0,
        latency_p95_ns=merged.percentile(95) if has else 0,
        latency_p99_ns=merged.percentile(99) if has else 0,
        latency_max_ns=merged.max if has else 0,
        achieved_concurrency=busy / wall_ns if wall_ns > 0 else 0.0,
        resources=sampler.summary() if sampler is not None else None,
        latency=merged,
        failures=failures,
        first_error=first_error,
    )


def _prepare(
    payloads: Iterable[Any], concurrency: Any, duration: Any, rate: Any, timeout: Any
) -> tuple[list, int, Optional[float], Optional[float], Optional[float]]:
    items = list(payloads)
    if not items:
        raise ValueError("payloads must not be empty")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    return items, concurrency, _positive("duration", duration), _positive("rate", rate), _positive("timeout", timeout)


def run_load(
    target: Any,
    payloads: Iterable[Any],
    concurrency: int = 10,
    duration: Optional[float] = None,
    rate: Optional[float] = None,
    *,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
) -> LoadResult:
    """Drive ``target`` (an Agent instance, or a sync or async callable taking one payload) and
    measure it.

    Without ``duration`` each payload runs once; with it, payloads are cycled until ``duration``
    seconds have passed. ``rate`` (tasks/s) selects the open loop. ``timeout`` (seconds, None for
    none) bounds each task's own run time, from its start: an async task still running then is
    cancelled; a sync call cannot be interrupted, so it runs to its end on its worker and is then
    counted failed. Either way the task is a ``TimeoutError`` failure. ``progress`` (default:
    stderr is a terminal) prints a progress line once the run lasts over
    :data:`PROGRESS_AFTER_S` seconds.
    """
    items, concurrency, duration, rate, timeout = _prepare(payloads, concurrency, duration, rate, timeout)
    call, is_async = _target(target)
    if is_async:
        return asyncio.run(_arun_load(call, items, concurrency, duration, rate, timeout, progress))
    timeout_ns = None if timeout is None else int(timeout * 1e9)
    plan = _Plan(items, duration, rate)
    counts = [_Counts() for _ in range(concurrency)]

    def load_worker(c: _Counts) -> None:
        record = c.latency.record
        claim = plan.claim
        while True:
            job = claim()
            if job is None:
                return
            payload, due = job
            start = now_ns()
            if start < due:
                time.sleep((due - start) * 1e-9)
                start = now_ns()
            try:
                result = call(payload)
            except Exception as exc:
                end = now_ns()
                if timeout_ns is not None and end - start > timeout_ns:
                    c.fail(_timeout_error(timeout, end - start, sync=True))
                else:
                    c.fail(exc)
            else:
                end = now_ns()
                if result is not None and hasattr(result, "__await__"):
                    from .agent import _awaitable_error

                    misuse.append(_awaitable_error(result, "run_load()"))
                    plan.stopped = True
                    return
                if timeout_ns is not None and end - start > timeout_ns:
                    c.fail(_timeout_error(timeout, end - start, sync=True))
                else:
                    c.completed += 1
            c.busy_ns += end - start
            record(end - (due if rate is not None else start))

    misuse: list = []
    sampler = _sampler()
    show = sys.stderr.isatty() if progress is None else bool(progress)
    threads = [threading.Thread(target=load_worker, args=(c,), daemon=True) for c in counts]
    if sampler is not None:
        sampler.start()
    try:
        with _Progress(show, counts):
            plan.start_ns = now_ns()
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
            wall_ns = now_ns() - plan.start_ns
    finally:
        if sampler is not None:
            sampler.stop()
    if misuse:
        raise misuse[0]
    return _result("open" if rate is not None else "closed", counts, wall_ns, sampler)


async def arun_load(
    target: Any,
    payloads: Iterable[Any],
    concurrency: int = 10,
    duration: Optional[float] = None,
    rate: Optional[float] = None,
    *,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
) -> LoadResult:
    """:func:`run_load` for an async target, on the running event loop."""
    items, concurrency, duration, rate, timeout = _prepare(payloads, concurrency, duration, rate, timeout)
    call, is_async = _target(target)
    if not is_async:
        raise TypeError("arun_load() needs an async target; use run_load() for a sync one")
    return await _arun_load(call, items, concurrency, duration, rate, timeout, progress)


if sys.version_info >= (3, 11):

    async def _await_within(call: Callable[[Any], Any], payload: Any, timeout: float) -> bool:
        """Await call(payload), cancelled after timeout s (asyncio.wait_for semantics, in the same
        task); True if it was, its own exception otherwise (its own TimeoutError included)."""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await call(payload)
        except TimeoutError:
            if deadline.expired():
                return True
            raise
        return False

else:  # pragma: no cover - Python 3.9 and 3.10

    async def _await_within(call: Callable[[Any], Any], payload: Any, timeout: float) -> bool:
        """Await call(payload) under asyncio.wait_for; True if the timeout cancelled it."""
        try:
            await asyncio.wait_for(call(payload), timeout)
        except asyncio.TimeoutError as exc:
            if str(exc):  # wait_for's own carries no message; this one is the target's
                raise
            return True
        return False


async def _arun_load(
    call: Callable[[Any], Any],
    items: list,
    concurrency: int,
    duration: Optional[float],
    rate: Optional[float],
    timeout: Optional[float],
    progress: Optional[bool],
) -> LoadResult:
    plan = _Plan(items, duration, rate)
    counts = [_Counts() for _ in range(concurrency)]

    async def load_worker(c: _Counts) -> None:
        record = c.latency.record
        while True:
            job = plan.claim()
            if job is None:
                return
            payload, due = job
            start = now_ns()
            if start < due:
                await asyncio.sleep((due - start) * 1e-9)
                start = now_ns()
            try:
                if timeout is None:
                    await call(payload)
                    c.completed += 1
                elif await _await_within(call, payload, timeout):
                    c.fail(_timeout_error(timeout, now_ns() - start, sync=False))
                else:
                    c.completed += 1
            except Exception as exc:
                c.fail(exc)
            end = now_ns()
            c.busy_ns += end - start
            record(end - (due if rate is not None else start))

    sampler = _sampler()
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if sampler is not None:
        sampler.start()
    try:
        with _Progress(show, counts):
            plan.start_ns = now_ns()
            await asyncio.gather(*(load_worker(c) for c in counts))
            wall_ns = now_ns() - plan.start_ns
    finally:
        if sampler is not None:
            sampler.stop()
    return _result("open" if rate is not None else "closed", counts, wall_ns, sampler)
