"""Resource metrics: the RSS/CPU Sampler, exact peak RSS, and allocation counting.

The mechanism is native (``pyagentbench._native``): a sampler thread that never takes the GIL, procfs
readers, and allocator hooks. This module holds the policy: defaults, argument checking, the summary's
arithmetic, human-readable output, and a portable fallback (psutil in a Python thread) where the
native sampler is not available.
"""

from __future__ import annotations

import array
import gc
import inspect
import math
import mmap
import numbers
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from .. import _native

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no getrusage()
    resource = None  # type: ignore[assignment]
from ..results.units import format_bytes, format_duration

__all__ = [
    "Sampler",
    "ResourceSummary",
    "SampleSeries",
    "AllocCounter",
    "count_allocs",
    "rss",
    "peak_rss",
    "reset_peak_rss",
    "trim_heap",
    "HeapTrim",
    "sampler_info",
    "MIN_INTERVAL",
    "MAX_INTERVAL",
    "DEFAULT_INTERVAL",
]

#: Shortest and longest sampling interval, in seconds.
MIN_INTERVAL = 100e-6
MAX_INTERVAL = 10.0
#: The default sampling interval, in seconds (1 kHz).
DEFAULT_INTERVAL = 0.001
#: The ring holds this many seconds of samples by default, within the bounds below.
_DEFAULT_RING_SECONDS = 60.0
_MIN_DEFAULT_CAPACITY = 1024
_MAX_DEFAULT_CAPACITY = 65536
#: Largest capacity accepted (each sample takes 24 bytes).
MAX_CAPACITY = 1 << 26

#: Set to "psutil" to use the portable fallback sampler even where the native one works.
_SOURCE_ENV = "PYAGENTBENCH_SAMPLER"


def _native_sampler_available() -> bool:
    if not hasattr(_native, "Sampler"):
        return False
    try:
        _native.rss()
    except OSError:
        return False
    return True


#: Whether procfs RSS works here; it does not change while the process runs.
_NATIVE_RSS = _native_sampler_available()


def _source() -> str:
    forced = os.environ.get(_SOURCE_ENV, "").strip().lower()
    if forced == "psutil":
        return "psutil"
    if forced not in ("", "native"):
        raise ValueError(f"{_SOURCE_ENV} must be 'native' or 'psutil', got {forced!r}")
    return "native" if _NATIVE_RSS else "psutil"


# ---- the summary ----


@dataclass(frozen=True)
class ResourceSummary:
    """What a :class:`Sampler` saw between start and stop (or so far, while it runs).

    Sizes are bytes and times seconds: ``start_rss``, ``end_rss``, ``rss_delta`` (end - start),
    ``peak_rss`` (highest sample; exact even when the ring wrapped), ``mean_rss`` (over every
    sample), ``cpu_time`` (process CPU, every thread but the sampler's own), ``wall_time``,
    ``cpu_percent`` (``cpu_time`` over ``wall_time``; 100 = one full core), ``samples`` (taken,
    including the first at start and the last at stop), ``missed_samples`` (ticks skipped because
    the sampler thread ran late), ``interval`` and ``sampler_cpu_time`` (the CPU the sampler
    thread itself used, left out of ``cpu_time``).
    """

    start_rss: int
    end_rss: int
    rss_delta: int
    peak_rss: int
    mean_rss: float
    cpu_time: float
    wall_time: float
    cpu_percent: float
    samples: int
    missed_samples: int
    interval: float
    sampler_cpu_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)

    def __repr__(self) -> str:
        sign = "+" if self.rss_delta >= 0 else "-"
        return (
            f"<ResourceSummary peak {format_bytes(self.peak_rss)}, "
            f"rss {format_bytes(self.start_rss)} -> {format_bytes(self.end_rss)} "
            f"({sign}{format_bytes(abs(self.rss_delta))}), mean {format_bytes(self.mean_rss)}, "
            f"cpu {format_duration(self.cpu_time)} in {format_duration(self.wall_time)} "
            f"({self.cpu_percent:.1f}%), {self.samples} samples every "
            f"{format_duration(self.interval)}, {self.missed_samples} missed>"
        )


