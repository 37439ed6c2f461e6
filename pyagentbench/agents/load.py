"""Load runs: drive an agent or a function with many concurrent tasks and measure it, :func:`run_load`.

Closed loop (``rate=None``): ``concurrency`` workers each start the next task as soon as their last
one ends; latency is each call's own time. Open loop (``rate`` tasks/s): task ``i`` is scheduled at
``start + i / rate`` whatever happened before; at most ``concurrency`` run at once, and latency is
measured from the scheduled start, so a slow system shows its queueing delay instead of hiding it.

Sync targets run on threads, async targets as tasks on an event loop (:func:`arun_load` inside a
running loop; :func:`run_load` makes one). A native Sampler (when available) records RSS and CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import numbers
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional

from .._native import now_ns
from ..instruments.resources import Sampler
from ..runtime.histogram import Histogram

__all__ = ["run_load", "arun_load", "LoadResult", "PROGRESS_AFTER_S"]

#: A progress line appears on a terminal once a run has lasted this many seconds.
PROGRESS_AFTER_S = 2.0


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """The outcome of a load run. ``throughput`` is completed (successful) tasks per second of wall
    time, so failing fast never looks fast; ``attempted_throughput`` counts completed + failed.
    Latencies are nanoseconds; ``achieved_concurrency`` is the mean number of tasks in flight
    (total busy time / wall time); ``resources`` a ResourceSummary, or None where no Sampler is
    available."""

    mode: str
    completed: int
    failed: int
    error_rate: float
    throughput: float
    attempted_throughput: float
    duration_s: float
    latency_p50_ns: int
    latency_p95_ns: int
    latency_p99_ns: int
    latency_max_ns: int
    achieved_concurrency: float
    resources: Any = dataclasses.field(repr=False, default=None)
    latency: Any = dataclasses.field(repr=False, compare=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (and the resource summary as a dict) as a JSON-ready dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("resources", "latency")}
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


class _Counts:
    __slots__ = ("completed", "failed", "busy_ns", "latency")

    def __init__(self) -> None:
        self.completed = self.failed = self.busy_ns = 0
        self.latency = Histogram()


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
    return LoadResult(
        mode=mode,
        completed=completed,
        failed=failed,
        error_rate=failed / done if done else 0.0,
        throughput=completed / wall if wall > 0 else 0.0,
        attempted_throughput=done / wall if wall > 0 else 0.0,
        duration_s=wall,
        latency_p50_ns=merged.percentile(50) if has else 0,
        latency_p95_ns=merged.percentile(95) if has else 0,
        latency_p99_ns=merged.percentile(99) if has else 0,
        latency_max_ns=merged.max if has else 0,
        achieved_concurrency=busy / wall_ns if wall_ns > 0 else 0.0,
        resources=sampler.summary() if sampler is not None else None,
        latency=merged,
    )


def _prepare(payloads: Iterable[Any], concurrency: Any, duration: Any, rate: Any) -> tuple[list, int, Optional[float], Optional[float]]:
    items = list(payloads)
    if not items:
        raise ValueError("payloads must not be empty")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    return items, concurrency, _positive("duration", duration), _positive("rate", rate)


def run_load(
    target: Any,
    payloads: Iterable[Any],
    concurrency: int = 10,
    duration: Optional[float] = None,
    rate: Optional[float] = None,
    *,
    progress: Optional[bool] = None,
) -> LoadResult:
    """Drive ``target`` (an Agent, or a sync or async callable taking one payload) and measure it.

    Without ``duration`` each payload runs once; with it, payloads are cycled until ``duration``
    seconds have passed. ``rate`` (tasks/s) selects the open loop. ``progress`` (default: stderr is
    a terminal) prints a progress line once the run lasts over :data:`PROGRESS_AFTER_S` seconds.
    """
    items, concurrency, duration, rate = _prepare(payloads, concurrency, duration, rate)
    call, is_async = _target(target)
    if is_async:
        return asyncio.run(_arun_load(call, items, concurrency, duration, rate, progress))
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
            except Exception:
                c.failed += 1
            else:
                if result is not None and hasattr(result, "__await__"):
                    from .agent import _awaitable_error

                    misuse.append(_awaitable_error(result, "run_load()"))
                    plan.stopped = True
                    return
                c.completed += 1
            end = now_ns()
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
    progress: Optional[bool] = None,
) -> LoadResult:
    """:func:`run_load` for an async target, on the running event loop."""
    items, concurrency, duration, rate = _prepare(payloads, concurrency, duration, rate)
    call, is_async = _target(target)
    if not is_async:
        raise TypeError("arun_load() needs an async target; use run_load() for a sync one")
    return await _arun_load(call, items, concurrency, duration, rate, progress)


async def _arun_load(
    call: Callable[[Any], Any], items: list, concurrency: int, duration: Optional[float], rate: Optional[float], progress: Optional[bool]
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
                await call(payload)
                c.completed += 1
            except Exception:
                c.failed += 1
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
