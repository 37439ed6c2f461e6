"""Native priority task queue: :class:`TaskQueue` and :class:`QueueClosed`.

Lower priority numbers come out first; equal priorities come out in the order they were put.
Blocking ``put``/``get``/``join`` release the GIL and notice Ctrl-C within about 20 ms. Full and
empty raise the standard library's ``queue.Full`` / ``queue.Empty``, so code written for
``queue.Queue`` keeps working. After :meth:`TaskQueue.close`, ``put`` raises :class:`QueueClosed`,
``get`` drains what is left and then raises :class:`QueueClosed`, and every waiter wakes.

For asyncio, :meth:`TaskQueue.aget` and :meth:`TaskQueue.aput` wait in the event loop's default
executor, in slices, without taking an item off the thread: a cancelled ``aget`` loses nothing.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

from .. import _native
from .._native import QueueClosed

__all__ = ["TaskQueue", "QueueClosed", "ASYNC_WAIT_SLICE"]

#: Longest time, in seconds, one executor wait of aget()/aput() lasts before it checks again.
ASYNC_WAIT_SLICE = 0.1


def _check_timeout(name: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name}: timeout must be a number or None, not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"{name}: timeout must be a non-negative number, got {timeout!r}")
    return float(timeout)


class TaskQueue(_native.TaskQueue):
    """Thread-safe priority queue with blocking waits outside the GIL, close() and wait stats.

    ``TaskQueue(maxsize=0)``: ``maxsize`` bounds the number of waiting items (0: unbounded).
    Methods: ``put(item, priority=0, block=True, timeout=None)``, ``put_nowait``,
    ``get(block=True, timeout=None)``, ``get_nowait``, ``qsize``, ``empty``, ``full``,
    ``task_done``, ``join(timeout=None) -> bool``, ``close``, ``stats``, and the coroutines
    :meth:`aget` and :meth:`aput`. ``stats()`` returns ``puts``, ``gets``, ``depth``,
    ``max_depth``, ``unfinished`` and ``wait_ns``, a :class:`~pyagentbench.Histogram` of each
    item's nanoseconds from put to get, whose counts the queue holds only as far as its longest
    wait needs (an idle queue holds none).
    """

    __slots__ = ()

    async def aget(self, timeout: float | None = None) -> Any:
        """Remove and return the first item without blocking the event loop.

        Raises ``queue.Empty`` after ``timeout`` seconds (None: wait forever) and
        :class:`QueueClosed` once the queue is closed and drained.
        """
        timeout = _check_timeout("aget()", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                return self.get_nowait()
            except queue.Empty:
                pass
            wait = ASYNC_WAIT_SLICE if deadline is None else min(ASYNC_WAIT_SLICE, deadline - loop.time())
            if wait <= 0:
                raise queue.Empty
            await loop.run_in_executor(None, self.wait_not_empty, wait)

    async def aput(self, item: Any, priority: float = 0, timeout: float | None = None) -> None:
        """Add item without blocking the event loop, waiting for room in a bounded queue.

        Raises ``queue.Full`` after ``timeout`` seconds (None: wait forever) and
        :class:`QueueClosed` if the queue is closed.
        """
        timeout = _check_timeout("aput()", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                return self.put_nowait(item, priority)
            except queue.Full:
                pass
            wait = ASYNC_WAIT_SLICE if deadline is None else min(ASYNC_WAIT_SLICE, deadline - loop.time())
            if wait <= 0:
                raise queue.Full
            await loop.run_in_executor(None, self.wait_not_full, wait)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        bound = f" maxsize={self.maxsize}" if self.maxsize else ""
        return f"<TaskQueue{state} depth={self.qsize()}{bound}>"
