"""Run a batch of inputs through an agent or a function at bounded concurrency: :class:`BatchExecutor`.

Sync targets run on ``max_concurrency`` threads; async targets as ``max_concurrency`` tasks on an
event loop (the running one for :meth:`BatchExecutor.aexecute` and ``async for``; a private one on
a helper thread for :meth:`BatchExecutor.execute` and plain ``for``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import numbers
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Optional

__all__ = ["BatchExecutor", "BatchResult", "BatchStream"]

_END = object()


@dataclasses.dataclass
class BatchResult:
    """What a batch produced: ``results`` in input order (None where a task failed), ``errors`` by
    index (the task's exception; ``concurrent.futures.CancelledError`` for tasks fail_fast never
    started; ``TimeoutError`` for tasks unfinished at the batch timeout), and the counts."""

    results: list
    errors: dict
    total: int
    success: int
    failed: int
    cancelled: int
    duration_s: float

    @property
    def throughput(self) -> float:
        """Successful tasks per second: failures do not make a batch look faster."""
        return self.success / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def attempted_throughput(self) -> float:
        """Tasks that ran to an outcome (success + failed - cancelled, timed-out ones included) per second."""
        finished = self.success + self.failed - self.cancelled
        return finished / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every task succeeded."""
        return not self.errors

    def stats(self) -> dict[str, Any]:
        """total, success, failed, cancelled, duration_s, throughput, attempted_throughput."""
        return {
            "total": self.total,
            "success": self.success,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "duration_s": self.duration_s,
            "throughput": self.throughput,
            "attempted_throughput": self.attempted_throughput,
        }

    def raise_first(self) -> None:
        """Raise the error of the lowest failed index, if any."""
        if self.errors:
            raise self.errors[min(self.errors)]


def _target(obj: Any) -> tuple[Callable[[Any], Any], bool]:
    from .agent import _as_target

    return _as_target(obj, "BatchExecutor target")


class BatchStream:
    """The events of one batch run, as ``(index, result or exception)``: iterate it with ``for`` or
    ``async for``. Every index appears exactly once."""

    def __init__(self, executor: "BatchExecutor", inputs: list) -> None:
        self._executor = executor
        self._inputs = inputs

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        for index, ok, value in self._executor._sync_events(self._inputs):
            yield index, value

    async def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        async for index, ok, value in self._executor._async_events(self._inputs):
            yield index, value


