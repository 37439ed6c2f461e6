"""The runtime's data structures beside the anchors they must beat, in the same run.

Each benchmark call runs the operation LOOPS times from a Python loop (the same loop for ours and
the anchor), so the per-call overhead of pytest-benchmark does not swamp operations of tens of
nanoseconds.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time

import cachetools
import hdrh.histogram
import pytest

from pyagentbench import Cache, Histogram, QueueClosed, TaskQueue, cached

LOOPS = 1000


def quick(group: str) -> pytest.MarkDecorator:
    """One benchmark marker: the comparison group and a short time budget."""
    return pytest.mark.benchmark(group=group, max_time=0.2, min_rounds=5)

KEYS = [f"key-{i}" for i in range(LOOPS)]

#: benchmarks/aa_compare.py sets this to inject a known slowdown (0.2: each call of
#: test_taskqueue_put_get spins for 20% of its own time after it), to check that compare finds it.
SLOWDOWN_ENV = "PYAGENTBENCH_AA_SLOWDOWN"


def slowed(fn):
    """fn, made slower by the factor in $PYAGENTBENCH_AA_SLOWDOWN (fn itself when it is unset)."""
    factor = float(os.environ.get(SLOWDOWN_ENV) or 0)
    if factor <= 0:
        return fn
    clock = time.perf_counter_ns

    def slow():
        start = clock()
        fn()
        deadline = clock() + int((clock() - start) * factor)
        while clock() < deadline:
            pass

    return slow


# ---- TaskQueue: put + get ----


@quick("taskqueue put+get")
def test_priorityqueue_put_get(benchmark):
    benchmark.extra_info["anchor"] = True
    q: queue.PriorityQueue = queue.PriorityQueue()
    put, get = q.put, q.get

    def run():
        for i in range(LOOPS):
            put((0, i))
            get()

    benchmark(run)


@quick("taskqueue put+get")
def test_taskqueue_put_get(benchmark):
    benchmark.extra_info["target"] = "<= 0.15x"
    q = TaskQueue()
    put, get = q.put, q.get

    def run():
        for i in range(LOOPS):
            put(i, 0)
            get()

    benchmark(slowed(run))


# ---- TaskQueue: 2 producers + 2 consumers ----

ITEMS_PER_PRODUCER = 10_000


def _two_by_two(make_queue, put_item, closing, is_end):
    """Moves 2 x ITEMS_PER_PRODUCER items through a fresh queue with 2 producer and 2 consumer
    threads; returns the number of items consumed. closing(q) ends the consumers: each stops at an
    item for which is_end(item) is true, or at QueueClosed."""
    q = make_queue()
    consumed = [0, 0]

    def produce(base):
        put = q.put
        for i in range(base, base + ITEMS_PER_PRODUCER):
            put_item(put, i)

    def consume(slot):
        get = q.get
        n = 0
        try:
            while True:
                if is_end(get()):
                    break
                n += 1
        except QueueClosed:
            pass
        consumed[slot] = n

    consumers = [threading.Thread(target=consume, args=(s,)) for s in range(2)]
    producers = [threading.Thread(target=produce, args=(b * ITEMS_PER_PRODUCER,)) for b in range(2)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join()
    closing(q)
    for t in consumers:
        t.join()
    assert sum(consumed) == 2 * ITEMS_PER_PRODUCER
    return sum(consumed)


def _close_priorityqueue(q):
    for _ in range(2):
        q.put((1, None))  # sorts after every (0, i) item


@pytest.mark.benchmark(group="taskqueue 2 producers + 2 consumers")
def test_priorityqueue_two_by_two(benchmark):
    benchmark.extra_info["anchor"] = True

    def run():
        return _two_by_two(
            queue.PriorityQueue,
            lambda put, i: put((0, i)),
            _close_priorityqueue,
            lambda item: item[1] is None,
        )

    benchmark.pedantic(run, rounds=15, warmup_rounds=2)


@pytest.mark.benchmark(group="taskqueue 2 producers + 2 consumers")
def test_taskqueue_two_by_two(benchmark):
    benchmark.extra_info["target"] = ">= 3x"

    def run():
        return _two_by_two(TaskQueue, lambda put, i: put(i, 0), TaskQueue.close, lambda item: False)

    benchmark.pedantic(run, rounds=15, warmup_rounds=2)


# ---- Cache.get hit ----


def bench_hits(benchmark, lookup):
    """Call lookup once per key (filling or warming it), then time rounds of LOOPS hits."""
    for key in KEYS:
        lookup(key)

    def run():
        for key in KEYS:
            lookup(key)

    benchmark(run)


def filled(cache):
    for key in KEYS:
        cache[key] = key
    return cache


@functools.lru_cache(maxsize=LOOPS * 2)
def _lru_identity(key):
    return key


@quick("cache get hit vs lru_cache")
def test_lru_cache_hit(benchmark):
    benchmark.extra_info["anchor"] = True
    bench_hits(benchmark, _lru_identity)


@quick("cache get hit vs lru_cache")
def test_cache_get_hit(benchmark):
    benchmark.extra_info["target"] = "<= 1.5x"
    c = filled(Cache(maxsize=LOOPS * 2))
    bench_hits(benchmark, c.get)
    assert c.stats()["misses"] == 0


@quick("cache get hit vs cachetools.TTLCache")
def test_ttlcache_hit(benchmark):
    benchmark.extra_info["anchor"] = True
    bench_hits(benchmark, filled(cachetools.TTLCache(maxsize=LOOPS * 2, ttl=3600)).get)


@quick("cache get hit vs cachetools.TTLCache")
def test_cache_get_hit_with_ttl(benchmark):
    benchmark.extra_info["target"] = ">= 10x"
    c = filled(Cache(maxsize=LOOPS * 2, ttl=3600))
    bench_hits(benchmark, c.get)
    assert c.stats()["misses"] == 0


# ---- cached() hit ----


@quick("cached() hit vs lru_cache wrapper")
def test_lru_cache_wrapper_hit(benchmark):
    benchmark.extra_info["anchor"] = True

    @functools.lru_cache(maxsize=LOOPS * 2)
    def lookup(key):
        return key

    bench_hits(benchmark, lookup)


@quick("cached() hit vs lru_cache wrapper")
def test_cached_hit(benchmark):
    benchmark.extra_info["target"] = "<= 1.5x"

    @cached(maxsize=LOOPS * 2)
    def lookup(key):
        return key

    bench_hits(benchmark, lookup)
    assert lookup.cache.stats()["misses"] == LOOPS


# ---- Histogram.record ----

VALUES = [(i * 7919) % 10_000_000 + 1 for i in range(LOOPS)]


@quick("histogram record vs hdrhistogram")
def test_hdrhistogram_record_value(benchmark):
    benchmark.extra_info["anchor"] = True
    h = hdrh.histogram.HdrHistogram(1, 3_600_000_000_000, 3)
    record = h.record_value

    def run():
        for v in VALUES:
            record(v)

    benchmark(run)


@quick("histogram record vs hdrhistogram")
def test_histogram_record(benchmark):
    benchmark.extra_info["target"] = ">= 15x"
    h = Histogram(1, 3_600_000_000_000, 3)
    record = h.record

    def run():
        for v in VALUES:
            record(v)

    benchmark(run)
