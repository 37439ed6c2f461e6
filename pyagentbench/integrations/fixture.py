"""The ``agent_benchmark`` fixture: pytest-benchmark's ``benchmark`` driven by the native loop, with
memory, CPU, allocation and throughput metrics stored in the benchmark's ``extra_info``."""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import inspect
from typing import Any, Callable, Iterable, Iterator, Mapping

from .. import _native
from ..instruments.observe import ResourceWindow, count_allocs_any, observe, timing_metrics
from ..instruments.resources import AllocCounter
from ..instruments.timers import (
    DEFAULT_MIN_ROUND_TIME,
    Measurement,
    StreamTimes,
    _AsyncRounds,
    _PerCallTails,
    _SyncRounds,
    _adrain,
    _drain,
    _python_clock_cost_ns,
    borrowed_loop,
    call_lending_loop,
    call_outside_event_loop,
    consuming,
)
from ..results.metrics import EXTRA_INFO_KEY

__all__ = ["AgentBenchmark", "FixtureSettings"]


class FixtureSettings:
    """What the fixture observes, from command-line options and the ``agentbench`` marker."""

    def __init__(self, resources: bool = True, allocs: bool = True, sample_interval: float = 0.001,
                 instructions: bool = False):
        self.resources = resources
        self.allocs = allocs
        self.sample_interval = sample_interval
        self.instructions = instructions  # count under callgrind instead of timing


