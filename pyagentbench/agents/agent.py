"""The agent base: :class:`Task`, :class:`Agent` and its :class:`AgentMetrics`.

Subclass :class:`Agent` and implement ``handle(self, task)`` as a plain method (the agent runs it on
worker threads fed by a native :class:`~pyagentbench.TaskQueue`) or as an ``async def`` (worker
tasks on the running event loop, fed by a small priority queue). An async agent's workers follow
the running loop: used from a new loop, it starts new workers there. Every task goes through the
same steps: optional cache lookup, optional circuit breaker, ``handle``, metrics.

Counters are kept per worker (no lock on the hot path) and summed by :meth:`Agent.metrics`; a worker
keeps its counters across restarts, so their number is bounded by ``workers``. Latencies and queue
waits are recorded, in nanoseconds, in two native :class:`~pyagentbench.Histogram` objects per
agent that every worker shares: recording is one C call (serialised by the GIL, or by the
histogram's own mutex on free-threaded builds), and the agent's memory does not grow with its
workers or with the event loops it has run on. ``run()`` on a sync agent hands the workers chunks of the batch, not one queue item
and one Future per task, which keeps the per-task overhead to a few hundred nanoseconds.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import heapq
import inspect
import itertools
import math
import queue
import threading
from typing import Any, Iterable, Optional

from .._native import now_ns
from ..runtime.cache import cache_key
from ..runtime.histogram import Histogram
from ..runtime.taskqueue import QueueClosed, TaskQueue
from ._tokens import token_sink
from .usage import record_tokens_saved, record_usage
from .breaker import CircuitBreaker

__all__ = ["Task", "Agent", "AgentMetrics", "DEFAULT_SYNC_WORKERS", "DEFAULT_ASYNC_WORKERS", "MAX_CHUNK"]

#: Worker threads of a sync agent when ``workers`` is not given.
DEFAULT_SYNC_WORKERS = 4
#: Worker tasks of an async agent when ``workers`` is not given.
DEFAULT_ASYNC_WORKERS = 64
#: Most tasks of a ``run()`` batch one worker claims at a time. Workers claim shrinking chunks
#: (what is left over twice the worker count), so the batch ends evenly balanced.
MAX_CHUNK = 1024

_task_ids = itertools.count(1)
_MISS = object()


class Task:
    """One unit of work: ``payload``, ``priority`` (lower runs first), ``id`` (auto), ``kind``."""

    __slots__ = ("payload", "priority", "id", "kind")

    def __init__(self, payload: Any, priority: float = 0, id: Any = None, kind: Optional[str] = None) -> None:
        self.payload = payload
        self.priority = priority
        self.id = next(_task_ids) if id is None else id
        self.kind = kind

    def __repr__(self) -> str:
        kind = f" kind={self.kind!r}" if self.kind is not None else ""
        return f"<Task {self.id!r} priority={self.priority!r}{kind} payload={self.payload!r}>"


@dataclasses.dataclass(frozen=True)
class AgentMetrics:
    """What an agent did so far.

    ``throughput`` is successful tasks per second over the active window, from the first task's
    start to the last task's end (``attempted_throughput`` counts failures too), as for
    LoadResult. Latencies (``handle`` plus cache and breaker, per task) and queue waits
    (submission to start) are in nanoseconds; ``latency`` and ``queue_wait`` are the merged
    histograms. ``tokens_saved`` counts the tokens (in + out) that cache hits did not spend again.
    """

    tasks_completed: int
    tasks_failed: int
    cache_hits: int
    cache_misses: int
    error_rate: float
    throughput: float
    attempted_throughput: float
    active_seconds: float
    latency_p50_ns: int
    latency_p95_ns: int
    latency_p99_ns: int
    latency_max_ns: int
    queue_wait_p50_ns: int
    queue_wait_p99_ns: int
    tokens_in: int
    tokens_out: int
    tokens_saved: int
    latency: Any = dataclasses.field(repr=False, compare=False)
    queue_wait: Any = dataclasses.field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("latency", "queue_wait")}


class _Stats:
    """One worker's counters; only that worker writes them. ``latency`` and ``queue_wait`` are the
    agent's shared histograms, referenced here so the hot paths reach them in one lookup."""

    __slots__ = (
        "completed",
        "failed",
        "cache_hits",
        "cache_misses",
        "tokens_in",
        "tokens_out",
        "tokens_saved",
        "first_ns",
        "last_ns",
        "latency",
        "queue_wait",
    )

    def __init__(self, latency: Any, queue_wait: Any) -> None:
        self.completed = self.failed = self.cache_hits = self.cache_misses = 0
        self.tokens_in = self.tokens_out = self.tokens_saved = 0
        self.first_ns = self.last_ns = 0
        self.latency = latency
        self.queue_wait = queue_wait


