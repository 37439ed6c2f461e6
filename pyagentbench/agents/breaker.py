"""Circuit breaker: stop calling a failing dependency for a while, then probe it.

States: ``"closed"`` (calls pass; ``failure_threshold`` consecutive failures open the circuit),
``"open"`` (calls are rejected with :class:`CircuitOpenError` until ``reset_timeout`` seconds have
passed), ``"half_open"`` (up to ``half_open_max_calls`` trial calls at once pass; the first success
closes the circuit, a failure opens it again).

Only exceptions in ``expected_exceptions`` count as failures; any other exception propagates and
counts as a success for the breaker (the dependency answered; the error is the caller's).
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import numbers
import threading
import time
from typing import Any, Awaitable, Callable, Deque, NamedTuple, Optional, TypeVar

__all__ = ["CircuitBreaker", "CircuitOpenError", "Transition", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

F = TypeVar("F", bound=Callable[..., Any])

#: How many transitions ``CircuitBreaker.transitions`` keeps (the oldest are dropped first).
TRANSITION_HISTORY = 1000


class CircuitOpenError(Exception):
    """A call was rejected because the circuit is open (or half-open with every trial slot taken).

    ``retry_after`` is the number of seconds until the breaker lets a trial call through (0 when
    half-open).
    """

    def __init__(self, message: str, breaker: "CircuitBreaker", retry_after: float) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after


class Transition(NamedTuple):
    """One state change: when (on the breaker's clock, seconds), from and to which state, and why."""

    time: float
    old: str
    new: str
    reason: str


class CircuitBreaker:
    """Closed / open / half-open circuit breaker; thread-safe and async-aware.

    Use :meth:`call` (``breaker.call(fn, *args, **kwargs)``; for a coroutine function it returns a
    coroutine), :meth:`acall`, or decorate a sync or async function with the breaker itself. For a
    call you make yourself, :meth:`allow` then :meth:`record_success` / :meth:`record_failure`.
    ``clock`` (default ``time.monotonic``) returns seconds; tests pass a controlled one.
    ``on_transition`` callbacks (see :meth:`add_listener`) receive each :class:`Transition`.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        expected_exceptions: Any = (Exception,),
        *,
        name: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold: int = _check_count("failure_threshold", failure_threshold)
        self.half_open_max_calls: int = _check_count("half_open_max_calls", half_open_max_calls)
        # int and float are numbers.Real at run time; naming them lets mypy see that a float passes
        # (typeshed's float does not subclass numbers.Real, so the rest would look unreachable).
        if isinstance(reset_timeout, bool) or not isinstance(reset_timeout, (int, float, numbers.Real)):
            raise TypeError(f"reset_timeout must be a number of seconds, not {type(reset_timeout).__name__}")
        if not (math.isfinite(reset_timeout) and reset_timeout >= 0):
            raise ValueError(f"reset_timeout must be a finite number >= 0, got {reset_timeout!r}")
        self.reset_timeout: float = float(reset_timeout)
        if isinstance(expected_exceptions, type):
            expected_exceptions = (expected_exceptions,)
        if not isinstance(expected_exceptions, tuple) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in expected_exceptions
        ):
            raise TypeError("expected_exceptions must be an exception class or a tuple of them")
        self.expected_exceptions: tuple[type[BaseException], ...] = expected_exceptions
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self.name: Optional[str] = name
        self._clock: Callable[[], float] = clock
        self._lock: threading.Lock = threading.Lock()
        self._state: str = CLOSED
        self._opened_at: float = 0.0
        self._consecutive_failures: int = 0
        self._trials: int = 0
        self._listeners: list[Callable[[Transition], Any]] = []
        self.transitions: Deque[Transition] = collections.deque(maxlen=TRANSITION_HISTORY)
        self.calls: int = 0
        self.successes: int = 0
        self.failures: int = 0
        self.rejections: int = 0
        self.times_opened: int = 0

    # -- state machine (called with the lock held) --

    def _move(self, new: str, reason: str, now: float) -> Transition:
        transition = Transition(now, self._state, new, reason)
        self._state = new
        self.transitions.append(transition)
        if new == OPEN:
            self._opened_at = now
            self.times_opened += 1
            self._trials = 0
        elif new == CLOSED:
            self._consecutive_failures = 0
            self._trials = 0
        return transition

    def _refresh(self, now: float) -> Optional[Transition]:
        if self._state == OPEN and now - self._opened_at >= self.reset_timeout:
            return self._move(HALF_OPEN, f"reset_timeout of {self.reset_timeout:g} s passed", now)
        return None

    def _notify(self, transitions: list[Optional[Transition]]) -> None:
        for transition in transitions:
            if transition is not None:
                for listener in list(self._listeners):
                    listener(transition)

    # -- public API --

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (open turns half-open once reset_timeout passed)."""
        with self._lock:
            transition = self._refresh(self._clock())
            state = self._state
        self._notify([transition])
        return state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (what failure_threshold is compared with)."""
        return self._consecutive_failures

    def allow(self) -> None:
        """Ask to make one call: return if it may go ahead, else raise :class:`CircuitOpenError`.

        Every allowed call must be followed by :meth:`record_success` or :meth:`record_failure`.
        """
        now = self._clock()
        with self._lock:
            transition = self._refresh(now)
            state = self._state
            if state == CLOSED or (state == HALF_OPEN and self._trials < self.half_open_max_calls):
                if state == HALF_OPEN:
                    self._trials += 1
                self.calls += 1
                rejected = None
            else:
                self.rejections += 1
                retry_after = max(0.0, self._opened_at + self.reset_timeout - now) if state == OPEN else 0.0
                label = f"circuit {self.name!r}" if self.name else "circuit"
                rejected = CircuitOpenError(
                    f"{label} is {state.replace('_', '-')}: call rejected (retry in {retry_after:.3g} s)",
                    self,
                    retry_after,
                )
        self._notify([transition])
        if rejected is not None:
            raise rejected

    def record_success(self) -> None:
        """Report that an allowed call succeeded."""
        now = self._clock()
        transition = None
        with self._lock:
            self.successes += 1
            self._consecutive_failures = 0
            if self._state == HALF_OPEN:
                transition = self._move(CLOSED, "trial call succeeded", now)
        self._notify([transition])

    def record_failure(self, exc: Optional[BaseException] = None) -> None:
        """Report that an allowed call failed (with ``exc``, if known)."""
        now = self._clock()
        transition = None
        with self._lock:
            self.failures += 1
            self._consecutive_failures += 1
            if self._state == HALF_OPEN:
                transition = self._move(OPEN, f"trial call failed: {exc!r}" if exc else "trial call failed", now)
            elif self._state == CLOSED and self._consecutive_failures >= self.failure_threshold:
                transition = self._move(OPEN, f"{self._consecutive_failures} consecutive failures", now)
        self._notify([transition])

    def _record(self, exc: Optional[BaseException]) -> None:
        if exc is not None and isinstance(exc, self.expected_exceptions):
            self.record_failure(exc)
        else:
            self.record_success()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` through the breaker (a coroutine function gives a coroutine)."""
        if inspect.iscoroutinefunction(fn):
            return self.acall(fn, *args, **kwargs)
        self.allow()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record(exc)
            raise
        self.record_success()
        return result

    async def acall(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        self.allow()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._record(exc)
            raise
        self.record_success()
        return result

    def __call__(self, fn: F) -> F:
        """Decorate a sync or async function so that every call goes through the breaker."""
        if not callable(fn):
            raise TypeError(f"CircuitBreaker decorates a callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_coroutine(*args: Any, **kwargs: Any) -> Any:
                return await self.acall(fn, *args, **kwargs)

            guarded_coroutine.breaker = self  # type: ignore[attr-defined]
            return guarded_coroutine  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self.call(fn, *args, **kwargs)

        guarded.breaker = self  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    def add_listener(self, callback: Callable[[Transition], Any]) -> None:
        """Call ``callback(transition)`` after every state change (outside the breaker's lock)."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._listeners.append(callback)

    def reset(self) -> None:
        """Close the circuit and clear the failure streak (counters are kept)."""
        with self._lock:
            transition = self._move(CLOSED, "reset()", self._clock()) if self._state != CLOSED else None
            self._consecutive_failures = 0
        self._notify([transition])

    def stats(self) -> dict[str, Any]:
        """State and counters: calls, successes, failures, rejections, times_opened, consecutive_failures."""
        state = self.state
        return {
            "state": state,
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "rejections": self.rejections,
            "times_opened": self.times_opened,
            "consecutive_failures": self._consecutive_failures,
        }

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<CircuitBreaker{label} {self.state} failures={self._consecutive_failures}/{self.failure_threshold}>"


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
