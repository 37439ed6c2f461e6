"""A bounded pool of agents: :class:`AgentPool`.

Agents are made by ``factory()`` on demand, up to ``max_size`` at once. A released agent goes back
to the idle list unless it is older than ``max_lifetime`` (then it is retired); idle agents unused
for ``idle_timeout`` seconds are closed, down to ``initial_size``, and idle agents older than
``max_lifetime`` are retired. There is no background thread: this reaping happens when the pool is
used, in :meth:`AgentPool.acquire`, :meth:`AgentPool.release`, :meth:`AgentPool.stats` (and so
``repr()``) and :meth:`AgentPool.reap`. Whenever agents are retired or reaped, new ones are made so
that the pool (idle + lent) stays at ``initial_size`` or more until it is closed. Closing an agent
calls its ``stop()`` if it is running, or its ``close()`` if it has one.
"""

from __future__ import annotations

import collections
import contextlib
import math
import numbers
import threading
import time
from typing import Any, Callable, Iterator, Optional

__all__ = ["AgentPool"]


def _check_seconds(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be seconds or None, not {type(value).__name__}")
    # numbers.Real only promises < and <= (typeshed has no >= for it); same test as "not (value >= 0)".
    if value < 0 or math.isnan(value):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class _Slot:
    __slots__ = ("agent", "created", "idle_since")

    def __init__(self, agent: Any, now: float) -> None:
        self.agent = agent
        self.created = now
        self.idle_since = now


class AgentPool:
    """Up to ``max_size`` agents made by ``factory``, lent out by :meth:`acquire` / :meth:`agent`.

    Past ``max_size``, :meth:`acquire` waits for a release up to ``acquire_timeout`` seconds (None:
    forever), then raises ``TimeoutError``. ``clock`` (default ``time.monotonic``) decides ages;
    tests pass a controlled one.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        initial_size: int = 0,
        max_size: int = 10,
        idle_timeout: Optional[float] = None,
        max_lifetime: Optional[float] = None,
        acquire_timeout: Optional[float] = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        for label, value in (("initial_size", initial_size), ("max_size", max_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if not 0 <= initial_size <= max_size:
            raise ValueError(f"initial_size must be between 0 and max_size ({max_size}), got {initial_size}")
        self.factory = factory
        self.initial_size = initial_size
        self.max_size = max_size
        self.idle_timeout = _check_seconds("idle_timeout", idle_timeout)
        self.max_lifetime = _check_seconds("max_lifetime", max_lifetime)
        self.acquire_timeout = _check_seconds("acquire_timeout", acquire_timeout)
        self._clock = clock
        self._cond = threading.Condition()
        self._idle: list[_Slot] = []
        self._lent: dict[int, _Slot] = {}
        self._retired: collections.deque = collections.deque(maxlen=max_size)  # to name a double release
        self._creating = 0
        self.created = 0
        self.destroyed = 0
        self.waits = 0
        self._busy_area = 0.0  # integral of lent agents over time
        self._since = clock()
        self._opened = self._since
        self._closed = False
        for _ in range(initial_size):
            self._idle.append(self._make())

    # ---- internals ----

    def _make(self) -> _Slot:
        agent = self.factory()
        self.created += 1
        return _Slot(agent, self._clock())

    def _account(self, now: float) -> None:
        self._busy_area += len(self._lent) * (now - self._since)
        self._since = now

    def _destroy(self, slot: _Slot) -> None:
        self.destroyed += 1
        self._retired.append(slot.agent)
        agent = slot.agent
        if getattr(agent, "state", None) == "running" and callable(getattr(agent, "stop", None)):
            agent.stop()
        elif callable(getattr(agent, "close", None)):
            agent.close()

    def _expired(self, slot: _Slot, now: float) -> bool:
        return self.max_lifetime is not None and now - slot.created >= self.max_lifetime

    def _reap_locked(self, now: float) -> list[_Slot]:
        """Take out idle agents that are too old, or idle too long beyond initial_size."""
        dead = [s for s in self._idle if self._expired(s, now)]
        keep = [s for s in self._idle if not self._expired(s, now)]
        if self.idle_timeout is not None:
            keep.sort(key=lambda s: s.idle_since)  # oldest idle first
            while len(keep) + len(self._lent) > self.initial_size and keep and now - keep[0].idle_since >= self.idle_timeout:
                dead.append(keep.pop(0))
        self._idle = keep
        return dead

    def _settle(self, dead: list[_Slot]) -> None:
        """Outside the lock: close the reaped agents, then make new ones up to initial_size."""
        for d in dead:
            self._destroy(d)
        with self._cond:
            need = self.initial_size - (len(self._idle) + len(self._lent) + self._creating)
            if need <= 0 or self._closed:
                return
            self._creating += need
        made: list[_Slot] = []
        try:
            for _ in range(need):
                made.append(self._make())
        finally:
            with self._cond:
                self._creating -= need
                if self._closed:
                    dead, made = made, []
                else:
                    dead = []
                    self._idle.extend(made)
                    self._cond.notify(len(made))
            for d in dead:
                self._destroy(d)

    # ---- public API ----

    def acquire(self, timeout: Optional[float] = None) -> Any:
        """Lend an agent: an idle one, or a new one while under max_size, else wait for a release.

        ``timeout`` overrides ``acquire_timeout`` for this call. Raises ``TimeoutError``.
        """
        timeout = self.acquire_timeout if timeout is None else _check_seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the pool is closed")
                now = self._clock()
                dead = self._reap_locked(now)
                if self._idle:
                    slot = self._idle.pop()  # most recently used first: keeps the others idle to expire
                    break
                if len(self._lent) + self._creating < self.max_size:
                    self._creating += 1
                    self._cond.release()
                    try:
                        for d in dead:
                            self._destroy(d)
                        dead = []
                        slot = self._make()
                    finally:
                        self._cond.acquire()
                        self._creating -= 1
                    break
                if not waited:
                    waited = True
                    self.waits += 1
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"no agent free in the pool within {timeout:g} s: all {self.max_size} (max_size) are in use"
                    )
                self._cond.wait(remaining if remaining is None else min(remaining, 0.1))
            self._account(self._clock())
            self._lent[id(slot.agent)] = slot
        self._settle(dead)
        return slot.agent

    def release(self, agent: Any) -> None:
        """Give a lent agent back (it is retired instead if older than max_lifetime), then reap."""
        with self._cond:
            slot = self._lent.pop(id(agent), None)
            if slot is None:
                if any(s.agent is agent for s in self._idle) or any(a is agent for a in self._retired):
                    raise ValueError("release(): this agent was already released")
                raise ValueError("release(): this agent was not acquired from this pool")
            now = self._clock()
            self._busy_area += (len(self._lent) + 1) * (now - self._since)
            self._since = now
            retire = self._closed or self._expired(slot, now)
            if not retire:
                slot.idle_since = now
                self._idle.append(slot)
            dead = [] if self._closed else self._reap_locked(now)
            self._cond.notify()
        if retire:
            dead.insert(0, slot)
        self._settle(dead)

    @contextlib.contextmanager
    def agent(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """``with pool.agent() as a:`` lends an agent for the block."""
        lent = self.acquire(timeout)
        try:
            yield lent
        finally:
            self.release(lent)

    def execute(self, payload: Any) -> Any:
        """Run one payload on a lent agent: ``agent.process(payload)``, or ``agent(payload)``."""
        with self.agent() as lent:
            process = getattr(lent, "process", None)
            return process(payload) if process is not None else lent(payload)

    def reap(self) -> int:
        """Close idle agents past idle_timeout or max_lifetime now (and make new ones up to
        initial_size); return how many were closed."""
        with self._cond:
            dead = [] if self._closed else self._reap_locked(self._clock())
        self._settle(dead)
        return len(dead)

    def close(self) -> None:
        """Close every idle agent; lent agents are closed when released."""
        with self._cond:
            self._closed = True
            dead, self._idle = self._idle, []
            self._cond.notify_all()
        for d in dead:
            self._destroy(d)

    def stats(self) -> dict[str, Any]:
        """active (lent), idle, created, destroyed, waits (acquires that waited) and utilization:
        the time-averaged percentage of max_size lent out since the pool was made. Reaps first."""
        with self._cond:
            dead = [] if self._closed else self._reap_locked(self._clock())
        self._settle(dead)
        with self._cond:
            now = self._clock()
            self._account(now)
            elapsed = now - self._opened
            utilization = 100.0 * self._busy_area / (self.max_size * elapsed) if elapsed > 0 else 0.0
            return {
                "active": len(self._lent),
                "idle": len(self._idle),
                "created": self.created,
                "destroyed": self.destroyed,
                "waits": self.waits,
                "utilization": utilization,
            }

    def __enter__(self) -> "AgentPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<AgentPool active={s['active']} idle={s['idle']} max_size={self.max_size}>"