class BatchExecutor:
    """Run inputs through ``agent_or_callable`` with at most ``max_concurrency`` at once.

    ``error_policy``: ``"continue"`` runs every input; ``"fail_fast"`` starts no new input after the
    first failure (those not started are reported cancelled). ``timeout``: seconds for the whole
    batch; inputs unfinished by then are reported as ``TimeoutError`` (async calls are cancelled; a
    sync call already running cannot be interrupted and finishes in the background, unreported).
    """

    def __init__(
        self,
        agent_or_callable: Any,
        max_concurrency: int = 10,
        error_policy: str = "continue",
        timeout: Optional[float] = None,
    ) -> None:
        self._call, self.is_async = _target(agent_or_callable)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be an int, not {type(max_concurrency).__name__}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if error_policy not in ("continue", "fail_fast"):
            raise ValueError(f"error_policy must be 'continue' or 'fail_fast', got {error_policy!r}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
                raise TypeError(f"timeout must be seconds or None, not {type(timeout).__name__}")
            if not (timeout > 0 and math.isfinite(timeout)):
                raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
        self.target = agent_or_callable
        self.max_concurrency = max_concurrency
        self.error_policy = error_policy
        self.timeout = None if timeout is None else float(timeout)

    # ---- public API ----

    def execute(self, inputs: Iterable[Any]) -> BatchResult:
        """Run every input; return a :class:`BatchResult` (never raises a task's error)."""
        items = list(inputs)
        start = time.perf_counter()
        events = list(self._sync_events(items))
        return self._result(items, events, time.perf_counter() - start)

    async def aexecute(self, inputs: Iterable[Any]) -> BatchResult:
        """Async :meth:`execute`: async targets run on the current event loop."""
        items = list(inputs)
        start = time.perf_counter()
        events = [event async for event in self._async_events(items)]
        return self._result(items, events, time.perf_counter() - start)

    def stream(self, inputs: Iterable[Any]) -> BatchStream:
        """Yield ``(index, result or exception)`` as tasks finish (``for`` or ``async for``)."""
        return BatchStream(self, list(inputs))

    # ---- engines ----

    def _result(self, items: list, events: list, duration: float) -> BatchResult:
        results: list = [None] * len(items)
        errors: dict = {}
        cancelled = 0
        for index, ok, value in events:
            if ok:
                results[index] = value
            else:
                errors[index] = value
                cancelled += isinstance(value, (concurrent.futures.CancelledError, asyncio.CancelledError))
        return BatchResult(
            results=results,
            errors=errors,
            total=len(items),
            success=len(items) - len(errors),
            failed=len(errors),
            cancelled=cancelled,
            duration_s=duration,
        )

    def _leftovers(self, n: int, seen: set, timed_out: bool) -> Iterator[tuple[int, bool, Any]]:
        for index in range(n):
            if index not in seen:
                if timed_out:
                    yield index, False, TimeoutError(f"batch timeout of {self.timeout:g} s passed before task {index} finished")
                else:
                    yield index, False, concurrent.futures.CancelledError(f"task {index} not started: fail_fast")

    def _sync_events(self, items: list) -> Iterator[tuple[int, bool, Any]]:
        if self.is_async:
            yield from self._async_on_helper_thread(items)
            return
        n = len(items)
        call = self._call
        fail_fast = self.error_policy == "fail_fast"
        lock = threading.Lock()
        state = {"next": 0, "stop": False}
        events: queue.SimpleQueue = queue.SimpleQueue()

        def batch_worker() -> None:
            try:
                while True:
                    with lock:
                        if state["stop"] or state["next"] >= n:
                            return
                        index = state["next"]
                        state["next"] = index + 1
                    try:
                        events.put((index, True, call(items[index])))
                    except BaseException as exc:
                        if fail_fast:
                            state["stop"] = True
                        events.put((index, False, exc))
            finally:
                events.put(_END)

        threads = [threading.Thread(target=batch_worker, daemon=True) for _ in range(min(self.max_concurrency, n))]
        for thread in threads:
            thread.start()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        alive = len(threads)
        seen: set = set()
        timed_out = False
        try:
            while alive:
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    timed_out = True
                    break
                try:
                    event = events.get(timeout=wait)
                except queue.Empty:
                    continue
                if event is _END:
                    alive -= 1
                    continue
                seen.add(event[0])
                yield event
        finally:
            state["stop"] = True
        yield from self._leftovers(n, seen, timed_out)

    async def _async_events(self, items: list) -> AsyncIterator[tuple[int, bool, Any]]:
        if not self.is_async:
            async for event in self._sync_on_helper_thread(items):
                yield event
            return
        n = len(items)
        call = self._call
        fail_fast = self.error_policy == "fail_fast"
        state = {"next": 0, "stop": False}
        events: asyncio.Queue = asyncio.Queue()

        async def batch_worker() -> None:
            try:
                while not state["stop"] and state["next"] < n:
                    index = state["next"]
                    state["next"] = index + 1
                    try:
                        events.put_nowait((index, True, await call(items[index])))
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:
                        if fail_fast:
                            state["stop"] = True
                        events.put_nowait((index, False, exc))
            finally:
                events.put_nowait(_END)

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(batch_worker()) for _ in range(min(self.max_concurrency, n))]
        deadline = None if self.timeout is None else loop.time() + self.timeout
        alive = len(tasks)
        seen: set = set()
        timed_out = False
        try:
            while alive:
                try:
                    if deadline is None:
                        event = await events.get()
                    else:
                        event = await asyncio.wait_for(events.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    timed_out = True
                    break
                if event is _END:
                    alive -= 1
                    continue
                seen.add(event[0])
                yield event
        finally:
            state["stop"] = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for event in self._leftovers(n, seen, timed_out):
            yield event

    def _async_on_helper_thread(self, items: list) -> Iterator[tuple[int, bool, Any]]:
        """An async target, iterated from sync code: its own event loop on a helper thread."""
        events: queue.SimpleQueue = queue.SimpleQueue()

        async def pump() -> None:
            async for event in self._async_events(items):
                events.put(event)

        def helper_main() -> None:
            try:
                asyncio.run(pump())
            except BaseException as exc:  # pragma: no cover - surfaced to the consumer
                events.put(exc)
            finally:
                events.put(_END)

        helper = threading.Thread(target=helper_main, daemon=True)
        helper.start()
        while True:
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is _END:
                break
            if isinstance(event, BaseException):
                raise event
            yield event
        helper.join()

    async def _sync_on_helper_thread(self, items: list) -> AsyncIterator[tuple[int, bool, Any]]:
        """A sync target, iterated from async code: the thread engine, fed back to this loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def helper_main() -> None:
            try:
                for event in self._sync_events(items):
                    loop.call_soon_threadsafe(events.put_nowait, event)
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _END)

        helper = threading.Thread(target=helper_main, daemon=True)
        helper.start()
        while True:
            event = await events.get()
            if event is _END:
                break
            yield event

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<BatchExecutor {kind} max_concurrency={self.max_concurrency} error_policy={self.error_policy!r}>"
