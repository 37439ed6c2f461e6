"""Stand-ins for slow, costly, non-deterministic dependencies: :class:`MockLLM` and :class:`MockTool`.

Both draw their latencies and failures from a private ``random.Random(seed)`` in call order, so the
same seed and the same sequence of calls give the same latencies, responses and failures every run.
The last ``keep_calls`` calls are recorded (``calls``, default the last
:data:`DEFAULT_KEEP_CALLS`) for assertions; counters (``call_count``, ``failure_count``, and a
MockLLM's ``tokens_in`` / ``tokens_out``) cover every call. A bounded log keeps the mock's own
memory flat however many calls a benchmark makes, so the mock never shows up in the code's peak.

Latency is spent in ``time.sleep`` (sync calls) or ``asyncio.sleep`` (async calls), so a waiting mock
never holds the GIL or blocks the event loop. ``latency_scale`` multiplies every wait: ``0`` runs the
same scenario instantly (the recorded latencies are still the model's, unscaled).

Latency models (seconds): a plain number or :class:`Fixed`; :class:`Normal`; :class:`LogNormal`;
a list of numbers or :class:`Replay` (played in order, cycling).

Tokens are estimated as one token per 4 characters, rounded up (the usual rule of thumb for English
with BPE tokenizers); the empty string is 0 tokens. Every call reports its usage with
:func:`pyagentbench.record_usage`: inside an :class:`~pyagentbench.Agent` task its tokens are
added to that agent's metrics, and inside a counted call of ``agent_benchmark`` to the test's.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import dataclasses
import math
import numbers
import random
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Sequence, Union

from ._tokens import estimate_tokens
from .usage import Price, record_tool_call, record_usage

__all__ = [
    "DEFAULT_KEEP_CALLS",
    "MockLLM",
    "MockTool",
    "LLMCall",
    "ToolCall",
    "LatencyModel",
    "Fixed",
    "Normal",
    "LogNormal",
    "Replay",
    "MockLLMError",
    "MockToolError",
    "RateLimitError",
    "estimate_tokens",
]


#: How many of the latest calls a mock keeps in ``calls`` when ``keep_calls`` is not given. A
#: record costs about 500 bytes (more with long prompts), so 100 cost ~50 KiB per mock, whatever the
#: number of calls; enough for a test's assertions on its calls, and far below any memory gate.
DEFAULT_KEEP_CALLS = 100


def _check_keep_calls(keep_calls: Any) -> Optional[int]:
    if keep_calls is None:
        return None
    if isinstance(keep_calls, bool) or not isinstance(keep_calls, numbers.Integral):
        raise TypeError(
            f"keep_calls must be an int (how many of the latest calls to keep) or None (keep every "
            f"call), not {type(keep_calls).__name__}"
        )
    if keep_calls < 0:
        raise ValueError(f"keep_calls must be >= 0 (0 keeps none, None keeps all), got {keep_calls}")
    return int(keep_calls)


class MockLLMError(Exception):
    """Default exception a :class:`MockLLM` raises for a failed call."""


class MockToolError(Exception):
    """Default exception a :class:`MockTool` raises for a failed call."""


class RateLimitError(Exception):
    """A :class:`MockLLM` call exceeded ``rate_limit`` requests per second.

    ``retry_after`` is the number of seconds until a request would be accepted again.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ---- latency models ----


class LatencyModel:
    """A seeded distribution of latencies in seconds.

    Subclasses implement :meth:`sample`, which must draw only from the ``rng`` it is given (so the
    owning mock's seed decides every value) and may use ``index``, the 0-based call number.
    """

    def sample(self, rng: random.Random, index: int) -> float:
        """Return the latency, in seconds, of call number ``index``."""
        raise NotImplementedError


