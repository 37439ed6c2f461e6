"""Observe a timed run: peak and delta RSS and CPU % around it, allocations per call after it.

Shared by the pytest plugin and the notebook magics, so both report the same numbers the same way.
The resource window resets the kernel's RSS high-water mark and runs a native Sampler while the
timed rounds run; allocations are counted in a separate pass afterwards, so counting never slows
the timed rounds.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import resources
from .timers import (SLOW_CALL_TIME, Measurement, _AsyncRounds, call_outside_event_loop, consuming,
                     measure_with_result)

__all__ = ["ResourceWindow", "Observation", "observe", "count_allocs_any", "DEFAULT_SAMPLE_INTERVAL",
           "rss_timeline", "RSS_TIMELINE_POINTS"]

#: Seconds between Sampler samples while a benchmark runs.
DEFAULT_SAMPLE_INTERVAL = 0.001
#: Most points of the RSS timeline a window stores (``rss_timeline``).
RSS_TIMELINE_POINTS = 512
#: Most calls one allocation-counting pass makes (count_allocs runs 4 passes' worth).
ALLOC_PASS_MAX_LOOPS = 1000


class ResourceWindow:
    """Context manager giving the memory and CPU of what runs inside it.

    On entry it hands freed memory back to the OS (:func:`~.resources.trim_heap`: glibc's
    ``malloc_trim(0)``), then resets the kernel's RSS high-water mark and starts a native Sampler,
    so the start RSS is what is live, not what earlier code freed. ``metrics`` then holds:

    - ``peak_rss_bytes``: the window's own peak, the highest RSS above the RSS at its start
      (never negative). It does not depend on what ran before, which tests ran, what plugins
      loaded, or how big a baseline file the process read.
    - ``process_peak_rss_bytes``: the whole process's highest RSS in the window (the absolute
      figure; ``peak_rss_bytes = process_peak_rss_bytes - start_rss_bytes``).
    - ``start_rss_bytes``, ``rss_delta_bytes`` (end - start), ``heap_trimmed_bytes`` (what the
      trim handed back on entry), ``cpu_percent``, ``cpu_time_s``, ``wall_time_s``, ``samples``,
      ``sample_interval_s`` and ``peak_rss_source``.

    The peak is exact where the kernel's high-water mark can be reset (Linux: VmHWM after writing
    to /proc/self/clear_refs); elsewhere it is the Sampler's peak, exact to its interval. With
    ``enabled=False`` it observes nothing and ``metrics`` stays empty, so callers need no branch.
    """

    def __init__(self, interval: float = DEFAULT_SAMPLE_INTERVAL, enabled: bool = True) -> None:
        self.interval = interval
        self.enabled = enabled
        self.metrics: dict[str, Any] = {}

    def __enter__(self) -> "ResourceWindow":
        if not self.enabled:
            return self
        # The Sampler's ring is allocated (and touched) here, before the start RSS is read.
        self._sampler = resources.Sampler(interval=self.interval)
        self._trim = resources.trim_heap()
        self._kernel_peak = resources.reset_peak_rss()
        self._sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.enabled:
            return
        summary = self._sampler.stop()
        peak = summary.peak_rss
        source = "sampler"
        if self._kernel_peak:
            kernel_peak = resources.peak_rss()
            if kernel_peak >= peak:
                peak, source = kernel_peak, "VmHWM"
        start = int(summary.start_rss)
        self.metrics = {
            "peak_rss_bytes": max(0, int(peak) - start),
            "process_peak_rss_bytes": int(peak),
            "rss_delta_bytes": int(summary.rss_delta),
            "start_rss_bytes": start,
            "heap_trimmed_bytes": int(self._trim.released_bytes),
            "cpu_percent": float(summary.cpu_percent),
            "cpu_time_s": float(summary.cpu_time),
            "wall_time_s": float(summary.wall_time),
            "samples": int(summary.samples),
            "sample_interval_s": float(summary.interval),
            "peak_rss_source": source,
        }
        series = self._sampler.series()
        self.metrics["rss_timeline"] = rss_timeline(series.timestamps_ns, series.rss_bytes)


def rss_timeline(timestamps_ns: Sequence[int], rss_bytes: Sequence[int],
                 max_points: int = RSS_TIMELINE_POINTS) -> dict[str, list]:
    """The Sampler's samples as ``{"t_s": [...], "rss_bytes": [...]}``: seconds since the first
    sample and RSS in bytes, at most *max_points* points, oldest first.

    Longer series are cut into ``max_points // 2`` runs of consecutive samples and each run keeps
    its lowest and its highest sample (in time order), so a peak or a step of any length stays
    in the timeline, whatever the sampling rate.
    """
    n = min(len(timestamps_ns), len(rss_bytes))
    if n == 0:
        return {"t_s": [], "rss_bytes": []}
    if n <= max_points:
        picked = list(range(n))
    else:
        buckets = max(1, max_points // 2)
        picked = []
        for b in range(buckets):
            lo, hi = b * n // buckets, (b + 1) * n // buckets
            if lo >= hi:
                continue
            low = min(range(lo, hi), key=rss_bytes.__getitem__)
            high = max(range(lo, hi), key=rss_bytes.__getitem__)
            picked += sorted({low, high})
    origin = timestamps_ns[0]
    return {
        "t_s": [round((timestamps_ns[i] - origin) * 1e-9, 6) for i in picked],
        "rss_bytes": [int(rss_bytes[i]) for i in picked],
    }


def _returns_awaitables(fn: Callable[..., Any], args: tuple, kwargs: dict | None) -> bool:
    """True for coroutine functions and for callables that return awaitables (found by one call,
    whose awaitable is closed unrun)."""
    if inspect.iscoroutinefunction(fn):
        return True
    value = fn(*args, **(kwargs or {}))
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        return True
    return False


def count_allocs_any(
    fn: Callable[..., Any], args: tuple, kwargs: dict | None, loops: int, single: bool = False
) -> tuple[float, float]:
    """Allocations and bytes per call, for plain and coroutine functions alike.

    Plain functions go through :func:`pyagentbench.count_allocs`. Coroutine functions, and
    callables that return awaitables, are counted the same way (the difference of a pass of ``loops`` and one of ``2 * loops`` awaits on one event loop),
    which leaves out the loop's constant cost but keeps what each await of fn allocates, including
    the coroutine object itself.

    ``single``: fn is slow and already warm (the timed rounds ran it), so one call is counted,
    less a counted pass of the same loop with no calls: one call instead of four.
    """
    loops = max(1, min(loops, ALLOC_PASS_MAX_LOOPS))
    is_async = inspect.iscoroutinefunction(fn) if single else _returns_awaitables(fn, args, kwargs)
    if single and not is_async:
        # A callable returning awaitables is told by its value: that one call is the counted one.
        counted = _count_single_call(fn, args, kwargs)
        if counted is not None:
            return counted
        is_async = True
    if not is_async:
        return resources.count_allocs(fn, args, kwargs, loops=loops)
    # The awaits run on an event loop of the pass's own, so on a helper thread when this thread
    # already runs one (an async test, a notebook kernel); on the awaiting test's loop under
    # call_lending_loop.
    return call_outside_event_loop(lambda: _count_awaits(fn, args, kwargs, loops, single))


def _count_awaits(fn: Callable[..., Any], args: tuple, kwargs: dict | None, loops: int,
                  single: bool) -> tuple[float, float]:
    """count_allocs_any's counting of awaits of fn, on one event loop (see there)."""
    runner = _AsyncRounds(fn, args, kwargs)
    if single:
        try:
            counts = []
            for rounds in (0, 1):
                counter = resources.AllocCounter()
                with counter:
                    runner.run(1, rounds)
                counts.append((counter.allocs, counter.bytes))
        finally:
            runner.close()
        return float(counts[1][0] - counts[0][0]), float(counts[1][1] - counts[0][1])
    try:
        runner.run(loops, 1)  # warm-up
        counts = []
        for n in (loops, 2 * loops):
            counter = resources.AllocCounter()
            with counter:
                runner.run(n, 1)
            counts.append((counter.allocs, counter.bytes))
    finally:
        runner.close()
    return (counts[1][0] - counts[0][0]) / loops, (counts[1][1] - counts[0][1]) / loops