def _summary_from_totals(totals: Mapping[str, Any]) -> ResourceSummary:
    samples = int(totals["samples"])
    wall_ns = int(totals["last_ns"]) - int(totals["start_ns"])
    cpu_ns = int(totals["last_cpu_ns"]) - int(totals["start_cpu_ns"])
    wall_time = wall_ns * 1e-9
    cpu_time = cpu_ns * 1e-9
    return ResourceSummary(
        start_rss=int(totals["start_rss_bytes"]),
        end_rss=int(totals["last_rss_bytes"]),
        rss_delta=int(totals["last_rss_bytes"]) - int(totals["start_rss_bytes"]),
        peak_rss=int(totals["peak_rss_bytes"]),
        mean_rss=float(totals["rss_sum_bytes"]) / samples if samples else 0.0,
        cpu_time=cpu_time,
        wall_time=wall_time,
        cpu_percent=100.0 * cpu_time / wall_time if wall_time > 0 else 0.0,
        samples=samples,
        missed_samples=int(totals["missed_samples"]),
        interval=int(totals["interval_ns"]) * 1e-9,
        sampler_cpu_time=int(totals.get("sampler_cpu_ns", 0)) * 1e-9,
    )


class SampleSeries(NamedTuple):
    """The samples still in a Sampler's ring, oldest first, as ``array.array('q')`` columns:
    ``timestamps_ns`` (the :func:`now_ns` clock), ``rss_bytes`` and ``cpu_ns`` (process CPU time,
    less the sampler thread's own)."""

    timestamps_ns: array.array
    rss_bytes: array.array
    cpu_ns: array.array


# ---- the portable fallback: psutil (or getrusage) in a Python thread ----