def _run_once(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """Call fn once, awaiting its result if it is awaitable (on a thread if a loop is running)."""
    value = fn(*args, **kwargs)
    if not inspect.isawaitable(value):
        return value
    return call_outside_event_loop(lambda: _await_on_new_loop(value))


@contextlib.contextmanager
def _gc_paused(paused: bool) -> Iterator[None]:
    """The cyclic GC off inside (``--benchmark-disable-gc``), as it was before afterwards."""
    was_enabled = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused and was_enabled:
            gc.enable()


def _await_on_new_loop(awaitable: Any) -> Any:
    runner = _AsyncRounds(_await_on_new_loop, (), None)  # only its loop is used
    try:
        return runner.run_awaitable(awaitable)
    finally:
        runner.close()


class AgentBenchmark:
    """Times agent code with the native loop and records what it costs beyond time.

    ``agent_benchmark(fn, *args, **kwargs)`` returns fn's result (awaited if fn is async). The
    timed rounds land in pytest-benchmark's statistics for the test, so its table, JSON, saving,
    comparing and histograms see them. Around the rounds it records peak RSS, RSS delta and CPU %,
    and after them allocations and bytes per call in a separate counting pass; all of it goes to
    ``extra_info["agentbench"]``. Use it once per test for timing (call or :meth:`pedantic`);
    :meth:`throughput` may be added.

    Every form works inside a running event loop (an async test, a notebook kernel), awaiting on
    a loop of its own on a helper thread. Async tests can instead await :meth:`acall`,
    :meth:`apedantic` and :meth:`athroughput`, which await on the test's own loop and record the
    same keys.
    """

    def __init__(self, benchmark: Any, settings: FixtureSettings, on_record: Callable[["AgentBenchmark"], None]):
        self._benchmark = benchmark
        self._settings = settings
        self._on_record = on_record
        self._timed = False
        self.record: dict[str, Any] = {}

    # ---- what tests read ----

    @property
    def benchmark(self) -> Any:
        """The underlying pytest-benchmark fixture."""
        return self._benchmark

    @property
    def extra_info(self) -> dict[str, Any]:
        """pytest-benchmark's ``extra_info`` for this test (saved in its JSON)."""
        return self._benchmark.extra_info

    @property
    def enabled(self) -> bool:
        """False under --benchmark-disable and under xdist: functions then run once, untimed."""
        return not self._benchmark.disabled

    @property
    def fullname(self) -> str:
        return self._benchmark.fullname

    # ---- timing ----

    def _claim(self, mode: str) -> None:
        if self._timed:
            raise RuntimeError(
                f"agent_benchmark can time once per test; it already ran in {self._benchmark._mode} mode"
            )
        if self._benchmark._mode:
            raise RuntimeError(
                f"the benchmark fixture was already used in {self._benchmark._mode} mode in this test"
            )
        self._timed = True
        self._benchmark._mode = mode

    def _store_rounds(self, measurement: Measurement) -> None:
        stats = self._benchmark._make_stats(measurement.loops)
        stats.options["timer"] = "pyagentbench.now_ns"
        for round_ns in measurement.rounds_ns:
            stats.update(round_ns * 1e-9)

    def _store(self, metrics: Mapping[str, Any]) -> None:
        self.record.update(metrics)
        self.extra_info[EXTRA_INFO_KEY] = dict(self.record)
        self._on_record(self)

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not callable(fn):
            raise TypeError(f"agent_benchmark(): fn must be callable, not {type(fn).__name__}")
        self._claim("agent_benchmark(...)")
        if not self.enabled:
            return _run_once(fn, args, kwargs)
        if self._settings.instructions:
            return self._count_instructions(fn, args, kwargs)
        b = self._benchmark
        min_round_time = b._min_time if b._min_time > DEFAULT_MIN_ROUND_TIME else None
        with _gc_paused(b._disable_gc):
            observation = observe(
                fn, args, kwargs,
                resources_on=self._settings.resources,
                allocs_on=self._settings.allocs,
                sample_interval=self._settings.sample_interval,
                max_time=b._max_time,
                min_rounds=b._min_rounds,
                min_round_time=min_round_time,
                warmup_calls=b._warmup or None,
            )
        self._store_rounds(observation.measurement)
        self._store(observation.metrics)
        return observation.result

    def pedantic(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        setup: Callable[[], Any] | None = None,
        rounds: int = 1,
        iterations: int = 1,
        warmup_rounds: int = 0,
    ) -> Any:
        """Like pytest-benchmark's ``benchmark.pedantic``: exactly ``rounds`` rounds of
        ``iterations`` calls, after ``warmup_rounds`` untimed ones. ``setup``, if given, runs before
        every round and may return ``(args, kwargs)`` for it (then ``iterations`` must be 1, as in
        pytest-benchmark). Coroutine functions, and callables whose result is awaitable (found on
        the first call), are awaited. Allocations are counted on one extra call after the rounds."""
        if not callable(fn):
            raise TypeError(f"agent_benchmark.pedantic(): fn must be callable, not {type(fn).__name__}")
        for name, value, low in (("rounds", rounds, 1), ("iterations", iterations, 1),
                                 ("warmup_rounds", warmup_rounds, 0)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"agent_benchmark.pedantic(): {name} must be an int, not {type(value).__name__}")
            if value < low:
                raise ValueError(f"agent_benchmark.pedantic(): {name} must be >= {low}, got {value}")
        if setup is not None and iterations > 1:
            raise ValueError("agent_benchmark.pedantic(): iterations must be 1 when setup is given")
        base_args, base_kwargs = tuple(args), dict(kwargs or {})

        def arguments() -> tuple[tuple, dict]:
            if setup is None:
                return base_args, base_kwargs
            made = setup()
            if made is None:
                return base_args, base_kwargs
            if base_args or base_kwargs:
                raise TypeError("agent_benchmark.pedantic(): setup returned arguments, so args and kwargs must be empty")
            made_args, made_kwargs = made
            return tuple(made_args), dict(made_kwargs or {})

        self._claim("agent_benchmark.pedantic(...)")
        if not self.enabled:
            call_args, call_kwargs = arguments()
            return _run_once(fn, call_args, call_kwargs)
        if self._settings.instructions:  # setup runs once: every counted call gets its arguments
            return self._count_instructions(fn, *arguments())

        # Whether fn's results must be awaited, or are streams to consume, is known up front for
        # coroutine, generator and async generator functions; for other callables the first call
        # tells (its value is awaited or consumed inside that call's timing).
        runner: Any = None
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            runner = _AsyncRounds(fn, (), None, stream=inspect.isasyncgenfunction(fn))
        elif inspect.isgeneratorfunction(fn):
            runner = _SyncRounds(fn, (), None, stream=True)
        rounds_ns = array.array("q")
        result: Any = None
        # Per-call tails: the first call is timed on its own, and tells whether calls are slow
        # enough to be timed one by one in the rounds (with setup they always are: every round is
        # one call with its own arguments); if not, a separate pass times them after the rounds.
        tails: _PerCallTails | None = None
        per_call = False

        def calls(n: int, call_args: tuple, call_kwargs: dict, timed: bool) -> int:
            nonlocal result
            runner.args, runner.kwargs = call_args, call_kwargs
            elapsed = runner.run(n, 1, *tails.arguments(per_call and timed))[0]
            result = runner.result
            return elapsed

        def first_call(call_args: tuple, call_kwargs: dict, timed: bool) -> int:
            """The run's first call: made, timed on its own (into a scratch Histogram and
            StreamTimes, kept if it is a timed one and calls are timed in the rounds), and the
            per-call mode decided."""
            nonlocal result, runner, tails, per_call
            scratch_calls, scratch_streams = _native.Histogram(), StreamTimes()
            if runner is not None:
                runner.args, runner.kwargs = call_args, call_kwargs
                elapsed = runner.run(1, 1, scratch_calls, scratch_streams if runner.stream else None)[0]
                result = runner.result
            else:
                cost = _python_clock_cost_ns()
                start = _native.now_ns()
                value = fn(*call_args, **call_kwargs)
                reads = 0
                if inspect.isasyncgen(value):
                    runner = _AsyncRounds(fn, (), None, stream=True)
                    value, reads = runner.run_awaitable(_adrain(value, start, True, scratch_streams, cost))
                elif inspect.isawaitable(value):
                    runner = _AsyncRounds(fn, (), None)
                    value = runner.run_awaitable(value)
                elif inspect.isgenerator(value):
                    runner = _SyncRounds(fn, (), None, stream=True)
                    value, reads = _drain(value, start, True, scratch_streams, cost)
                else:
                    runner = _SyncRounds(fn, (), None)
                elapsed = _native.now_ns() - start
                scratch_calls.record(max(0, elapsed - (1 + reads) * cost))
                result = value
            tails = _PerCallTails(runner, iterations)
            per_call = tails.wanted and (setup is not None or tails.in_rounds(elapsed))
            if per_call and timed:
                tails.calls.merge(scratch_calls)
                if tails.streams is not None:
                    tails.streams.slots[:] = scratch_streams.slots
            return elapsed

        def one_round(call_args: tuple, call_kwargs: dict, timed: bool = True) -> int:
            if tails is not None:
                return calls(iterations, call_args, call_kwargs, timed)
            elapsed = first_call(call_args, call_kwargs, timed)
            if iterations > 1:
                elapsed += calls(iterations - 1, call_args, call_kwargs, timed)
            return elapsed

        metrics: dict[str, Any] = {}
        try:
            with _gc_paused(self._benchmark._disable_gc):
                for _ in range(warmup_rounds):
                    one_round(*arguments(), timed=False)
                window = ResourceWindow(self._settings.sample_interval,
                                        enabled=self._settings.resources)
                with window:
                    for _ in range(rounds):
                        rounds_ns.append(one_round(*arguments()))
            metrics.update(window.metrics)
            with _gc_paused(self._benchmark._disable_gc):
                kept = result
                tails.finish(rounds * iterations)
                result = kept
            measurement = tails.measurement(rounds_ns)
            metrics.update(timing_metrics(measurement))
            if self._settings.allocs:
                call_args, call_kwargs = arguments()
                counted = consuming(fn) if runner.stream else fn
                with _gc_paused(self._benchmark._disable_gc):
                    if isinstance(runner, _AsyncRounds):
                        allocs, nbytes = count_allocs_any(counted, call_args, call_kwargs, 1)
                    else:
                        counter = AllocCounter()
                        with counter:
                            counted(*call_args, **call_kwargs)
                        allocs, nbytes = float(counter.allocs), float(counter.bytes)
                metrics["allocs_per_call"], metrics["bytes_per_call"] = allocs, nbytes
        finally:
            if isinstance(runner, _AsyncRounds):
                runner.close()
        self._store_rounds(measurement)
        self._store(metrics)
        return result

    def _count_instructions(self, fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> Any:
        from .instructions import count_for_fixture  # --agentbench-instructions only

        with _gc_paused(self._benchmark._disable_gc):
            result, measurement, metrics = count_for_fixture(fn, args, kwargs, self.fullname)
        self._store_rounds(measurement)
        self._store(metrics)
        return result

    # ---- load ----

    def throughput(
        self,
        target: Callable[..., Any],
        payloads: Iterable[Any],
        concurrency: int = 10,
        duration: float | None = None,
        rate: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a load (see :func:`pyagentbench.run_load`; ``timeout`` is per task) and record its
        throughput, error rate, failures by type and latency mean and percentiles, and, unless the
        test's timing already did, peak RSS, RSS delta and CPU % over the load. If the test times
        nothing else, each task's service time becomes a round of pytest-benchmark's statistics.
        Returns the LoadResult; if every task failed, the test fails with the first exception.
        Under --benchmark-disable (and xdist) the load still runs once, so assertions on the
        result hold, but nothing is recorded."""
        payloads = list(payloads)
        call, is_async = _load_callable(target)
        claim = not self._timed and not self._benchmark._mode
        if claim:
            self._claim("agent_benchmark.throughput(...)")
        if not self.enabled:
            # A load run is already a single run: do it, so the test's assertions on the
            # LoadResult still hold, but record nothing.
            result = _load_run(target, is_async, payloads, concurrency=concurrency,
                               duration=duration, rate=rate, timeout=timeout)
            _fail_if_all_failed(result)
            return result
        service_ns: list[int] = []
        if claim:
            call = _timed_call(call, is_async, service_ns)
        window = ResourceWindow(
            self._settings.sample_interval,
            enabled=self._settings.resources and "peak_rss_bytes" not in self.record,
        )
        with _gc_paused(self._benchmark._disable_gc), window:
            result = _load_run(call, is_async, payloads, concurrency=concurrency, duration=duration,
                               rate=rate, timeout=timeout)
        if claim and service_ns:
            stats = self._benchmark._make_stats(1)
            stats.options["timer"] = "pyagentbench.now_ns"
            for ns in service_ns:
                stats.update(ns * 1e-9)
        metrics = load_metrics(result)
        metrics.update(window.metrics)
        all_failed = bool(result.failed and not result.completed)
        try:
            self._store(metrics)
        except BaseException:
            if not all_failed:
                raise
        # Nothing worked: that is the failure to show, not the budgets it broke on the way (raised
        # outside the handler, so it is not printed as happening "during" a budget failure).
        _fail_if_all_failed(result)
        return result

    # ---- awaitable forms, for async tests ----

    async def acall(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await agent_benchmark.acall(fn, *args, **kwargs)``: the fixture call for async tests.

        Times fn like ``agent_benchmark(fn, ...)`` does, records the same keys into
        pytest-benchmark's stats and ``extra_info`` under the same options, and returns fn's
        result; but fn's awaits run on the test's own event loop, so a client, session or lock
        the test made on that loop works inside fn. The timing and observing machinery runs on a
        helper thread meanwhile (the loop stays free to run fn), so plain functions, and
        ``setup``, run on that thread too. Needs a running asyncio loop (pytest-asyncio, or anyio
        on its asyncio backend)."""
        if not callable(fn):
            raise TypeError(f"agent_benchmark.acall(): fn must be callable, not {type(fn).__name__}")
        return await _on_test_loop("acall", lambda: self(fn, *args, **kwargs))

    async def apedantic(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        setup: Callable[[], Any] | None = None,
        rounds: int = 1,
        iterations: int = 1,
        warmup_rounds: int = 0,
    ) -> Any:
        """``await agent_benchmark.apedantic(fn, ...)``: :meth:`pedantic` for async tests, with
        fn's awaits on the test's own event loop (see :meth:`acall`). Same arguments, checks and
        record; ``setup`` is a plain function, run on the helper thread before each round."""
        if not callable(fn):
            raise TypeError(f"agent_benchmark.apedantic(): fn must be callable, not {type(fn).__name__}")
        return await _on_test_loop("apedantic", lambda: self.pedantic(
            fn, args, kwargs, setup=setup, rounds=rounds, iterations=iterations,
            warmup_rounds=warmup_rounds))

    async def athroughput(
        self,
        target: Callable[..., Any],
        payloads: Iterable[Any],
        concurrency: int = 10,
        duration: float | None = None,
        rate: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``await agent_benchmark.athroughput(target, payloads, ...)``: :meth:`throughput` for
        async tests. An async target (a coroutine function, an async Agent) runs as
        ``concurrency`` tasks on the test's own event loop (:func:`pyagentbench.arun_load`); a
        plain one on worker threads, as in :meth:`throughput`. Records the same keys and returns
        the LoadResult."""
        return await _on_test_loop("athroughput", lambda: self.throughput(
            target, payloads, concurrency=concurrency, duration=duration, rate=rate,
            timeout=timeout))


async def _on_test_loop(name: str, form: Callable[[], Any]) -> Any:
    """Run a synchronous form of the fixture on a helper thread whose awaits go to the awaiting
    test's event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"agent_benchmark.{name}() must be awaited in an async test on an asyncio event loop "
            "(pytest-asyncio, or anyio's asyncio backend); call the synchronous form elsewhere"
        ) from None
    return await call_lending_loop(form)


def _load_run(target: Any, is_async: bool, payloads: list, **options: Any) -> Any:
    """run_load(target, ...), wherever the caller is: an async target runs on the test's own loop
    under :meth:`AgentBenchmark.athroughput` (arun_load there), and on a loop of its own on a
    helper thread when this thread already runs one (throughput() from an async test)."""
    from ..agents.load import arun_load, run_load  # the agent layer, imported on use

    lent = borrowed_loop()
    if lent is not None and is_async:
        running = arun_load(target, payloads, progress=False, **options)
        return asyncio.run_coroutine_threadsafe(running, lent).result()
    if is_async:  # run_load makes a loop of its own, which a running one forbids
        return call_outside_event_loop(lambda: run_load(target, payloads, progress=False, **options))
    return run_load(target, payloads, progress=False, **options)


def _load_callable(target: Any) -> tuple[Callable[[Any], Any], bool]:
    """What run_load would call for target, and whether it awaits it (an Agent's process(), a
    bound method of an async Agent, a coroutine function, or target itself)."""
    from ..agents.agent import _as_target

    return _as_target(target, "agent_benchmark.throughput(): target")


def _timed_call(call: Callable[[Any], Any], is_async: bool, sink: list[int]) -> Callable[[Any], Any]:
    """call, appending each call's nanoseconds to sink (list.append is atomic under the GIL)."""
    now_ns = _native.now_ns
    if is_async:
        async def timed_async(payload: Any) -> Any:
            start = now_ns()
            try:
                return await call(payload)
            finally:
                sink.append(now_ns() - start)

        return timed_async

    def timed(payload: Any) -> Any:
        start = now_ns()
        try:
            return call(payload)
        finally:
            sink.append(now_ns() - start)

    return timed


def load_metrics(result: Any) -> dict[str, Any]:
    """Record keys for a load run's LoadResult."""
    return {
        "throughput_per_s": float(result.throughput),
        "error_rate": float(result.error_rate),
        "completed": int(result.completed),
        "failed": int(result.failed),
        "load_duration_s": float(result.duration_s),
        "latency_mean_s": result.latency_mean_ns * 1e-9,
        "latency_p50_s": result.latency_p50_ns * 1e-9,
        "latency_p95_s": result.latency_p95_ns * 1e-9,
        "latency_p99_s": result.latency_p99_ns * 1e-9,
        "latency_max_s": result.latency_max_ns * 1e-9,
        "achieved_concurrency": float(result.achieved_concurrency),
        "load_mode": result.mode,
        "errors_by_type": dict(result.errors_by_type),
    }


def _fail_if_all_failed(result: Any) -> None:
    """Fail the test, showing the first exception, when a load completed no task at all."""
    if result.completed or not result.failed:
        return
    import pytest

    by_type = ", ".join(f"{name}: {f.count}" for name, f in result.failures.items())
    pytest.fail(
        f"agent_benchmark load: all {result.failed} tasks failed ({by_type}); "
        f"the first failure:\n{result.first_error or ''}",
        pytrace=False,
    )