def _check_seconds(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


class Fixed(LatencyModel):
    """Every call takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = _check_seconds("Fixed(seconds)", seconds)

    def sample(self, rng: random.Random, index: int) -> float:
        """Return the fixed latency."""
        return self.seconds

    def __repr__(self) -> str:
        return f"Fixed({self.seconds!r})"


class Normal(LatencyModel):
    """Normally distributed latency, truncated below at ``minimum`` (default 0)."""

    def __init__(self, mean: float, stddev: float, minimum: float = 0.0) -> None:
        self.mean = _check_seconds("Normal(mean)", mean)
        self.stddev = _check_seconds("Normal(stddev)", stddev)
        self.minimum = _check_seconds("Normal(minimum)", minimum)

    def sample(self, rng: random.Random, index: int) -> float:
        """Draw one latency."""
        return max(self.minimum, rng.gauss(self.mean, self.stddev))

    def __repr__(self) -> str:
        return f"Normal(mean={self.mean!r}, stddev={self.stddev!r}, minimum={self.minimum!r})"


class LogNormal(LatencyModel):
    """Log-normal latency with the given ``median`` (seconds) and shape ``sigma``.

    The usual shape of service latencies: most calls near the median, a long right tail.
    """

    def __init__(self, median: float, sigma: float) -> None:
        self.median = _check_seconds("LogNormal(median)", median, positive=True)
        self.sigma = _check_seconds("LogNormal(sigma)", sigma)
        self._mu = math.log(self.median)

    def sample(self, rng: random.Random, index: int) -> float:
        """Draw one latency."""
        return rng.lognormvariate(self._mu, self.sigma)

    def __repr__(self) -> str:
        return f"LogNormal(median={self.median!r}, sigma={self.sigma!r})"


class Replay(LatencyModel):
    """Replays recorded latencies: call ``i`` takes ``values[i % len(values)]``."""

    def __init__(self, values: Sequence[float]) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, collections.abc.Iterable):
            raise TypeError(f"Replay(values) must be a sequence of seconds, not {type(values).__name__}")
        self.values = tuple(_check_seconds("Replay(values) item", v) for v in values)
        if not self.values:
            raise ValueError("Replay(values) must not be empty")

    def sample(self, rng: random.Random, index: int) -> float:
        """Return the recorded latency for this call."""
        return self.values[index % len(self.values)]

    def __repr__(self) -> str:
        return f"Replay({list(self.values)!r})"


LatencySpec = Union[float, int, Sequence[float], LatencyModel, None]


def _latency_model(latency: LatencySpec) -> LatencyModel:
    if latency is None:
        return Fixed(0.0)
    if isinstance(latency, LatencyModel):
        return latency
    if isinstance(latency, numbers.Real) and not isinstance(latency, bool):
        return Fixed(_check_seconds("latency", latency))
    if isinstance(latency, (list, tuple)):
        return Replay(latency)
    raise TypeError(
        "latency must be seconds, a list of seconds or a LatencyModel (Fixed, Normal, LogNormal, "
        f"Replay), not {type(latency).__name__}"
    )


def _check_price(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (price per 1000 tokens), not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


def _check_failure(failure: Any) -> Any:
    if isinstance(failure, BaseException) or callable(failure):
        return failure
    raise TypeError(f"failure must be an exception class, instance or factory, not {type(failure).__name__}")


def _make_failure(failure: Any, message: str) -> BaseException:
    if isinstance(failure, BaseException):
        return failure
    exc = failure(message)
    if not isinstance(exc, BaseException):
        raise TypeError(f"the failure factory returned {type(exc).__name__}, not an exception")
    return exc


# ---- concurrency and rate limits ----


class _SlotLimiter:
    """A FIFO counting semaphore shared by threads and event loops (like a connection pool)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque = collections.deque()

    def acquire(self) -> float:
        """Take a slot, waiting in line if none is free; return the seconds waited."""
        with self._lock:
            if self._used < self.limit and not self._waiters:
                self._used += 1
                return 0.0
            event = threading.Event()
            self._waiters.append(event)
        start = time.perf_counter()
        event.wait()
        return time.perf_counter() - start

    async def aacquire(self) -> float:
        """Take a slot without blocking the event loop; return the seconds waited."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._used < self.limit and not self._waiters:
                self._used += 1
                return 0.0
            future = loop.create_future()
            entry = (loop, future)
            self._waiters.append(entry)
        start = time.perf_counter()
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove(entry)
                    owned = False
                except ValueError:
                    owned = future.done() and not future.cancelled()
            if owned:
                self.release()
            raise
        return time.perf_counter() - start

    def release(self) -> None:
        """Give a slot back: to the first waiter in line, else to the pool."""
        with self._lock:
            if not self._waiters:
                self._used -= 1
                return
            waiter = self._waiters.popleft()
        if isinstance(waiter, threading.Event):
            waiter.set()
        else:
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(self._hand_over, future)
            except RuntimeError:  # that loop is closed: pass the slot on
                self.release()

    def _hand_over(self, future: asyncio.Future) -> None:
        if future.done():  # cancelled while the slot was on its way
            self.release()
        else:
            future.set_result(None)

    @property
    def in_use(self) -> int:
        return self._used


class _TokenBucket:
    """``rate`` requests per second with bursts of up to ``max(1, rate)`` requests."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        now = self._clock()
        with self._lock:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                retry_after = (1.0 - self._tokens) / self.rate
                raise RateLimitError(
                    f"rate limit of {self.rate:g} requests/s exceeded; retry after {retry_after:.3f} s",
                    retry_after,
                )
            self._tokens -= 1.0


# ---- records ----


@dataclasses.dataclass(frozen=True)
class LLMCall:
    """One recorded :class:`MockLLM` call.

    ``latency`` is the model's latency in seconds (time to first token plus generation time),
    unscaled; ``wait`` the real seconds spent waiting for a ``max_concurrent`` slot. ``response``
    is None and ``error`` set when the call failed (then no tokens were charged).
    """

    index: int
    prompt: str
    response: Optional[str]
    tokens_in: int
    tokens_out: int
    latency: float
    wait: float
    error: Optional[BaseException]
    streamed: bool


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One recorded :class:`MockTool` call (``latency`` in seconds, unscaled)."""

    index: int
    args: tuple
    kwargs: dict
    result: Any
    latency: float
    error: Optional[BaseException]


class _SeededMock:
    """Call numbering, seeded draws, scaled sleeping and the call record shared by the mocks."""

    def __init__(self, latency: LatencySpec, failure_rate: float, seed: Any, failure: Any,
                 latency_scale: float, keep_calls: Optional[int] = DEFAULT_KEEP_CALLS) -> None:
        self.latency_model = _latency_model(latency)
        self.failure_rate = _check_rate("failure_rate", failure_rate)
        self.failure = _check_failure(failure)
        self.latency_scale = _check_seconds("latency_scale", latency_scale)
        self.keep_calls = _check_keep_calls(keep_calls)
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._index = 0
        self._log: collections.deque = collections.deque(maxlen=self.keep_calls)
        self._recorded = 0
        self._failed = 0

    def _draw(self) -> tuple[int, float, bool]:
        """Number this call and draw its latency then its failure, always in that order."""
        with self._lock:
            index = self._index
            self._index += 1
            latency = self.latency_model.sample(self._rng, index)
            fails = self._rng.random() < self.failure_rate
        return index, latency, fails

    def _record(self, call: Any) -> None:
        with self._lock:
            self._log.append(call)
            self._recorded += 1
            if call.error is not None:
                self._failed += 1

    def reset(self) -> None:
        """Forget recorded calls and counts, and restart the seeded sequence from the beginning."""
        with self._lock:
            self._rng = random.Random(self.seed)
            self._index = 0
            self._log.clear()
            self._recorded = 0
            self._failed = 0

    @property
    def calls(self) -> list:
        """The last ``keep_calls`` recorded calls, oldest first (a new list; ``calls[i].index`` is the
        call's number among all calls)."""
        with self._lock:
            return list(self._log)

    @property
    def call_count(self) -> int:
        """Number of recorded calls, all of them (also those no longer in :attr:`calls`)."""
        return self._recorded

    @property
    def failure_count(self) -> int:
        """Number of recorded calls that raised, all of them."""
        return self._failed

    @property
    def calls_dropped(self) -> int:
        """Recorded calls no longer kept in :attr:`calls` (``call_count - len(calls)``)."""
        with self._lock:
            return self._recorded - len(self._log)


# ---- MockLLM ----

ResponsesSpec = Union[Sequence[str], Callable[[str], str], None]


class MockLLM(_SeededMock):
    """A deterministic language model stand-in.

    ``responses``: a list of strings returned in turn (cycling), or a callable ``prompt -> str``;
    by default ``"mock response <n>"``. ``latency``: seconds before the first token (see the module
    docs for models). ``tokens_per_second``: if set, generating the response adds
    ``tokens_out / tokens_per_second`` seconds, spread over the chunks of :meth:`stream`.
    ``failure_rate``: probability that a call raises ``failure`` (an exception class, instance or
    factory taking a message; default :class:`MockLLMError`) after its latency. ``max_concurrent``:
    at most this many calls run at once; others wait in line and the wait is recorded.
    ``rate_limit``: requests per second (bursts up to that many); excess calls raise
    :class:`RateLimitError` at once, measured on ``clock`` (``time.monotonic``; a test can pass its
    own). ``latency_scale`` multiplies every wait (0: none). ``keep_calls``: how many of the
    latest calls :attr:`calls` keeps (default :data:`DEFAULT_KEEP_CALLS`; ``None`` keeps every
    call, which grows by about 500 bytes a call); the counters cover every call either way.

    Every call that reaches the model (not one the rate limit refused) is reported with
    :func:`pyagentbench.record_usage`: one LLM call, its tokens (none for a failed call), the
    ``model`` name (default ``"mock"``) and, given ``price_in_per_1k`` and ``price_out_per_1k``
    (both, per 1000 tokens), its cost; without prices the ``--agentbench-prices`` table prices
    ``model``. A :class:`MockTool` reports one tool call per call.
    """

    def __init__(
        self,
        responses: ResponsesSpec = None,
        latency: LatencySpec = 0.0,
        tokens_per_second: Optional[float] = None,
        failure_rate: float = 0.0,
        seed: Any = 0,
        *,
        failure: Any = MockLLMError,
        max_concurrent: Optional[int] = None,
        rate_limit: Optional[float] = None,
        latency_scale: float = 1.0,
        stream_chunk_tokens: int = 1,
        clock: Callable[[], float] = time.monotonic,
        keep_calls: Optional[int] = DEFAULT_KEEP_CALLS,
        model: str = "mock",
        price_in_per_1k: Optional[float] = None,
        price_out_per_1k: Optional[float] = None,
    ) -> None:
        super().__init__(latency, failure_rate, seed, failure, latency_scale, keep_calls)
        self._tokens_in = 0
        self._tokens_out = 0
        self._cost = 0.0
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        self.model = model
        if (price_in_per_1k is None) != (price_out_per_1k is None):
            raise ValueError("give both price_in_per_1k and price_out_per_1k, or neither (then the "
                             "--agentbench-prices table prices this model)")
        self.price: Optional[Price] = None
        if price_in_per_1k is not None:
            self.price = Price(_check_price("price_in_per_1k", price_in_per_1k),
                               _check_price("price_out_per_1k", price_out_per_1k))
        if responses is None or callable(responses):
            self._responses: Any = responses
        elif isinstance(responses, (str, bytes)) or not isinstance(responses, collections.abc.Iterable):
            raise TypeError(f"responses must be a list of strings or a callable, not {type(responses).__name__}")
        else:
            self._responses = tuple(responses)
            if not self._responses:
                raise ValueError("responses must not be empty")
            for item in self._responses:
                if not isinstance(item, str):
                    raise TypeError(f"responses must hold strings, found {type(item).__name__}")
        if tokens_per_second is not None:
            tokens_per_second = _check_seconds("tokens_per_second", tokens_per_second, positive=True)
        self.tokens_per_second = tokens_per_second
        if max_concurrent is not None:
            if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
                raise TypeError(f"max_concurrent must be an int or None, not {type(max_concurrent).__name__}")
            if max_concurrent < 1:
                raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._slots = _SlotLimiter(max_concurrent) if max_concurrent is not None else None
        if rate_limit is not None:
            rate_limit = _check_seconds("rate_limit", rate_limit, positive=True)
        self.rate_limit = rate_limit
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._bucket = _TokenBucket(rate_limit, clock) if rate_limit is not None else None
        if isinstance(stream_chunk_tokens, bool) or not isinstance(stream_chunk_tokens, int) or stream_chunk_tokens < 1:
            raise ValueError(f"stream_chunk_tokens must be an int >= 1, got {stream_chunk_tokens!r}")
        self.stream_chunk_tokens = stream_chunk_tokens

    # -- planning a call --

    def _response_for(self, prompt: str, index: int) -> str:
        responses = self._responses
        if responses is None:
            return f"mock response {index}"
        if isinstance(responses, tuple):
            return responses[index % len(responses)]
        text = responses(prompt)
        if not isinstance(text, str):
            raise TypeError(f"the responses callable returned {type(text).__name__}, not str")
        return text

    def _plan(self, prompt: Any) -> tuple[int, str, float, float, bool]:
        """Check the prompt and the rate limit, then draw (index, response, ttft, total, fails)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if self._bucket is not None:
            try:
                self._bucket.take()
            except RateLimitError as exc:
                with self._lock:
                    index = self._index
                    self._index += 1
                tokens_in = estimate_tokens(prompt)
                self._record(LLMCall(index, prompt, None, tokens_in, 0, 0.0, 0.0, exc, False))
                raise
        index, first_token, fails = self._draw()
        response = self._response_for(prompt, index)
        total = first_token
        if self.tokens_per_second is not None:
            total += estimate_tokens(response) / self.tokens_per_second
        return index, response, first_token, total, fails

    def _finish(self, index: int, prompt: str, response: str, total: float, wait: float, fails: bool, streamed: bool) -> None:
        tokens_in = estimate_tokens(prompt)
        if fails:
            exc = _make_failure(self.failure, f"mock LLM call {index} failed")
            self._record(LLMCall(index, prompt, None, tokens_in, 0, total, wait, exc, streamed))
            record_usage(0, 0, self.model, 1, 0.0 if self.price is not None else None)
            raise exc
        tokens_out = estimate_tokens(response)
        self._record(LLMCall(index, prompt, response, tokens_in, tokens_out, total, wait, None, streamed))
        price = self.price
        record_usage(tokens_in, tokens_out, self.model, 1,
                     price.cost(tokens_in, tokens_out) if price is not None else None)

    def _record(self, call: Any) -> None:
        # _SeededMock._record plus the token totals, under one acquisition of the lock.
        with self._lock:
            self._log.append(call)
            self._recorded += 1
            if call.error is not None:
                self._failed += 1
            else:
                self._tokens_in += call.tokens_in
                self._tokens_out += call.tokens_out
                if self.price is not None:
                    self._cost += self.price.cost(call.tokens_in, call.tokens_out)

    def _chunks(self, response: str) -> list[str]:
        size = 4 * self.stream_chunk_tokens
        return [response[i : i + size] for i in range(0, len(response), size)] or [""]

    def _chunk_delay(self, chunk: str) -> float:
        if self.tokens_per_second is None:
            return 0.0
        return estimate_tokens(chunk) / self.tokens_per_second * self.latency_scale

    # -- sync --

    def complete(self, prompt: str) -> str:
        """Return the response to ``prompt`` after the drawn latency (sleeping, GIL released)."""
        index, response, _, total, fails = self._plan(prompt)
        wait = self._slots.acquire() if self._slots is not None else 0.0
        try:
            if total and self.latency_scale:
                time.sleep(total * self.latency_scale)
        finally:
            if self._slots is not None:
                self._slots.release()
        self._finish(index, prompt, response, total, wait, fails, False)
        return response

    def stream(self, prompt: str) -> Iterator[str]:
        """Yield the response in chunks of ``stream_chunk_tokens`` tokens (4 characters each).

        The first chunk comes after the time-to-first-token latency, the next ones at
        ``tokens_per_second``. A failing call raises before the first chunk.
        """
        index, response, first_token, total, fails = self._plan(prompt)
        wait = self._slots.acquire() if self._slots is not None else 0.0
        try:
            if first_token and self.latency_scale:
                time.sleep(first_token * self.latency_scale)
            if fails:
                self._finish(index, prompt, response, total, wait, fails, True)
            for chunk in self._chunks(response):
                delay = self._chunk_delay(chunk)
                if delay:
                    time.sleep(delay)
                yield chunk
        finally:
            if self._slots is not None:
                self._slots.release()
        self._finish(index, prompt, response, total, wait, False, True)

    # -- async --

    async def acomplete(self, prompt: str) -> str:
        """Async :meth:`complete`: the latency is an ``asyncio.sleep``."""
        index, response, _, total, fails = self._plan(prompt)
        wait = await self._slots.aacquire() if self._slots is not None else 0.0
        try:
            if total and self.latency_scale:
                await asyncio.sleep(total * self.latency_scale)
        finally:
            if self._slots is not None:
                self._slots.release()
        self._finish(index, prompt, response, total, wait, fails, False)
        return response

    async def astream(self, prompt: str) -> AsyncIterator[str]:
        """Async :meth:`stream`."""
        index, response, first_token, total, fails = self._plan(prompt)
        wait = await self._slots.aacquire() if self._slots is not None else 0.0
        try:
            if first_token and self.latency_scale:
                await asyncio.sleep(first_token * self.latency_scale)
            if fails:
                self._finish(index, prompt, response, total, wait, fails, True)
            for chunk in self._chunks(response):
                delay = self._chunk_delay(chunk)
                if delay:
                    await asyncio.sleep(delay)
                yield chunk
        finally:
            if self._slots is not None:
                self._slots.release()
        self._finish(index, prompt, response, total, wait, False, True)

    # -- totals --

    @property
    def tokens_in(self) -> int:
        """Prompt tokens of all successful calls (also those no longer in :attr:`calls`)."""
        return self._tokens_in

    @property
    def tokens_out(self) -> int:
        """Response tokens of all successful calls (also those no longer in :attr:`calls`)."""
        return self._tokens_out

    @property
    def cost(self) -> Optional[float]:
        """Cost of all successful calls at this mock's own prices; None when it has none."""
        return self._cost if self.price is not None else None

    def reset(self) -> None:
        """Forget recorded calls, counts and tokens, and restart the seeded sequence."""
        super().reset()
        with self._lock:
            self._tokens_in = 0
            self._tokens_out = 0
            self._cost = 0.0

    @property
    def in_flight(self) -> int:
        """Calls holding a ``max_concurrent`` slot right now (0 without a limit)."""
        return self._slots.in_use if self._slots is not None else 0

    def __repr__(self) -> str:
        return f"<MockLLM latency={self.latency_model!r} seed={self.seed!r} calls={self.call_count}>"


# ---- MockTool ----


class MockTool(_SeededMock):
    """A deterministic tool stand-in: call it (``tool(*args, **kwargs)``) or ``await tool.acall(...)``.

    ``result`` is returned as is, or called with the call's arguments if it is callable.
    ``latency``, ``failure_rate``, ``seed``, ``failure`` (default :class:`MockToolError`),
    ``latency_scale`` and ``keep_calls`` work as for :class:`MockLLM`.
    """

    def __init__(
        self,
        name: str = "tool",
        result: Any = None,
        latency: LatencySpec = 0.0,
        failure_rate: float = 0.0,
        seed: Any = 0,
        *,
        failure: Any = MockToolError,
        latency_scale: float = 1.0,
        keep_calls: Optional[int] = DEFAULT_KEEP_CALLS,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        super().__init__(latency, failure_rate, seed, failure, latency_scale, keep_calls)
        self.name = name
        self.result = result

    def _outcome(self, index: int, latency: float, fails: bool, args: tuple, kwargs: dict) -> Any:
        record_tool_call()
        if fails:
            exc = _make_failure(self.failure, f"mock tool {self.name!r} call {index} failed")
            self._record(ToolCall(index, args, kwargs, None, latency, exc))
            raise exc
        try:
            value = self.result(*args, **kwargs) if callable(self.result) else self.result
        except BaseException as exc:
            self._record(ToolCall(index, args, kwargs, None, latency, exc))
            raise
        self._record(ToolCall(index, args, kwargs, value, latency, None))
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the tool: sleep the drawn latency, then return the result or raise the failure."""
        index, latency, fails = self._draw()
        if latency and self.latency_scale:
            time.sleep(latency * self.latency_scale)
        return self._outcome(index, latency, fails, args, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async call: the latency is an ``asyncio.sleep``."""
        index, latency, fails = self._draw()
        if latency and self.latency_scale:
            await asyncio.sleep(latency * self.latency_scale)
        return self._outcome(index, latency, fails, args, kwargs)

    def __repr__(self) -> str:
        return f"<MockTool {self.name!r} latency={self.latency_model!r} seed={self.seed!r} calls={self.call_count}>"