class _PsutilSamplerCore:
    """The native core's interface, in Python: used where /proc/self/statm is not available.

    It samples only when its thread gets the GIL, so a long C call that holds the GIL shows up as
    missed samples.
    """

    def __init__(self, interval_ns: int, capacity: int) -> None:
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - psutil is a dependency
            psutil = None
        self._process = psutil.Process() if psutil is not None else None
        self.interval_ns = interval_ns
        self.capacity = capacity
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring = [array.array("q", bytes(8 * capacity)) for _ in range(3)]
        self._phase = "idle"
        self._totals: dict[str, Any] = {}

    def _rss(self) -> int:
        if self._process is not None:
            return int(self._process.memory_info().rss)
        # No current RSS without psutil: the peak is the best getrusage() offers.
        if resource is None:  # pragma: no cover
            raise RuntimeError("no RSS source here: install psutil")
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(maxrss if sys.platform == "darwin" else maxrss * 1024)

    @property
    def running(self) -> bool:
        return self._phase == "running"

    def _record(self, in_sampler_thread: bool = False) -> None:
        own_ns = time.thread_time_ns() if in_sampler_thread else None
        rss_bytes = self._rss()
        cpu_ns = time.process_time_ns()
        ts_ns = _native.now_ns()
        with self._lock:
            t = self._totals
            if own_ns is not None:
                t["sampler_cpu_ns"] = own_ns
            cpu_ns -= t["sampler_cpu_ns"]
            if t["samples"]:
                cpu_ns = max(cpu_ns, t["last_cpu_ns"])  # never decreasing, as the native core
            slot = t["samples"] % self.capacity
            self._ring[0][slot], self._ring[1][slot], self._ring[2][slot] = ts_ns, rss_bytes, cpu_ns
            if t["samples"] == 0:
                t.update(start_ns=ts_ns, start_rss_bytes=rss_bytes, start_cpu_ns=cpu_ns,
                         peak_rss_bytes=rss_bytes)
            t["peak_rss_bytes"] = max(t["peak_rss_bytes"], rss_bytes)
            t["rss_sum_bytes"] += float(rss_bytes)
            t.update(last_ns=ts_ns, last_rss_bytes=rss_bytes, last_cpu_ns=cpu_ns)
            t["samples"] += 1

    def _run(self, origin_ns: int) -> None:
        interval_ns = self.interval_ns
        deadline_ns = origin_ns + interval_ns
        while not self._stop.wait(max(0.0, (deadline_ns - time.monotonic_ns()) * 1e-9)):
            self._record(in_sampler_thread=True)
            deadline_ns += interval_ns
            now = time.monotonic_ns()
            if now >= deadline_ns:
                late = (now - deadline_ns) // interval_ns + 1
                deadline_ns += late * interval_ns
                with self._lock:
                    self._totals["missed_samples"] += late
        own_ns = time.thread_time_ns()
        with self._lock:
            self._totals["sampler_cpu_ns"] = own_ns

    def start(self) -> None:
        with self._lock:
            if self._phase == "running":
                raise RuntimeError("Sampler.start(): the sampler is already running")
            self._phase = "running"
            self._totals = dict(samples=0, missed_samples=0, start_ns=0, last_ns=0,
                                start_rss_bytes=0, last_rss_bytes=0, peak_rss_bytes=0,
                                rss_sum_bytes=0.0, start_cpu_ns=0, last_cpu_ns=0,
                                interval_ns=self.interval_ns, read_errno=0, sampler_cpu_ns=0)
            self._stop.clear()
        origin_ns = time.monotonic_ns()
        self._record()
        self._thread = threading.Thread(target=self._run, args=(origin_ns,),
                                        name="pyagentbench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._phase != "running":
                raise RuntimeError("Sampler.stop(): the sampler is not running (call start() first)")
            self._phase = "stopping"
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._record()
        with self._lock:
            self._phase = "stopped"

    def totals(self) -> dict[str, Any]:
        with self._lock:
            totals: dict[str, Any] = dict(self._totals) if self._totals else dict(
                samples=0, missed_samples=0, start_ns=0, last_ns=0, start_rss_bytes=0,
                last_rss_bytes=0, peak_rss_bytes=0, rss_sum_bytes=0.0, start_cpu_ns=0,
                last_cpu_ns=0, interval_ns=self.interval_ns, read_errno=0, sampler_cpu_ns=0)
            totals["phase"] = self._phase
            return totals

    def series(self) -> tuple[bytes, bytes, bytes]:
        with self._lock:
            samples = self._totals.get("samples", 0)
            stored = min(samples, self.capacity)
            oldest = 0 if samples < self.capacity else samples % self.capacity
            return tuple(  # type: ignore[return-value]
                (column[oldest:stored] + column[:oldest]).tobytes() if stored else b""
                for column in self._ring
            )



# ---- the Sampler facade ----


def _check_interval(interval: Any) -> int:
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real):
        raise TypeError(f"Sampler(): interval must be a number of seconds, not {type(interval).__name__}")
    seconds = float(interval)
    if not math.isfinite(seconds) or not (MIN_INTERVAL <= seconds <= MAX_INTERVAL):
        raise ValueError(
            f"Sampler(): interval must be from {MIN_INTERVAL:g} s (100 us) to {MAX_INTERVAL:g} s, "
            f"got {interval!r}"
        )
    return max(int(MIN_INTERVAL * 1e9), min(int(MAX_INTERVAL * 1e9), round(seconds * 1e9)))


def _check_capacity(capacity: Any, interval_ns: int) -> int:
    if capacity is None:
        wanted = math.ceil(_DEFAULT_RING_SECONDS * 1e9 / interval_ns)
        return max(_MIN_DEFAULT_CAPACITY, min(_MAX_DEFAULT_CAPACITY, wanted))
    if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral):
        raise TypeError(f"Sampler(): capacity must be an int or None, not {type(capacity).__name__}")
    ring = int(capacity)
    if not (2 <= ring <= MAX_CAPACITY):
        raise ValueError(f"Sampler(): capacity must be from 2 to {MAX_CAPACITY} samples, got {ring}")
    return ring


