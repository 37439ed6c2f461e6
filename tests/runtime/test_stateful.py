"""Stateful tests: the native Cache, TaskQueue and Histogram against plain-Python models.

hypothesis drives random sequences of operations against each native object and a model whose
answer is known by reasoning: an OrderedDict LRU with per-entry expiry times on a controlled clock,
heapq with a sequence number for FIFO ties, and the exact sorted list of recorded values. Any
divergence fails with the shortest sequence hypothesis can find.

Two settings profiles, chosen by the environment variable PYAGENTBENCH_STATEFUL_PROFILE:
``quick`` (the default; a few seconds per machine in the normal suite) and ``long``, which the
fuzz stage runs (`nox -s fuzz`): at least 10,000 steps per machine, counted and checked by the
last test of this file.
"""

from __future__ import annotations

import collections
import heapq
import math
import os
import queue

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pyagentbench import Cache, Histogram, QueueClosed, TaskQueue

PROFILE_ENV = "PYAGENTBENCH_STATEFUL_PROFILE"
settings.register_profile("stateful-quick", max_examples=25, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("stateful-long", max_examples=220, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get(PROFILE_ENV, "quick")
if PROFILE not in ("quick", "long"):
    raise ValueError(f"{PROFILE_ENV} must be 'quick' or 'long', not {PROFILE!r}")
SETTINGS = settings.get_profile(f"stateful-{PROFILE}")
#: Steps each machine must have run in the long profile.
LONG_STEPS = 10_000

STEPS: collections.Counter = collections.Counter()


# ---- Cache vs an LRU + TTL model ----

KEYS = st.one_of(st.integers(0, 7), st.sampled_from(["a", "b", "c"]), st.tuples(st.integers(0, 2)))
NO_EXPIRY = None


def to_ns(seconds: float) -> int:
    """Seconds to ns as the cache converts its clock and TTLs: an IEEE double product, truncated."""
    return int(seconds * 1e9)


class CacheMachine(RuleBasedStateMachine):
    """Native Cache vs an OrderedDict (least recent first) of key -> [value, expires_ns or None]."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.maxsize: int | None = None
        self.cache: Cache | None = None
        self.model: collections.OrderedDict = collections.OrderedDict()
        self.stats = dict(hits=0, misses=0, evictions=0, expirations=0)

    @precondition(lambda self: self.cache is None)
    @rule(maxsize=st.sampled_from([0, 1, 2, 3, 5, None]), ttl=st.sampled_from([None, 0.5, 2.0]))
    def create(self, maxsize: int | None, ttl: float | None) -> None:
        self.maxsize, self.ttl = maxsize, ttl
        self.cache = Cache(maxsize, ttl, clock=lambda: self.now)

    def step(self) -> None:
        STEPS["Cache"] += 1

    def now_ns(self) -> int:
        return to_ns(self.now)

    def expired(self, key: object) -> bool:
        expires = self.model[key][1]
        return expires is not None and self.now_ns() >= expires

    def drop_if_expired(self, key: object) -> bool:
        """What every lookup does first: an expired entry is removed and counted."""
        if key in self.model and self.expired(key):
            del self.model[key]
            self.stats["expirations"] += 1
            return True
        return False

    def expire_all(self) -> int:
        gone = [k for k in self.model if self.expired(k)]
        for k in gone:
            del self.model[k]
        self.stats["expirations"] += len(gone)
        return len(gone)

    @precondition(lambda self: self.cache is not None)
    @rule(key=KEYS, value=st.integers(), ttl=st.sampled_from(["default", None, 0.25, 1.0, 1e-9, 1e10]))
    def set(self, key: object, value: int, ttl: object) -> None:
        self.step()
        if ttl == "default":
            self.cache.set(key, value)
            ttl = self.ttl
        else:
            self.cache.set(key, value, ttl=ttl)
            ttl = self.ttl if ttl is None else ttl
        if self.maxsize == 0:
            return
        ttl_ns = None if ttl is None or ttl > 9e9 else to_ns(ttl)
        expires = None if ttl_ns is None else self.now_ns() + ttl_ns
        if key in self.model:  # found, expired or not: the entry takes the new value
            self.model[key] = [value, expires]
            self.model.move_to_end(key)
            return
        self.model[key] = [value, expires]
        while self.maxsize is not None and len(self.model) > self.maxsize:
            self.model.popitem(last=False)
            self.stats["evictions"] += 1

    @precondition(lambda self: self.cache is not None)
    @rule(key=KEYS)
    def get(self, key: object) -> None:
        self.step()
        got = self.cache.get(key, "missing")
        self.drop_if_expired(key)
        if key in self.model:
            self.model.move_to_end(key)
            self.stats["hits"] += 1
            assert got == self.model[key][0]
        else:
            self.stats["misses"] += 1
            assert got == "missing"

    @precondition(lambda self: self.cache is not None)
    @rule(key=KEYS, subscript=st.booleans())
    def pop(self, key: object, subscript: bool) -> None:
        self.step()
        self.drop_if_expired(key)
        expected = self.model.pop(key, ["missing"])[0]
        if subscript:
            if expected == "missing":
                with pytest.raises(KeyError):
                    del self.cache[key]
            else:
                del self.cache[key]
        else:
            assert self.cache.pop(key, "missing") == expected

    @precondition(lambda self: self.cache is not None)
    @rule(key=KEYS)
    def contains(self, key: object) -> None:
        self.step()
        got = key in self.cache
        self.drop_if_expired(key)
        assert got == (key in self.model)

    @precondition(lambda self: self.cache is not None)
    @rule(seconds=st.sampled_from([0.0, 0.001, 0.1, 0.25, 0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.step()
        self.now += seconds

    @precondition(lambda self: self.cache is not None)
    @rule()
    def expire(self) -> None:
        self.step()
        assert self.cache.expire() == self.expire_all()

    @precondition(lambda self: self.cache is not None)
    @rule()
    def clear(self) -> None:
        self.step()
        self.cache.clear()
        self.model.clear()

    @precondition(lambda self: self.cache is not None)
    @rule()
    def reset_stats(self) -> None:
        self.step()
        self.cache.reset_stats()
        self.stats = dict.fromkeys(self.stats, 0)

    @invariant()
    def agrees(self) -> None:
        if self.cache is None:
            return
        keys = self.cache.keys()  # drops expired entries first, as len() and stats() do
        self.expire_all()
        assert keys == list(self.model)
        assert len(self.cache) == len(self.model)
        stats = self.cache.stats()
        assert {k: stats[k] for k in self.stats} == self.stats
        assert stats["size"] == len(self.model)


# ---- TaskQueue vs heapq with FIFO ties ----

PRIORITIES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 + 1, 2.0**53, 2**63 - 1, -2**63, 2**64, 0.5, -0.0, 1e300,
                     float("inf"), float("-inf")]),
    st.floats(allow_nan=False, min_value=-4, max_value=4),
)


class TaskQueueMachine(RuleBasedStateMachine):
    """Native TaskQueue vs heapq of (priority, put order, item): lowest first, FIFO among equals."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: TaskQueue | None = None
        self.heap: list = []
        self.seq = 0
        self.puts = self.gets = self.done = self.max_depth = 0
        self.closed = False

    @precondition(lambda self: self.queue is None)
    @rule(maxsize=st.sampled_from([0, 1, 3, 8]))
    def create(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue = TaskQueue(maxsize)

    @precondition(lambda self: self.queue is not None)
    @rule(priority=PRIORITIES, use_put=st.booleans())
    def put(self, priority: float, use_put: bool) -> None:
        STEPS["TaskQueue"] += 1
        item = object()
        full = self.maxsize and len(self.heap) >= self.maxsize
        put = (lambda: self.queue.put(item, priority, block=False)) if use_put else \
            (lambda: self.queue.put_nowait(item, priority))
        if self.closed:
            with pytest.raises(QueueClosed):
                put()
            return
        if full:
            with pytest.raises(queue.Full):
                put()
            return
        put()
        heapq.heappush(self.heap, (priority, self.seq, item))
        self.seq += 1
        self.puts += 1
        self.max_depth = max(self.max_depth, len(self.heap))

    @precondition(lambda self: self.queue is not None)
    @rule()
    def get(self) -> None:
        STEPS["TaskQueue"] += 1
        if not self.heap:
            with pytest.raises(QueueClosed if self.closed else queue.Empty):
                self.queue.get_nowait()
            return
        got = self.queue.get_nowait()
        assert got is heapq.heappop(self.heap)[2]
        self.gets += 1

    @precondition(lambda self: self.queue is not None)
    @rule()
    def task_done(self) -> None:
        STEPS["TaskQueue"] += 1
        if self.done >= self.puts:
            with pytest.raises(ValueError):
                self.queue.task_done()
            return
        self.queue.task_done()
        self.done += 1

    @precondition(lambda self: self.queue is not None and not self.closed)
    @rule()
    def close(self) -> None:
        STEPS["TaskQueue"] += 1
        self.queue.close()
        self.closed = True

    @invariant()
    def agrees(self) -> None:
        if self.queue is None:
            return
        assert self.queue.qsize() == len(self.heap)
        assert self.queue.empty() == (not self.heap)
        assert self.queue.full() == bool(self.maxsize and len(self.heap) >= self.maxsize)
        stats = self.queue.stats()
        assert (stats["puts"], stats["gets"], stats["depth"], stats["max_depth"], stats["unfinished"]) == (
            self.puts, self.gets, len(self.heap), self.max_depth, self.puts - self.done)
        assert stats["wait_ns"].count == self.gets


# ---- Histogram vs the exact sorted values ----

HIGHEST = 10**7


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class HistogramMachine(RuleBasedStateMachine):
    """Native Histogram(highest=10**7, clamp=True) vs the exact list of (clamped) values."""

    def __init__(self) -> None:
        super().__init__()
        self.histogram: Histogram | None = None
        self.values: list[int] = []
        self.clamped = 0

    @precondition(lambda self: self.histogram is None)
    @rule(significant_figures=st.integers(1, 4))
    def create(self, significant_figures: int) -> None:
        self.figures = significant_figures
        self.histogram = Histogram(highest=HIGHEST, significant_figures=significant_figures)

    @precondition(lambda self: self.histogram is not None)
    @rule(value=st.one_of(st.integers(0, 2000), st.integers(0, HIGHEST), st.integers(-5, 2 * HIGHEST)),
          count=st.integers(1, 5))
    def record(self, value: int, count: int) -> None:
        STEPS["Histogram"] += 1
        self.histogram.record(value, count)
        held = min(max(value, 0), HIGHEST)
        self.values.extend([held] * count)
        self.clamped += count if held != value else 0

    @precondition(lambda self: self.histogram is not None)
    @rule(values=st.lists(st.integers(0, HIGHEST), max_size=50))
    def record_many(self, values: list[int]) -> None:
        STEPS["Histogram"] += 1
        self.histogram.record_many(values)
        self.values.extend(values)

    @precondition(lambda self: self.histogram is not None)
    @rule(values=st.lists(st.integers(0, HIGHEST), max_size=20))
    def merge(self, values: list[int]) -> None:
        STEPS["Histogram"] += 1
        other = Histogram(highest=HIGHEST, significant_figures=self.figures)
        other.record_many(values)
        self.histogram.merge(other)
        self.values.extend(values)

    @precondition(lambda self: self.histogram is not None)
    @rule(via_dict=st.booleans())
    def copy(self, via_dict: bool) -> None:
        STEPS["Histogram"] += 1
        h = self.histogram
        self.histogram = Histogram.from_dict(h.to_dict()) if via_dict else h.copy()

    @precondition(lambda self: self.histogram is not None)
    @rule()
    def reset(self) -> None:
        STEPS["Histogram"] += 1
        self.histogram.reset()
        self.values.clear()
        self.clamped = 0

    @invariant()
    def agrees(self) -> None:
        h = self.histogram
        if h is None:
            return
        values = sorted(self.values)
        assert h.count == len(values)
        assert h.clamped == self.clamped
        if not values:
            assert (h.min, h.max, h.percentile(50)) == (0, 0, 0)
            return
        assert (h.min, h.max) == (values[0], values[-1])
        assert h.mean == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-9)
        bound = 10.0**-self.figures
        for p in (0, 1, 25, 50, 90, 99, 99.9, 100):
            exact = exact_percentile(values, p)
            got = h.percentile(p)
            assert abs(got - exact) <= bound * exact, (p, got, exact)


for machine in (CacheMachine, TaskQueueMachine, HistogramMachine):
    machine.TestCase.settings = SETTINGS

TestCache = CacheMachine.TestCase
TestTaskQueue = TaskQueueMachine.TestCase
TestHistogram = HistogramMachine.TestCase


@pytest.mark.skipif(PROFILE != "long", reason=f"counts the long profile's steps ({PROFILE_ENV}=long)")
def test_long_profile_ran_enough_steps():
    """Runs last in this file: each machine above ran at least LONG_STEPS steps."""
    print(f"stateful steps: {dict(STEPS)}")
    for name in ("Cache", "TaskQueue", "Histogram"):
        assert STEPS[name] >= LONG_STEPS, (name, STEPS[name])