class _Failed:
    """Marks a failed slot in a batch's results."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


# ---- work items of sync agents ----


class _Single:
    """A submit()ted task and its Future."""

    __slots__ = ("task", "future", "enqueued_ns")

    def __init__(self, task: Task, future: concurrent.futures.Future, enqueued_ns: int) -> None:
        self.task = task
        self.future = future
        self.enqueued_ns = enqueued_ns

    def run(self, agent: "Agent", stats: _Stats) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = agent._process_sync(self.task, stats, self.enqueued_ns)
        except BaseException as exc:  # the task's failure, not the worker's
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    def cancel(self) -> None:
        self.future.cancel()


class _Batch:
    """A run() batch: workers claim [start, end) chunks until none is left."""

    __slots__ = ("payloads", "results", "size", "next", "remaining", "failed", "lock", "done", "enqueued_ns", "divisor")

    def __init__(self, payloads: list, workers: int, enqueued_ns: int) -> None:
        self.payloads = payloads
        self.size = len(payloads)
        self.results: list = [None] * self.size
        self.next = 0
        self.remaining = self.size
        self.failed = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.enqueued_ns = enqueued_ns
        self.divisor = 2 * workers

    def claim(self) -> Optional[tuple[int, int]]:
        with self.lock:
            start = self.next
            left = self.size - start
            if left <= 0:
                return None
            end = start + min(MAX_CHUNK, max(1, left // self.divisor))
            self.next = end
            return start, end

    def finish(self, count: int, failed: int) -> None:
        with self.lock:
            self.remaining -= count
            self.failed += failed
            if self.remaining == 0:
                self.done.set()

    def cancel(self) -> None:
        """Mark every unclaimed task cancelled."""
        with self.lock:
            start, self.next = self.next, self.size
        error = concurrent.futures.CancelledError()
        for i in range(start, self.size):
            self.results[i] = _Failed(error)
        if start < self.size:
            self.finish(self.size - start, self.size - start)


class _BatchRunner:
    """Queue item telling one worker to help with a batch."""

    __slots__ = ("batch",)

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch

    def run(self, agent: "Agent", stats: _Stats) -> None:
        batch = self.batch
        claim = batch.claim
        fast = agent._cache is None and agent._breaker is None
        while True:
            span = claim()
            if span is None:
                return
            start, end = span
            if fast:
                failed = agent._run_span_fast(batch, start, end, stats)
            else:
                failed = agent._run_span(batch, start, end, stats)
            batch.finish(end - start, failed)

    def cancel(self) -> None:
        self.batch.cancel()


# ---- work items of async agents ----


class _ASingle:
    __slots__ = ("task", "future", "enqueued_ns")

    def __init__(self, task: Task, future: asyncio.Future, enqueued_ns: int) -> None:
        self.task = task
        self.future = future
        self.enqueued_ns = enqueued_ns

    async def arun(self, agent: "Agent", stats: _Stats) -> None:
        if self.future.done():  # cancelled while queued
            return
        try:
            result = await agent._process_async(self.task, stats, self.enqueued_ns)
        except asyncio.CancelledError:
            self.future.cancel()
            raise
        except BaseException as exc:
            if not self.future.done():
                self.future.set_exception(exc)
        else:
            if not self.future.done():
                self.future.set_result(result)

    def cancel(self) -> None:
        self.future.cancel()


class _AItem:
    """Task ``index`` of an async run() batch."""

    __slots__ = ("batch", "index", "enqueued_ns")

    def __init__(self, batch: "_ABatch", index: int, enqueued_ns: int) -> None:
        self.batch = batch
        self.index = index
        self.enqueued_ns = enqueued_ns

    async def arun(self, agent: "Agent", stats: _Stats) -> None:
        batch = self.batch
        payload = batch.payloads[self.index]
        task = payload if payload.__class__ is Task else Task(payload, batch.priority)
        try:
            batch.results[self.index] = await agent._process_async(task, stats, self.enqueued_ns)
        except asyncio.CancelledError:
            batch.results[self.index] = _Failed(asyncio.CancelledError())
            batch.finish(True)
            raise
        except BaseException as exc:
            batch.results[self.index] = _Failed(exc)
            batch.finish(True)
        else:
            batch.finish(False)

    def cancel(self) -> None:
        self.batch.results[self.index] = _Failed(asyncio.CancelledError())
        self.batch.finish(True)


class _ABatch:
    __slots__ = ("payloads", "results", "remaining", "failed", "future", "priority")

    def __init__(self, payloads: list, future: asyncio.Future, priority: float) -> None:
        self.payloads = payloads
        self.results: list = [None] * len(payloads)
        self.remaining = len(payloads)
        self.failed = 0
        self.future = future
        self.priority = priority

    def finish(self, failed: bool) -> None:
        self.remaining -= 1
        self.failed += failed
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)


class _AQueue:
    """The priority queue of an async agent's workers: ``(priority, seq, item)`` entries, lowest first.

    It does what ``asyncio.PriorityQueue`` did for the agent (put, put_nowait, get_nowait,
    task_done, join, qsize), but a worker waits for an entry on a bare future in its own frame
    (see :meth:`Agent._aworker_main`), with no queue coroutine in between: a worker destroyed with
    a loop that was closed without cancelling it is then closed without touching that loop, so
    nothing complains at garbage collection.
    """

    __slots__ = ("maxsize", "loop", "heap", "getters", "putters", "joiners", "unfinished")

    def __init__(self, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        self.maxsize = maxsize
        self.loop = loop
        self.heap: list = []
        self.getters: collections.deque = collections.deque()
        self.putters: collections.deque = collections.deque()
        self.joiners: list = []
        self.unfinished = 0

    def qsize(self) -> int:
        return len(self.heap)

    @staticmethod
    def wake(waiters: collections.deque) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def put_nowait(self, entry: tuple, force: bool = False) -> None:
        if self.maxsize and not force and len(self.heap) >= self.maxsize:
            raise asyncio.QueueFull
        heapq.heappush(self.heap, entry)
        self.unfinished += 1
        if self.getters:
            self.wake(self.getters)

    async def put(self, entry: tuple) -> None:
        while self.maxsize and len(self.heap) >= self.maxsize:
            waiter = self.loop.create_future()
            self.putters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not self.loop.is_closed():
                    if not waiter.done():
                        waiter.cancel()
                    try:
                        self.putters.remove(waiter)
                    except ValueError:  # woken already: hand the free slot to the next putter
                        if len(self.heap) < self.maxsize:
                            self.wake(self.putters)
                raise
        self.put_nowait(entry)

    def get_nowait(self) -> tuple:
        if not self.heap:
            raise asyncio.QueueEmpty
        entry = heapq.heappop(self.heap)
        if self.putters:
            self.wake(self.putters)
        return entry

    def task_done(self) -> None:
        self.unfinished -= 1
        if self.unfinished == 0 and self.joiners:
            joiners, self.joiners = self.joiners, []
            for waiter in joiners:
                if not waiter.done():
                    waiter.set_result(None)

    async def join(self) -> None:
        if self.unfinished:
            waiter = self.loop.create_future()
            self.joiners.append(waiter)
            await waiter


def _collect(results: list, failed: int, return_exceptions: bool) -> list:
    if not failed:
        return results
    for i, value in enumerate(results):
        if value.__class__ is _Failed:
            if not return_exceptions:
                raise value.exc
            results[i] = value.exc
    return results


def _check_workers(workers: Any, default: int) -> int:
    if workers is None:
        return default
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, not {type(workers).__name__}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def _as_target(obj: Any, what: str) -> tuple[Any, bool]:
    """``(callable, is_async)`` for a load or batch target: an Agent runs through ``process``; a
    bound method of an Agent (``agent.process``, ``agent.run``) is async when its agent is,
    since it returns a coroutine without being a coroutine function; other callables are async
    when they are coroutine functions (or their ``__call__`` is). An Agent subclass (the class
    itself, which is callable) is a TypeError: calling it would make an agent per task."""
    if isinstance(obj, Agent):
        return obj.process, obj.is_async
    if isinstance(obj, type) and issubclass(obj, Agent):
        raise TypeError(
            f"{what} is the class {obj.__name__}, not an agent: pass an instance, e.g. {obj.__name__}()"
        )
    if not callable(obj):
        raise TypeError(f"{what} must be an Agent or a callable, not {type(obj).__name__}")
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(getattr(obj, "__call__", None)):
        return obj, True
    owner = getattr(obj, "__self__", None)
    if inspect.ismethod(obj) and isinstance(owner, Agent):
        return obj, owner.is_async
    return obj, False


def _awaitable_error(result: Any, where: str) -> TypeError:
    """Close an awaitable that a sync target returned, and say what to pass instead."""
    close = getattr(result, "close", None)
    if callable(close):
        close()  # a coroutine never awaited: close it so it is not reported as never awaited
    return TypeError(
        f"{where}: the target returned {type(result).__name__} (an awaitable) instead of a result; "
        "pass an async def function, or the Agent itself, so that it is awaited"
    )


class Agent:
    """Base class for agents: subclass it and implement ``handle(self, task)`` (plain or async).

    Options (keyword-only): ``workers`` (threads for a sync handler, default
    :data:`DEFAULT_SYNC_WORKERS`; asyncio tasks for an async one, default
    :data:`DEFAULT_ASYNC_WORKERS`), ``maxsize`` (queue bound, 0 = none), ``cache`` (a
    :class:`~pyagentbench.Cache` or any object with ``get(key, default)`` and ``set(key, value)``;
    keyed by :meth:`cache_key`), ``breaker`` (a :class:`~pyagentbench.CircuitBreaker`), ``name``.

    Sync agents: ``submit()`` returns a ``concurrent.futures.Future``, ``run()`` returns the results.
    Async agents: ``submit()`` returns an ``asyncio.Future`` and ``run()``, ``process()``,
    ``stop()`` are awaited; workers start on the running loop, and start again on a new one when
    the agent is used from another loop (or its loop cancelled them), keeping the metrics. Both start on first use, or with
    :meth:`start` / a ``with`` (``async with``) block, which stops with ``drain=True`` on exit.
    """

    def __init__(
        self,
        *,
        workers: Optional[int] = None,
        maxsize: int = 0,
        cache: Any = None,
        breaker: Optional[CircuitBreaker] = None,
        name: Optional[str] = None,
    ) -> None:
        handle = getattr(type(self), "handle", None)
        if handle is None or handle is Agent.handle:
            raise TypeError(f"{type(self).__name__} must implement handle(self, task)")
        self.is_async = inspect.iscoroutinefunction(handle)
        self.workers = _check_workers(workers, DEFAULT_ASYNC_WORKERS if self.is_async else DEFAULT_SYNC_WORKERS)
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        if cache is not None and not (callable(getattr(cache, "get", None)) and callable(getattr(cache, "set", None))):
            raise TypeError(f"cache must be a Cache (with get() and set()) or None, not {type(cache).__name__}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, not {type(breaker).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self.name = name or type(self).__name__
        self._cache = cache
        self._breaker = breaker
        self._state = "created"
        self._lifecycle = threading.Lock()
        # One pair of histograms per agent, shared by every worker (see the module docstring).
        self._latency = Histogram()
        self._queue_wait = Histogram()
        self._all_stats: list[_Stats] = []
        self._free_stats: list[_Stats] = []
        self._worker_stats: dict[int, _Stats] = {}  # by worker index, kept across restarts
        self._stats_lock = threading.Lock()  # not _lifecycle: stop() holds that while joining workers
        self._extra = self._new_stats()  # tokens recorded outside any task
        self._busy: list[int] = []
        self._threads: list[threading.Thread] = []
        self._queue: Any = None
        self._tasks: list = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # the loop an async agent's workers run on
        self._workers_lost = False
        self._seq = itertools.count()

    # ---- to override ----

    def handle(self, task: Task) -> Any:
        """Do the work for one task; implement in a subclass (``def`` or ``async def``)."""
        raise NotImplementedError

    def cache_key(self, task: Task) -> Any:
        """The cache key of a task: its payload if it is a str, int or bytes, else ``cache_key(payload)``.

        Override to key on part of the payload. Digest keys are wrapped in a 1-tuple so they never
        collide with a str payload.
        """
        payload = task.payload
        cls = payload.__class__
        if cls is str or cls is int or cls is bytes:
            return payload
        return (cache_key(payload),)

    # ---- helpers for handlers ----

    def record_tokens(self, tokens_in: int, tokens_out: int) -> None:
        """Count tokens the current task spent (MockLLM calls inside a task do this themselves).

        The same as :func:`pyagentbench.record_usage` with ``calls=0`` (tokens, no LLM call), except
        that outside any task the tokens still count for this agent."""
        if token_sink.get() is None:
            with self._lifecycle:
                self._extra.tokens_in += tokens_in
                self._extra.tokens_out += tokens_out
        record_usage(tokens_in, tokens_out, calls=0)

    # ---- stats ----

    def _new_stats(self) -> _Stats:
        stats = _Stats(self._latency, self._queue_wait)
        self._all_stats.append(stats)
        return stats

    def _stats_of_worker(self, index: int) -> _Stats:
        """Worker ``index``'s counters: made when that worker first runs, then reused by the
        workers that replace it (after stop() and start(), or on a new event loop)."""
        with self._stats_lock:
            stats = self._worker_stats.get(index)
            if stats is None:
                stats = self._worker_stats[index] = self._new_stats()
        return stats

    def _borrow_stats(self) -> _Stats:
        try:
            return self._free_stats.pop()
        except IndexError:
            return self._new_stats()

    def metrics(self) -> AgentMetrics:
        """Sum every worker's counters, and snapshot the agent's histograms, into an
        :class:`AgentMetrics`."""
        latency = self._latency.copy()
        waits = self._queue_wait.copy()
        totals = dict.fromkeys(
            ("completed", "failed", "cache_hits", "cache_misses", "tokens_in", "tokens_out", "tokens_saved"), 0
        )
        first = last = 0
        for stats in list(self._all_stats):
            for key in totals:
                totals[key] += getattr(stats, key)
            if stats.first_ns and (not first or stats.first_ns < first):
                first = stats.first_ns
            last = max(last, stats.last_ns)
        done = totals["completed"] + totals["failed"]
        active = (last - first) * 1e-9 if first and last > first else 0.0
        return AgentMetrics(
            tasks_completed=totals["completed"],
            tasks_failed=totals["failed"],
            cache_hits=totals["cache_hits"],
            cache_misses=totals["cache_misses"],
            error_rate=totals["failed"] / done if done else 0.0,
            throughput=totals["completed"] / active if active else 0.0,
            attempted_throughput=done / active if active else 0.0,
            active_seconds=active,
            latency_p50_ns=latency.percentile(50) if latency.count else 0,
            latency_p95_ns=latency.percentile(95) if latency.count else 0,
            latency_p99_ns=latency.percentile(99) if latency.count else 0,
            latency_max_ns=latency.max if latency.count else 0,
            queue_wait_p50_ns=waits.percentile(50) if waits.count else 0,
            queue_wait_p99_ns=waits.percentile(99) if waits.count else 0,
            tokens_in=totals["tokens_in"],
            tokens_out=totals["tokens_out"],
            tokens_saved=totals["tokens_saved"],
            latency=latency,
            queue_wait=waits,
        )

    def status(self) -> dict[str, Any]:
        """``state`` (created, running, stopping, stopped), ``queue_depth``, ``busy_workers``, ``workers``."""
        q = self._queue
        return {
            "state": self._state,
            "queue_depth": q.qsize() if q is not None else 0,
            "busy_workers": sum(self._busy),
            "workers": self.workers,
        }

    @property
    def state(self) -> str:
        """``"created"``, ``"running"``, ``"stopping"`` or ``"stopped"``."""
        return self._state

    @property
    def cache(self) -> Any:
        """The agent's cache, or None."""
        return self._cache

    @property
    def breaker(self) -> Optional[CircuitBreaker]:
        """The agent's circuit breaker, or None."""
        return self._breaker

    def _as_task(self, payload_or_task: Any, priority: float) -> Task:
        if payload_or_task.__class__ is Task or isinstance(payload_or_task, Task):
            return payload_or_task
        return Task(payload_or_task, priority)

    # ---- one task, sync ----

    def _begin(self, task: Task, stats: _Stats, enqueued_ns: int) -> tuple[int, Any, Any, int]:
        """Open one task's bookkeeping: ``(start_ns, cache key, cached entry or _MISS, tokens
        spent so far)``. A cache hit is counted and closed here."""
        start = now_ns()
        if enqueued_ns:
            stats.queue_wait.record(start - enqueued_ns)
        if not stats.first_ns:
            stats.first_ns = start
        cache = self._cache
        if cache is None:
            return start, None, _MISS, 0
        key = self.cache_key(task)
        entry = cache.get(key, _MISS)
        if entry is not _MISS:
            stats.cache_hits += 1
            stats.tokens_saved += entry[1]
            record_tokens_saved(entry[1])
            self._end(stats, start, ok=True)
            return start, key, entry, 0
        stats.cache_misses += 1
        return start, key, _MISS, stats.tokens_in + stats.tokens_out

    def _end(self, stats: _Stats, start: int, ok: bool) -> None:
        """Close one task's bookkeeping: count it and record its latency."""
        if ok:
            stats.completed += 1
        else:
            stats.failed += 1
        end = now_ns()
        stats.latency.record(end - start)
        stats.last_ns = end

    def _remember(self, key: Any, result: Any, stats: _Stats, spent: int) -> None:
        """Cache a computed result with the tokens it cost, so hits can report tokens saved."""
        if self._cache is not None:
            self._cache.set(key, (result, stats.tokens_in + stats.tokens_out - spent))

    def _process_sync(self, task: Task, stats: _Stats, enqueued_ns: int) -> Any:
        """Cache, breaker, handle and metrics for one task, on the calling thread."""
        start, key, entry, spent = self._begin(task, stats, enqueued_ns)
        if entry is not _MISS:
            return entry[0]
        breaker = self._breaker
        try:
            if breaker is None:
                result = self.handle(task)
            else:
                breaker.allow()
                try:
                    result = self.handle(task)
                except BaseException as exc:
                    breaker._record(exc)
                    raise
                breaker.record_success()
        except BaseException:
            self._end(stats, start, ok=False)
            raise
        self._remember(key, result, stats, spent)
        self._end(stats, start, ok=True)
        return result

    def _run_span_fast(self, batch: _Batch, start: int, end: int, stats: _Stats) -> int:
        """Tasks [start, end) of a batch with no cache and no breaker: the tight loop."""
        payloads = batch.payloads
        results = batch.results
        handle = self.handle
        record_latency = stats.latency.record
        record_wait = stats.queue_wait.record
        enqueued_ns = batch.enqueued_ns
        clock = now_ns
        completed = failed = 0
        t1 = clock()
        if not stats.first_ns:
            stats.first_ns = t1
        for i in range(start, end):
            t0 = t1
            record_wait(t0 - enqueued_ns)
            payload = payloads[i]
            try:
                results[i] = handle(payload if payload.__class__ is Task else Task(payload))
                completed += 1
            except BaseException as exc:
                results[i] = _Failed(exc)
                failed += 1
            t1 = clock()
            record_latency(t1 - t0)
        stats.completed += completed
        stats.failed += failed
        stats.last_ns = t1
        return failed

    def _run_span(self, batch: _Batch, start: int, end: int, stats: _Stats) -> int:
        payloads = batch.payloads
        results = batch.results
        process = self._process_sync
        enqueued_ns = batch.enqueued_ns
        failed = 0
        for i in range(start, end):
            payload = payloads[i]
            try:
                results[i] = process(payload if payload.__class__ is Task else Task(payload), stats, enqueued_ns)
            except BaseException as exc:
                results[i] = _Failed(exc)
                failed += 1
        return failed

    # ---- one task, async ----

    async def _process_async(self, task: Task, stats: _Stats, enqueued_ns: int) -> Any:
        """_process_sync for an async handler."""
        start, key, entry, spent = self._begin(task, stats, enqueued_ns)
        if entry is not _MISS:
            return entry[0]
        breaker = self._breaker
        try:
            if breaker is None:
                result = await self.handle(task)  # type: ignore[misc]
            else:
                breaker.allow()
                try:
                    result = await self.handle(task)  # type: ignore[misc]
                except BaseException as exc:
                    breaker._record(exc)
                    raise
                breaker.record_success()
        except BaseException:
            self._end(stats, start, ok=False)
            raise
        self._remember(key, result, stats, spent)
        self._end(stats, start, ok=True)
        return result

    # ---- public entry points ----

    def process(self, task: Any) -> Any:
        """Run one task (or payload) inline on the caller, with cache, breaker and metrics.

        Returns the result (async agents: a coroutine to await); the handler's exception propagates.
        """
        task = self._as_task(task, 0)
        if self.is_async:
            return self._aprocess_inline(task)
        stats = self._borrow_stats()
        token = token_sink.set(stats)
        try:
            return self._process_sync(task, stats, 0)
        finally:
            token_sink.reset(token)
            self._free_stats.append(stats)

    async def _aprocess_inline(self, task: Task) -> Any:
        stats = self._borrow_stats()
        token = token_sink.set(stats)
        try:
            return await self._process_async(task, stats, 0)
        finally:
            token_sink.reset(token)
            self._free_stats.append(stats)

    def submit(self, payload_or_task: Any, priority: float = 0) -> Any:
        """Queue one task; return a ``concurrent.futures.Future`` (async agents: an ``asyncio.Future``)."""
        task = self._as_task(payload_or_task, priority)
        if task is payload_or_task:
            priority = task.priority
        if self.is_async:
            self._ensure_async_started()
            afuture: asyncio.Future = asyncio.get_running_loop().create_future()
            self._queue.put_nowait((priority, next(self._seq), _ASingle(task, afuture, now_ns())))
            return afuture
        self._ensure_started()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._put(_Single(task, future, now_ns()), priority)
        return future

    def run(self, payloads: Iterable[Any], priority: float = 0, return_exceptions: bool = False) -> Any:
        """Run every payload (or Task) on the workers; return the results in submission order.

        If a task failed, raise the first failure (in submission order) once all are done, or with
        ``return_exceptions=True`` put the exceptions in the list. Async agents: ``await`` it.
        """
        if self.is_async:
            return self._arun(payloads, priority, return_exceptions)
        items = payloads if isinstance(payloads, list) else list(payloads)
        if not items:
            return []
        self._ensure_started()
        batch = _Batch(items, self.workers, now_ns())
        for _ in range(min(self.workers, len(items))):
            self._put(_BatchRunner(batch), priority)
        while not batch.done.wait(0.1):  # wake now and then so Ctrl-C is honoured
            pass
        return _collect(batch.results, batch.failed, return_exceptions)

    async def _arun(self, payloads: Iterable[Any], priority: float, return_exceptions: bool) -> list:
        items = payloads if isinstance(payloads, list) else list(payloads)
        if not items:
            return []
        self._ensure_async_started()
        loop = asyncio.get_running_loop()
        batch = _ABatch(items, loop.create_future(), priority)
        q = self._queue
        seq = self._seq
        if q.maxsize:
            for i in range(len(items)):
                await q.put((priority, next(seq), _AItem(batch, i, now_ns())))
        else:
            put = q.put_nowait
            for i in range(len(items)):
                put((priority, next(seq), _AItem(batch, i, now_ns())))
        await batch.future
        return _collect(batch.results, batch.failed, return_exceptions)

    # ---- lifecycle, sync ----

    def _put(self, item: Any, priority: float) -> None:
        try:
            self._queue.put(item, priority)
        except QueueClosed:
            raise RuntimeError(f"agent {self.name!r} is stopped") from None

    def _ensure_started(self) -> None:
        if self._state != "running":
            if self._state == "created":
                self.start()
            else:
                raise RuntimeError(f"agent {self.name!r} is {self._state}; start() it again first")

    def start(self) -> "Agent":
        """Start the workers (async agents: on the running event loop). Returns the agent."""
        if self.is_async:
            self._start_async()
            return self
        with self._lifecycle:
            if self._state == "running":
                return self
            self._queue = TaskQueue(self.maxsize)
            self._busy = [0] * self.workers
            self._threads = [
                threading.Thread(target=self._worker_main, args=(i,), name=f"{self.name}-worker-{i}", daemon=True)
                for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()
            self._state = "running"
        return self

    def _worker_main(self, index: int) -> None:
        stats = self._stats_of_worker(index)
        token_sink.set(stats)
        get = self._queue.get
        busy = self._busy
        closed = QueueClosed
        while True:
            try:
                item = get()
            except closed:
                return
            busy[index] = 1
            try:
                item.run(self, stats)
            except BaseException:  # a worker never dies of a task  # pragma: no cover
                pass
            busy[index] = 0

    def stop(self, drain: bool = True) -> Any:
        """Stop the workers. ``drain=True`` finishes every queued task first; ``drain=False``
        cancels the queued ones (their futures are cancelled; run() reports CancelledError).
        Async agents: ``await`` it."""
        if self.is_async:
            return self._astop(drain)
        with self._lifecycle:
            if self._state != "running":
                return None
            self._state = "stopping"
            q = self._queue
            if not drain:
                while True:
                    try:
                        q.get_nowait().cancel()
                    except (queue.Empty, QueueClosed):
                        break
            q.close()
            for thread in self._threads:
                thread.join()
            self._state = "stopped"
        return None

    def __enter__(self) -> "Agent":
        if self.is_async:
            raise TypeError(f"{type(self).__name__} has an async handle(): use 'async with'")
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop(drain=True)

    # ---- lifecycle, async ----

    def _ensure_async_started(self) -> None:
        if self._state == "running":
            if self._loop is not asyncio.get_running_loop() or self._workers_lost:
                self._restart_async()
        elif self._state == "created":
            self._start_async()
        else:
            raise RuntimeError(f"agent {self.name!r} is {self._state}; start() it again first")

    def _start_async(self) -> None:
        if self._state == "running":
            if self._loop is not asyncio.get_running_loop() or self._workers_lost:
                self._restart_async()
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._workers_lost = False
        self._queue = _AQueue(self.maxsize, loop)
        self._busy = [0] * self.workers
        self._tasks = [loop.create_task(self._aworker_main(i)) for i in range(self.workers)]
        for task in self._tasks:
            # Idle workers are daemons: a loop closed without cancelling them (say, a benchmark's
            # own loop) must not log them as destroyed while pending.
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            task.add_done_callback(self._worker_done)
        self._state = "running"

    def _worker_done(self, task: "asyncio.Task[None]") -> None:
        """A worker ended: fine during stop(), otherwise its loop cancelled it (e.g. asyncio.run
        shutting down), and the next use must start new workers."""
        if self._state == "running" and task in self._tasks:
            self._workers_lost = True

    def _restart_async(self) -> None:
        """Start fresh workers and queue on the running loop: the old ones belong to another loop
        (usually one that has been closed, or is closing) or were cancelled. Metrics are kept."""
        old_loop = self._loop
        if old_loop is not None and old_loop is not asyncio.get_running_loop() and old_loop.is_running():
            raise RuntimeError(
                f"agent {self.name!r} is running on another event loop (in another thread); "
                "an async agent serves one loop at a time"
            )
        self._abandon_workers()
        self._state = "created"
        self._start_async()

    def _abandon_workers(self) -> None:
        """Let go of the workers and queue of a previous loop without warnings: cancel what still
        waits there, and if that loop is closed, close the worker coroutines right away."""
        tasks, self._tasks = self._tasks, []
        old_loop, self._loop = self._loop, None
        closed = old_loop is None or old_loop.is_closed()
        for task in tasks:
            if task.done():
                continue
            try:
                task.cancel()  # marks what it waits for cancelled even when the loop is closed
            except RuntimeError:  # the closed loop refused to schedule the wake-up
                pass
            if closed:
                try:
                    task.get_coro().close()
                except RuntimeError:
                    pass
        self._queue = None

    async def _aworker_main(self, index: int) -> None:
        stats = self._stats_of_worker(index)
        token_sink.set(stats)  # this worker task's own context
        q = self._queue
        heap = q.heap
        getters = q.getters
        loop = q.loop
        busy = self._busy
        while True:
            while not heap:
                waiter = loop.create_future()
                getters.append(waiter)
                try:
                    await waiter
                except BaseException:  # cancelled, or closed with a closed loop (GeneratorExit)
                    if not loop.is_closed():
                        if not waiter.done():
                            waiter.cancel()
                        try:
                            getters.remove(waiter)
                        except ValueError:  # woken for an entry it will not take: pass it on
                            if heap:
                                q.wake(getters)
                    raise
            entry = q.get_nowait()
            item = entry[2]
            if item is None:
                q.task_done()
                return
            busy[index] = 1
            try:
                await item.arun(self, stats)
            except asyncio.CancelledError:
                raise
            except BaseException:  # pragma: no cover - arun captures task failures
                pass
            finally:
                busy[index] = 0
                q.task_done()

    async def _astop(self, drain: bool) -> None:
        if self._state != "running":
            return
        if self._loop is not asyncio.get_running_loop() or self._workers_lost:
            # The workers went with another loop (or were cancelled): nothing left to drain here.
            if self._loop is not None and self._loop is not asyncio.get_running_loop() and self._loop.is_running():
                raise RuntimeError(f"agent {self.name!r} is running on another event loop; stop it there")
            self._abandon_workers()
            self._state = "stopped"
            return
        self._state = "stopping"
        q = self._queue
        if drain:
            await q.join()
        else:
            while True:
                try:
                    entry = q.get_nowait()
                except asyncio.QueueEmpty:
                    break
                entry[2].cancel()
                q.task_done()
        for _ in self._tasks:
            q.put_nowait((math.inf, next(self._seq), None), force=True)
        await asyncio.gather(*self._tasks)
        self._tasks = []
        self._state = "stopped"

    async def __aenter__(self) -> "Agent":
        if not self.is_async:
            raise TypeError(f"{type(self).__name__} has a sync handle(): use 'with'")
        self._start_async()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._astop(drain=True)

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<{type(self).__name__} {self.name!r} {kind} {self._state} workers={self.workers}>"