class Sampler:
    """Samples this process's RSS and CPU time in the background at a fixed cadence.

    ``interval`` is in seconds, from 100 us to 10 s (default 1 ms). ``capacity`` is how many samples
    the ring keeps for :meth:`series` (default: 60 s worth, from 1024 to 65536); the summary's peak
    and mean cover every sample, whether or not the ring kept it.

    On Linux a native thread that never takes the GIL reads ``/proc/self/statm`` and the process CPU
    clock, so it keeps sampling while C code holds the GIL. Elsewhere a psutil thread stands in;
    :func:`sampler_info` says which is in use.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with Sampler(interval=0.001) as sampler:
            agent.run(task)
        print(sampler.summary())
    """

    __slots__ = ("_core", "_source")

    def __init__(self, interval: float = DEFAULT_INTERVAL, capacity: int | None = None) -> None:
        interval_ns = _check_interval(interval)
        ring = _check_capacity(capacity, interval_ns)
        self._source = _source()
        if self._source == "native":
            self._core: Any = _native.Sampler(interval_ns, ring)
        else:
            self._core = _PsutilSamplerCore(interval_ns, ring)

    @property
    def interval(self) -> float:
        """Seconds between samples."""
        return self._core.interval_ns * 1e-9

    @property
    def capacity(self) -> int:
        """How many samples the ring keeps."""
        return int(self._core.capacity)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return bool(self._core.running)

    @property
    def source(self) -> str:
        """``"native"`` (the procfs thread) or ``"psutil"`` (the portable fallback)."""
        return self._source

    def start(self) -> "Sampler":
        """Take the first sample and start sampling. RuntimeError if already running."""
        self._core.start()
        return self

    def stop(self) -> ResourceSummary:
        """Stop sampling (joining the thread), take the last sample and return the summary.
        RuntimeError if not running."""
        self._core.stop()
        return self.summary()

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self._core.running:
            self._core.stop()

    def summary(self) -> ResourceSummary:
        """The summary of the last run, or of the run so far while sampling."""
        return _summary_from_totals(self._core.totals())

    def series(self) -> SampleSeries:
        """The samples the ring still holds, oldest first (see :class:`SampleSeries`)."""
        columns = []
        for raw in self._core.series():
            column = array.array("q")
            column.frombytes(raw)
            columns.append(column)
        return SampleSeries(*columns)

    def __del__(self) -> None:
        # The native core stops its own thread when freed; the fallback's thread must be told.
        core = getattr(self, "_core", None)
        if isinstance(core, _PsutilSamplerCore):
            core._stop.set()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Sampler {state} every {format_duration(self.interval)} "
                f"({self._source}), {self._core.totals()['samples']} samples>")


# ---- instantaneous and peak RSS ----


def _rss_fallback() -> int:
    """This process's resident set size in bytes, now (psutil)."""
    return _PsutilSamplerCore(int(DEFAULT_INTERVAL * 1e9), 2)._rss()


#: ``rss() -> int``: this process's resident set size in bytes, now. On Linux it is the native
#: function itself (one pread of ``/proc/self/statm``, no Python frame in between); else psutil.
rss: Callable[[], int] = _native.rss if _NATIVE_RSS else _rss_fallback


# When the kernel's high-water mark cannot be reset, reset_peak_rss() starts this sampler and
# peak_rss() reports its peak instead. Guarded by _peak_lock.
_peak_lock = threading.Lock()
_peak_fallback: Sampler | None = None
#: Interval of the fallback peak sampler, in seconds.
PEAK_FALLBACK_INTERVAL = 0.001


def _reset_kernel_peak() -> bool:
    if not hasattr(_native, "reset_peak_rss_hwm") or sys.platform != "linux":
        return False
    try:
        return bool(_native.reset_peak_rss_hwm())
    except OSError:
        return False


