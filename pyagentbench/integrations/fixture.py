"""The ``agent_benchmark`` fixture: pytest-benchmark's ``benchmark`` driven by the native loop, with
memory, CPU, allocation and throughput metrics stored in the benchmark's ``extra_info``."""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import inspect
import math
from typing import Any, Callable, Iterable, Iterator, Mapping

from .. import _native
from ..instruments.observe import ResourceWindow, count_allocs_any, observe, timing_metrics
from ..instruments.resources import AllocCounter
from ..instruments.timers import (
    DEFAULT_MIN_ROUND_TIME,
    SLOW_CALL_TIME,
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
from ..agents.usage import CountedCalls, GCWatch, UsageWindow
from ..results.metrics import (
    CUSTOM_INFO_KEY,
    CUSTOM_KEY_PREFIX,
    EXTRA_INFO_KEY,
    custom_metric,
    custom_metric_kind,
)
from ..results.samples import SAMPLES_KEY, Samples
from ..results.units import parse_duration, parse_size

__all__ = ["AgentBenchmark", "FixtureSettings", "environment_fingerprint"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def environment_fingerprint() -> dict[str, str]:
    """What a run's timings depend on beside the code: CPU model and cores, Python version and
    build, OS, pyagentbench's version and the clock's source. Saved in the run's machine_info; a
    compare across different fingerprints warns."""
    import os
    import platform
    import sysconfig
    from importlib import metadata

    try:
        version = metadata.version("pyagentbench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    build = ", ".join(platform.python_build())
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        build += ", free-threaded"
    if sysconfig.get_config_var("Py_DEBUG"):
        build += ", debug"
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count() or "unknown"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": f"{build}; {platform.python_compiler()}",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "pyagentbench": version,
        "clock": str(_native.clock_info()["now_ns"].get("source", "unknown")),
    }


class FixtureSettings:
    """What the fixture observes, from command-line options and the ``agentbench`` marker."""

    def __init__(self, resources: bool = True, allocs: bool = True, sample_interval: float = 0.001,
                 usage_calls: int = 5, prices: Mapping[str, Any] | None = None,
                 instructions: bool = False):
        self.resources = resources
        self.allocs = allocs
        self.sample_interval = sample_interval
        #: Calls of the target counted one by one before the timed rounds (usage, custom metrics,
        #: wall/CPU/wait); 0: none.
        self.usage_calls = usage_calls
        #: The --agentbench-prices table: model -> Price.
        self.prices = dict(prices or {})
        self.instructions = instructions  # count under callgrind instead of timing


_BETTER = ("lower", "higher")


def check_custom_metric(name: str, value: Any, unit: str | None, better: str,
                        known: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
    """A custom metric's value in its base unit (seconds, bytes) and its description; TypeError or
    ValueError naming the problem (a bad name, a value that is not a finite number, an unknown
    ``better``, or a unit or direction other than the one the name was first recorded with)."""
    where = f"agent_benchmark.metric({name!r})"
    custom_metric(name)  # ValueError for a bad name or a built-in one
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"{where}: the value must be a finite number, got {value!r}")
        raise TypeError(f"{where}: the value must be a number, not {type(value).__name__}")
    if unit is not None and not isinstance(unit, str):
        raise TypeError(f"{where}: unit must be a str or None, not {type(unit).__name__}")
    if better not in _BETTER:
        raise ValueError(f"{where}: better must be 'lower' or 'higher', got {better!r}")
    kind = custom_metric_kind(unit)
    stored = float(value)
    if kind == "duration":
        stored = parse_duration(f"{value!r}{unit}") if value >= 0 else -parse_duration(f"{-value!r}{unit}")
    elif kind == "size":
        stored = parse_size(f"{value!r}{unit}") if value >= 0 else -parse_size(f"{-value!r}{unit}")
    if known is not None and (known["unit"] != (unit or "") or known["better"] != better):
        raise ValueError(f"{where}: first recorded with unit={known['unit'] or None!r}, "
                         f"better={known['better']!r}; record it the same way every time")
    info = dict(known) if known is not None else {"unit": unit or "", "kind": kind, "better": better,
                                                 "per_call": False}
    return stored, info


def _nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def custom_metric_record(infos: Mapping[str, Mapping[str, Any]], once: Mapping[str, float],
                         per_call: Mapping[str, list[float]]) -> dict[str, Any]:
    """Record keys of the custom metrics: ``metric.<name>`` (the once-per-test value, or the mean
    over the counted calls that reported it, with ``.p50``, ``.p95``, ``.max``: nearest-rank
    percentiles) and their descriptions under ``metric_info``."""
    if not once and not per_call:
        return {}
    record: dict[str, Any] = {}
    described: dict[str, Any] = {}
    for name, info in infos.items():  # in the order the test first recorded them
        key = CUSTOM_KEY_PREFIX + name
        values = per_call.get(name)
        if values:
            ordered = sorted(values)
            record[key] = sum(values) / len(values)
            record[key + ".p50"] = _nearest_rank(ordered, 0.50)
            record[key + ".p95"] = _nearest_rank(ordered, 0.95)
            record[key + ".max"] = ordered[-1]
            described[name] = dict(info, per_call=True, calls=len(values))
        elif name in once:
            record[key] = once[name]
            described[name] = dict(info, per_call=False, calls=1)
    record[CUSTOM_INFO_KEY] = described
    return record


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
        # "idle" (the test body), "counting" (a counted call runs: metric() values are per call),
        # "timing" (timed rounds: metric() calls are ignored)
        self._phase = "idle"
        self._metric_info: dict[str, dict[str, Any]] = {}
        self._once: dict[str, float] = {}
        self._per_call: dict[str, list[float]] = {}
        self._counted: CountedCalls | None = None

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
        self._store_samples([round_ns * 1e-9 / measurement.loops for round_ns in measurement.rounds_ns])

    def _store_samples(self, seconds: list[float]) -> None:
        """The rounds' times per call, in the order they ran, as a bounded summary (see
        :mod:`pyagentbench.results.samples`) that survives saving without --benchmark-save-data."""
        if seconds:
            self.record[SAMPLES_KEY] = Samples.from_values(seconds).bounded().to_json()

    def _store(self, metrics: Mapping[str, Any]) -> None:
        self.record.update(metrics)
        self.record.update(custom_metric_record(self._metric_info, self._once, self._per_call))
        self.extra_info[EXTRA_INFO_KEY] = dict(self.record)
        self._on_record(self)

    # ---- custom metrics ----

    def metric(self, name: str, value: float, unit: str | None = None, better: str = "lower") -> None:
        """Record a metric of your own: ``agent_benchmark.metric("hit_rate", 0.93, better="higher")``.

        Called inside the benchmarked function, it records one value per counted call (the last
        one if a call records two; under :meth:`pedantic`, per round). The record then holds the
        mean as ``metric.<name>`` and ``.p50``, ``.p95``, ``.max`` over the calls; calls in the
        timed rounds, the allocation pass or a load run are ignored. Called in the test body, it
        records one value for the test. ``unit``: ``s``, ``ms``, ``us``, ``ns`` (stored in
        seconds), ``B``, ``KB``, ``MB``, ``GB``, ``KiB``, ``MiB``, ``GiB`` (stored in bytes),
        ``%``, ``ratio``, or a label for a count (``"tokens"``). ``better``: ``"lower"`` or ``"higher"``, the way gates and the table
        read it. The metric gets a column in the summary table, a budget
        (``slo(metrics={"hit_rate": ">=0.9"})``) and a gate (``metric.hit_rate:5%``).
        """
        if self._phase == "timing" and name in self._metric_info:  # the timed rounds: as cheap as can be
            return
        stored, info = check_custom_metric(name, value, unit, better, self._metric_info.get(name))
        self._metric_info[name] = info
        if self._phase == "timing":
            return
        if self._phase == "counting":
            info["per_call"] = True
            if self._counted is not None:
                self._counted.report_metric(name, stored)
            return
        if info.get("per_call"):
            raise ValueError(f"agent_benchmark.metric({name!r}): recorded per call inside the "
                             "benchmarked function already; give the once-per-test value another name")
        self._once[name] = stored
        if self.record or self._timed:
            self._store({})

    def _counted_pass(self, fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The counted calls before the timed rounds: their usage, custom metrics and time split."""
        calls = self._settings.usage_calls
        if not calls:
            return {}
        self._counted = CountedCalls(self._settings.prices)
        self._phase = "counting"
        try:
            self._counted.run(fn, args, kwargs, calls, slow_ns=int(SLOW_CALL_TIME * 1e9))
        finally:
            self._phase = "idle"
        for name, values in self._counted.metric_values.items():
            self._per_call.setdefault(name, []).extend(values)
        return self._counted.metrics()

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
        with _gc_paused(b._disable_gc), GCWatch() as gc_watch:
            counted = self._counted_pass(fn, args, kwargs)
            probe = {"probe_ns": self._counted.probe_ns} if counted and self._counted.probe_ns else {}
            self._phase = "timing"
            try:
                observation = observe(
                    fn, args, kwargs,
                    resources_on=self._settings.resources,
                    allocs_on=self._settings.allocs,
                    sample_interval=self._settings.sample_interval,
                    max_time=b._max_time,
                    min_rounds=b._min_rounds,
                    min_round_time=min_round_time,
                    warmup_calls=b._warmup or None,
                    **probe,
                )
            finally:
                self._phase = "idle"
        self._store_rounds(observation.measurement)
        metrics = dict(observation.metrics)
        metrics.update(counted)
        metrics.update(gc_watch.metrics())
        self._store(metrics)
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
        # Usage and custom metrics per round (rounds are fixed here, so no extra counted calls).
        counted = CountedCalls(self._settings.prices) if self._settings.usage_calls else None
        self._phase = "timing"  # metric() calls outside the counted rounds are not counted
        try:
            with _gc_paused(self._benchmark._disable_gc), GCWatch() as gc_watch:
                for _ in range(warmup_rounds):
                    one_round(*arguments(), timed=False)
                window = ResourceWindow(self._settings.sample_interval,
                                        enabled=self._settings.resources)
                with window:
                    for _ in range(rounds):
                        call_args, call_kwargs = arguments()
                        if counted is None:
                            rounds_ns.append(one_round(call_args, call_kwargs))
                            continue
                        self._counted, self._phase = counted, "counting"
                        try:
                            with counted.counting(iterations):
                                rounds_ns.append(one_round(call_args, call_kwargs))
                        finally:
                            self._phase = "timing"
            metrics.update(window.metrics)
            metrics.update(gc_watch.metrics())
            if counted is not None:
                metrics.update(counted.metrics())
                for name, values in counted.metric_values.items():
                    self._per_call.setdefault(name, []).extend(values)
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
            self._phase = "idle"
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
        usage = UsageWindow(self._settings.prices)
        self._phase = "timing"
        try:
            with _gc_paused(self._benchmark._disable_gc), window, usage:
                result = _load_run(call, is_async, payloads, concurrency=concurrency,
                                   duration=duration, rate=rate, timeout=timeout)
        finally:
            self._phase = "idle"
        if claim and service_ns:
            stats = self._benchmark._make_stats(1)
            stats.options["timer"] = "pyagentbench.now_ns"
            for ns in service_ns:
                stats.update(ns * 1e-9)
            self._store_samples([ns * 1e-9 for ns in service_ns])
        metrics = load_metrics(result)
        metrics.update(window.metrics)
        if self._settings.usage_calls and "usage_calls" not in self.record:
            per_task = CountedCalls(self._settings.prices)
            per_task.add_window(usage, int(result.completed) + int(result.failed))
            metrics.update(per_task.metrics())
            metrics["usage_calls"] = int(result.completed) + int(result.failed)
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
    """Record keys for a load run's LoadResult. ``load_latency_quantiles_s`` holds the task
    latency at each whole percentile 0, 1, ..., 100 (101 values, from the load's histogram), so a
    report can draw the distribution."""
    latency = getattr(result, "latency", None)
    quantiles = ([latency.percentile(p) * 1e-9 for p in range(101)]
                 if latency is not None and latency.count else None)
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
        **({"load_latency_quantiles_s": quantiles} if quantiles else {}),
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