def _count_single_call(fn: Callable[..., Any], args: tuple,
                       kwargs: dict | None) -> tuple[float, float] | None:
    """One counted call of a plain function; None if its value turned out to be awaitable (it is
    closed unrun and the caller counts awaits instead)."""
    allocs, nbytes, value = resources._count_one_call(fn, args, kwargs)
    if inspect.isawaitable(value):
        _close(value)
        return None
    return allocs, nbytes


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


@dataclass
class Observation:
    """A Measurement, the final call's result, and the metrics observed around it."""

    measurement: Measurement
    result: Any
    metrics: dict[str, Any] = field(default_factory=dict)


def timing_metrics(m: Measurement) -> dict[str, Any]:
    """The Measurement's per-call statistics as record keys (seconds).

    ``mean_s`` and ``median_s`` are over the rounds; ``p95_s``, ``p99_s`` and ``max_s`` over
    single calls (``tail_calls`` of them; ``per_call_pass``: timed in a separate pass after the
    rounds). A stream (generator or async generator) adds ``ttft_s`` (mean time to its first
    item), ``inter_item_s`` (mean time between items) and ``items_per_call``."""
    metrics: dict[str, Any] = {
        "mean_s": m.mean,
        "median_s": m.median,
        "p95_s": m.p95,
        "p99_s": m.p99,
        "max_s": m.max,
        "loops": m.loops,
        "rounds": m.rounds,
        "tail_calls": m.calls.count if m.calls is not None else m.rounds,
        "per_call_pass": m.per_call_pass,
    }
    if m.items_per_call is not None:
        metrics["items_per_call"] = m.items_per_call
        if m.ttft is not None:
            metrics["ttft_s"] = m.ttft
        if m.inter_item is not None:
            metrics["inter_item_s"] = m.inter_item
    return metrics


def observe(
    fn: Callable[..., Any],
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    resources_on: bool = True,
    allocs_on: bool = True,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    **measure_options: Any,
) -> Observation:
    """measure() fn inside a ResourceWindow, then count its allocations per call."""
    window = ResourceWindow(sample_interval, enabled=resources_on)
    with window:
        measurement, result = measure_with_result(fn, args, kwargs, **measure_options)
    metrics: dict[str, Any] = dict(window.metrics)
    metrics.update(timing_metrics(measurement))
    if allocs_on:
        slow = measurement.loops == 1 and min(measurement.rounds_ns) >= SLOW_CALL_TIME * 1e9
        counted = consuming(fn) if measurement.items_per_call is not None else fn
        allocs, nbytes = count_allocs_any(counted, tuple(args), dict(kwargs) if kwargs else None,
                                          measurement.loops, single=slow)
        measurement.allocs_per_call, measurement.bytes_per_call = allocs, nbytes
        metrics["allocs_per_call"] = allocs
        metrics["bytes_per_call"] = nbytes
    return Observation(measurement, result, metrics)