def _kernel_peak() -> int | None:
    if sys.platform == "linux":
        try:
            value = _native.status_field("VmHWM")
        except OSError:
            value = None
        if value is not None:
            return int(value)
    if resource is None:  # pragma: no cover
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window: :func:`peak_rss` then reports the peak since this call.

    On Linux this resets the kernel's high-water mark (writes ``5`` to ``/proc/self/clear_refs``)
    and returns True. Where that is not permitted it returns False and starts a background
    :class:`Sampler` (every 1 ms) whose peak :func:`peak_rss` reports instead; that peak can miss a
    spike shorter than the interval.
    """
    global _peak_fallback
    with _peak_lock:
        if _reset_kernel_peak():
            if _peak_fallback is not None:
                if _peak_fallback.running:
                    _peak_fallback.stop()
                _peak_fallback = None
            return True
        if _peak_fallback is None:
            _peak_fallback = Sampler(interval=PEAK_FALLBACK_INTERVAL, capacity=2)
        if _peak_fallback.running:
            _peak_fallback.stop()
        _peak_fallback.start()
        return False


def peak_rss() -> int:
    """The highest RSS in bytes since the last :func:`reset_peak_rss` (or since the process started):
    the kernel's ``VmHWM`` on Linux, else the fallback sampler's peak."""
    with _peak_lock:
        fallback = _peak_fallback
        if fallback is not None and fallback.running:
            return max(fallback.summary().peak_rss, rss())
    peak = _kernel_peak()
    return peak if peak is not None else rss()


# ---- handing freed memory back to the OS ----


class HeapTrim(NamedTuple):
    """What :func:`trim_heap` did: ``ran`` (False where the C library cannot trim its heap) and
    ``released_bytes`` (how far RSS fell across the call, from ``/proc/self/statm``; 0 where it
    cannot be read)."""

    ran: bool
    released_bytes: int


def trim_heap() -> HeapTrim:
    """Hand memory that was freed but is still resident back to the OS, where the allocator allows.

    With glibc this is ``malloc_trim(0)``: free pages inside the C heap (and the top of the heap)
    are returned to the kernel, so RSS stops counting memory that earlier code freed. Python's own
    small-object arenas are not touched: CPython returns an arena when it empties and keeps it
    while any object in it lives. The GIL is released during the call. Elsewhere (musl, macOS,
    Windows) it does nothing and returns ``HeapTrim(False, 0)``.

    :class:`~pyagentbench.instruments.observe.ResourceWindow` calls it before each benchmark's
    rounds, so their start RSS (the base of ``peak_rss``) is not inflated by what ran before.
    """
    native_trim = getattr(_native, "trim_heap", None)
    if native_trim is None:  # pragma: no cover - the native module always has it
        return HeapTrim(False, 0)
    ran, released = native_trim()
    return HeapTrim(bool(ran), int(released))


def sampler_info() -> dict[str, Any]:
    """Which sources the resource metrics use here.

    Keys: ``source`` (``"native"`` or ``"psutil"``), ``rss`` (where RSS comes from), ``cpu``
    (the CPU clock), ``thread`` (``"pthread, no GIL"`` or ``"python"``), ``peak`` (``"VmHWM"`` or
    ``"sampler"``: what :func:`peak_rss` reports), ``page_size`` (bytes),
    ``min_interval`` and ``max_interval`` (seconds).
    """
    source = _source()
    native = source == "native"
    with _peak_lock:
        fallback_active = _peak_fallback is not None and _peak_fallback.running
    return {
        "source": source,
        "rss": "/proc/self/statm (pread)" if native else "psutil.Process().memory_info()",
        "cpu": "CLOCK_PROCESS_CPUTIME_ID" if native else "time.process_time_ns()",
        "thread": "pthread, no GIL" if native else "python",
        "peak": "sampler" if fallback_active or sys.platform != "linux" else "VmHWM",
        "page_size": mmap.PAGESIZE,
        "min_interval": MIN_INTERVAL,
        "max_interval": MAX_INTERVAL,
    }


# ---- allocation counting ----


class AllocCounter(_native.AllocCounter):
    """Counts memory allocations while active, in CPython's RAW, MEM and OBJ allocator domains.

    Use as a context manager (``with AllocCounter() as c: ...``) or with :meth:`start` /
    :meth:`stop`; starting again resets the counts. Fields: ``allocs`` (malloc, calloc and a
    realloc that allocates), ``frees``, ``reallocs`` (of existing blocks) and ``bytes`` (requested
    by the allocations); :meth:`by_domain` splits them per domain.

    The hooks chain to the allocator they replace, so tracemalloc or memray keep working whether
    they start before or after; counters nest (an inner counter's allocations count in the outer
    one too). Allocations served from CPython's free lists (floats, tuples, lists, dicts, ...) do
    not reach the allocator and are not counted.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, int]:
        """The totals as plain ints."""
        return {"allocs": self.allocs, "frees": self.frees, "reallocs": self.reallocs,
                "bytes": self.bytes}

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return (f"<AllocCounter {state}: {self.allocs} allocs ({format_bytes(self.bytes)}), "
                f"{self.frees} frees, {self.reallocs} reallocs>")


#: Calls per counting pass in :func:`count_allocs` when ``loops`` is not given.
DEFAULT_COUNT_LOOPS = 100


def _counted_pass(fn: Callable[..., Any], args: tuple, kwargs: dict | None, loops: int,
                  out: array.array) -> tuple[int, int]:
    counter = _native.AllocCounter()
    counter.start()
    try:
        _native.time_rounds(fn, args, kwargs, loops, out)
    finally:
        counter.stop()
    return counter.allocs, counter.bytes


def _count_one_call(fn: Callable[..., Any], args: Sequence[Any] = (),
                    kwargs: Mapping[str, Any] | None = None) -> tuple[float, float, Any]:
    """Allocations and bytes of one call of a warm fn, and what it returned, for slow targets
    where count_allocs()'s passes would cost several calls: a counted pass of one call less a
    counted pass of none (the same native loop with zero rounds), so the loop's own constant
    allocations cancel."""
    call_args = tuple(args)
    call_kwargs = dict(kwargs) if kwargs else None
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        allocs_0, bytes_0 = _counted_pass(fn, call_args, call_kwargs, 1, array.array("q"))
        counter = _native.AllocCounter()
        out = array.array("q", bytes(8))
        counter.start()
        try:
            result = _native.time_rounds(fn, call_args, call_kwargs, 1, out)
        finally:
            counter.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
    return float(counter.allocs - allocs_0), float(counter.bytes - bytes_0), result


def count_allocs(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    loops: int = DEFAULT_COUNT_LOOPS,
) -> tuple[float, float]:
    """Return ``(allocs_per_call, bytes_per_call)`` of ``fn(*args, **kwargs)``.

    A counting pass separate from any timing: fn is called ``loops`` times to warm up, then ``loops`` and
    ``2 * loops`` times in the native call loop under an :class:`AllocCounter`, with the cyclic GC
    paused; the difference between the two passes divided by ``loops`` is the per-call figure, so
    the loop's own constant cost cancels. A function that allocates the same way every call gives
    exact integers. Coroutine functions are not supported.
    """
    if not callable(fn):
        raise TypeError(f"count_allocs(): fn must be callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError("count_allocs(): coroutine functions are not supported")
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"count_allocs(): args must be a tuple or list, not {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"count_allocs(): kwargs must be a mapping or None, not {type(kwargs).__name__}")
    if isinstance(loops, bool) or not isinstance(loops, numbers.Integral):
        raise TypeError(f"count_allocs(): loops must be an int, not {type(loops).__name__}")
    if loops < 1:
        raise ValueError(f"count_allocs(): loops must be >= 1, got {loops}")
    call_args = tuple(args)
    call_kwargs = dict(kwargs) if kwargs else None
    loops = int(loops)
    out = array.array("q", bytes(8))
    # Warm-up pass: first-call caches and free lists filled by the loop are not per-call costs.
    _native.time_rounds(fn, call_args, call_kwargs, loops, out)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        allocs_1, bytes_1 = _counted_pass(fn, call_args, call_kwargs, loops, out)
        allocs_2, bytes_2 = _counted_pass(fn, call_args, call_kwargs, 2 * loops, out)
    finally:
        if gc_was_enabled:
            gc.enable()
    return (allocs_2 - allocs_1) / loops, (bytes_2 - bytes_1) / loops
