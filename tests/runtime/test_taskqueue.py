"""TaskQueue: ordering, bounds and timeouts, close(), join(), Ctrl-C, threads, asyncio, leaks."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import gc
import queue
import random
import signal
import threading
import time
import weakref

import pytest

from pyagentbench import Histogram, QueueClosed, TaskQueue, now_ns
from leakcheck import rss_growth_bytes


def child_env() -> dict[str, str]:
    """The environment of a child interpreter: this sys.path, and a sanitizer build's runtime."""
    env = {"PYTHONPATH": ":".join(sys.path), "PYTHONFAULTHANDLER": "1"}
    names = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")
    env.update({name: os.environ[name] for name in names if name in os.environ})
    return env


def start_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_lower_priority_first_then_fifo():
    rng = random.Random(5)
    q = TaskQueue()
    items = [(rng.randint(-3, 3), i) for i in range(2000)]
    for priority, seq in items:
        q.put((priority, seq), priority)
    out = [q.get() for _ in range(len(items))]
    assert out == sorted(items)
    assert q.empty() and q.qsize() == 0


def test_float_and_large_priorities():
    q = TaskQueue()
    q.put("c", 2.5)
    q.put("a", -(2**70))
    q.put("b", 0.5)
    q.put("d", 2**70)
    q.put("z")
    assert [q.get_nowait() for _ in range(5)] == ["a", "z", "b", "c", "d"]


def test_int_and_float_priorities_keep_their_exact_order():
    # Issue 19: priorities were C doubles, so ints above 2**53 lost their order (2**53 + 1 came
    # out before 2**53). Python's own comparison of the same numbers is the reference.
    rng = random.Random(19)
    edges = [2**53, 2**53 + 1, 2**53 - 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63 - 2, -(2**63),
             -(2**63) + 1, -(2**53) - 1, 2**64, 2**70, -(2**70), 0, -1, 1]
    numbers = []
    for edge in edges:
        numbers += [edge, float(edge), edge + 0.5 if abs(edge) < 2**52 else edge]
    numbers += [rng.randint(-(2**63), 2**63 - 1) for _ in range(300)]
    numbers += [rng.randint(2**53 - 50, 2**53 + 50) for _ in range(100)]
    numbers += [float(rng.randint(2**53 - 50, 2**53 + 50)) for _ in range(100)]
    numbers += [rng.uniform(-1e20, 1e20) for _ in range(100)] + [rng.uniform(-1, 1) for _ in range(100)]
    numbers += [-1e-20, -2e-20, 1e-300, -1e-300, -0.0, 0.0, float("inf"), -float("inf"), 1e300, -1e300]
    items = [(p, i) for i, p in enumerate(numbers)]
    rng.shuffle(items)
    q = TaskQueue()
    for priority, seq in items:
        q.put((priority, seq), priority)
    out = [q.get_nowait() for _ in items]
    # put order is the shuffled order: equal priorities (2**53 and 2.0**53) come out FIFO.
    put_index = {item: i for i, item in enumerate(items)}
    assert out == sorted(items, key=lambda item: (item[0], put_index[item]))


def test_ints_beyond_int64_that_a_float_cannot_hold_are_refused():
    q = TaskQueue()
    for bad, bits in [(2**63 + 1, 64), (-(2**63) - 1, 64), (2**70 + 1, 71), (10**400, 1329), (-(10**5000), 16610)]:
        for put in (q.put, q.put_nowait):
            with pytest.raises(ValueError, match=rf"^put\(\): priority is an int of {bits} bits, beyond int64 "):
                put("x", bad)
        with pytest.raises(ValueError, match="use an int from -2\\*\\*63 to 2\\*\\*63 - 1, or a float"):
            asyncio.run(q.aput("x", bad))
    assert q.qsize() == 0 and q.stats()["puts"] == 0
    q.put("2**64", 2**64)  # beyond int64 but exactly a float: accepted, and ordered exactly
    q.put("max", 2**63 - 1)
    q.put("2**64 as a float", 2.0**64)
    assert [q.get_nowait() for _ in range(3)] == ["max", "2**64", "2**64 as a float"]


def test_bad_arguments_raise_clear_errors():
    q = TaskQueue()
    with pytest.raises(TypeError, match="priority"):
        q.put(1, "high")
    with pytest.raises(ValueError, match="NaN"):
        q.put(1, float("nan"))
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        q.get(timeout="1")
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError, match="unexpected keyword"):
        q.put(1, prio=2)
    with pytest.raises(ValueError, match="maxsize"):
        TaskQueue(-1)
    with pytest.raises(TypeError):
        TaskQueue("3")
    assert q.qsize() == 0


def test_full_and_empty_raise_the_standard_library_exceptions():
    q = TaskQueue(maxsize=2)
    assert q.maxsize == 2
    q.put(1)
    q.put_nowait(2, priority=1)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.02)
    assert q.get() == 1 and q.get() == 2
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.02)
    with pytest.raises(queue.Empty):
        q.get(True, 0)


def test_timeouts_wait_at_least_the_timeout():
    q = TaskQueue(maxsize=1)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - start >= 0.045
    q.put(1)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.05)
    assert time.monotonic() - start >= 0.045


def test_blocked_get_receives_an_item_put_later():
    q = TaskQueue()
    start_thread(lambda: (time.sleep(0.05), q.put("late")))
    assert q.get(timeout=5) == "late"


def test_blocked_put_proceeds_when_room_appears():
    q = TaskQueue(maxsize=1)
    q.put("first")
    start_thread(lambda: (time.sleep(0.05), q.get()))
    q.put("second", timeout=5)
    assert q.get_nowait() == "second"


def test_close_makes_put_raise_and_get_drain_then_raise():
    q = TaskQueue()
    q.put("a")
    q.put("b")
    q.close()
    assert q.closed
    with pytest.raises(QueueClosed):
        q.put("c")
    assert q.get() == "a"
    assert q.get_nowait() == "b"
    with pytest.raises(QueueClosed):
        q.get()
    with pytest.raises(QueueClosed):
        q.get_nowait()
    assert issubclass(QueueClosed, Exception)


def test_close_wakes_every_blocked_getter_and_putter():
    q = TaskQueue()
    results: list[str] = []
    lock = threading.Lock()

    def getter():
        try:
            q.get()
        except QueueClosed:
            with lock:
                results.append("get closed")

    full = TaskQueue(maxsize=1)
    full.put(0)

    def putter():
        try:
            full.put(1)
        except QueueClosed:
            with lock:
                results.append("put closed")

    threads = [start_thread(getter) for _ in range(4)] + [start_thread(putter) for _ in range(2)]
    time.sleep(0.1)
    assert results == []
    q.close()
    full.close()
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()
    assert sorted(results) == ["get closed"] * 4 + ["put closed"] * 2


def test_task_done_and_join():
    q = TaskQueue()
    for i in range(3):
        q.put(i)
    assert q.join(timeout=0.01) is False

    def worker():
        while True:
            try:
                q.get(timeout=0.2)
            except queue.Empty:
                return
            q.task_done()

    thread = start_thread(worker)
    assert q.join(timeout=5) is True
    thread.join(timeout=5)
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    q.put("pending")
    start_thread(lambda: (time.sleep(0.05), q.close()))
    assert q.join() is False


def _interrupt_main_after(delay: float, sent: list[float]) -> threading.Thread:
    main_id = threading.main_thread().ident

    def fire():
        time.sleep(delay)
        sent.append(time.monotonic())
        signal.pthread_kill(main_id, signal.SIGINT)

    return start_thread(fire)


@pytest.mark.parametrize("operation", ["get", "put", "join"])
def test_ctrl_c_interrupts_a_blocking_wait_promptly(operation):
    assert threading.current_thread() is threading.main_thread()
    q = TaskQueue(maxsize=1)
    if operation in ("put", "join"):
        q.put("occupies the only slot")
    call = {"get": q.get, "put": lambda: q.put("x"), "join": q.join}[operation]
    # Safety net: if the interrupt were ignored, close() ends the wait instead of hanging the test.
    start_thread(lambda: (time.sleep(3), q.close()))
    sent: list[float] = []
    _interrupt_main_after(0.1, sent)
    with pytest.raises(KeyboardInterrupt):
        call()
    raised = time.monotonic()
    assert sent, "the wait ended before the signal was sent"
    assert raised - sent[0] < 1.0


def test_four_producers_four_consumers_lose_and_duplicate_nothing():
    producers, consumers, per_producer = 4, 4, 250_000
    q = TaskQueue(maxsize=10_000)
    received: list[list[int]] = [[] for _ in range(consumers)]

    def produce(base):
        put = q.put
        for i in range(base, base + per_producer):
            put(i)

    def consume(out):
        get = q.get
        append = out.append
        try:
            while True:
                append(get())
        except QueueClosed:
            pass

    consumer_threads = [start_thread(consume, received[c]) for c in range(consumers)]
    producer_threads = [start_thread(produce, p * per_producer) for p in range(producers)]
    for t in producer_threads:
        t.join(timeout=60)
    q.close()
    for t in consumer_threads:
        t.join(timeout=60)
        assert not t.is_alive()
    total = producers * per_producer
    seen = bytearray(total)
    count = 0
    for chunk in received:
        for item in chunk:
            assert seen[item] == 0, f"duplicate {item}"
            seen[item] = 1
            count += 1
    assert count == total
    stats = q.stats()
    assert stats["puts"] == stats["gets"] == total
    assert stats["depth"] == 0 and 1 <= stats["max_depth"] <= 10_000
    assert stats["wait_ns"].count == total


def test_stats_report_depth_and_wait_times():
    q = TaskQueue()
    for i in range(5):
        q.put(i)
    time.sleep(0.02)
    for _ in range(3):
        q.get()
    stats = q.stats()
    assert (stats["puts"], stats["gets"], stats["depth"], stats["max_depth"]) == (5, 3, 2, 5)
    assert stats["unfinished"] == 5
    wait = stats["wait_ns"]
    assert isinstance(wait, Histogram)
    assert wait.count == 3
    assert wait.min >= 20_000_000 * 0.95
    q.get()
    assert stats["wait_ns"].count == 3, "stats() returns a snapshot"
    assert q.stats()["wait_ns"].count == 4


# ---- the wait histogram: sized to the waits recorded (issue 19) ----


def wait_counts_bytes(largest: int) -> int:
    """What the counts of a queue's wait histogram (1 ns to 1 hour, 3 figures: 2048 sub-buckets,
    halves of 1024) hold once `largest` is recorded: values below 2048 ns fill the first two
    halves, one per 1024; a value of bit length L >= 12 lies in bucket L - 11, the (L - 9)th half;
    the counts reach the end of that half, 8 bytes each."""
    halves = largest // 1024 + 1 if largest < 2048 else largest.bit_length() - 9
    return halves * 1024 * 8


def vm_status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024
    raise LookupError(field)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status (Linux)")
@pytest.mark.no_sanitizer(
    reason="ASan's allocator maps its own regions and redzones: address space does not follow the "
    "program's allocations")
def test_idle_queues_take_no_address_space_for_their_wait_histogram():
    """Each queue used to calloc its whole wait histogram when made: 33 half-buckets of 1024
    int64 counts, 264 KiB of address space a queue, 264 MiB per 1,000 (measured before: +268.5 KiB
    of VmSize a queue over 10,000). Now the counts come with the first get, and an idle queue is
    its object: ~0.5 KiB (its fields, a mutex, three conditions, the histogram's bookkeeping).
    Bound: 2 MiB per 1,000 queues (2 KiB a queue: the object with room for the allocator's own
    steps), measured over 10,000 so that heap and arena growth averages out."""
    gc.collect()
    before = vm_status_bytes("VmSize")
    queues = [TaskQueue() for _ in range(10_000)]
    per_thousand = (vm_status_bytes("VmSize") - before) / 10
    assert per_thousand < 2 * 1024 * 1024, per_thousand
    empty = Histogram().memory_bytes
    assert [q.stats()["wait_ns"].memory_bytes for q in queues[:3]] == [empty] * 3


def test_wait_percentiles_match_waits_bracketed_by_the_clock():
    """Each item's wait, from put to get, lies between two readings of the queue's own clock
    (now_ns): from put's return to get's call, and from put's call to get's return. The waits
    range from microseconds to 60 ms, so the counts grow as larger waits come; each percentile
    lies between the brackets of its rank (the k-th smallest wait is at least the k-th smallest
    lower bound and at most the k-th smallest upper bound), within the histogram's 10**-3 above.
    The counts held reach the largest wait's half-bucket and no further."""
    q = TaskQueue()
    sleeps = [0, 0.001, 0, 0.01, 0.003, 0.06, 0, 0.02, 0.0002]
    lows, highs = [], []
    for seconds in sleeps:
        a = now_ns()
        q.put(seconds)
        b = now_ns()
        if seconds:
            time.sleep(seconds)
        c = now_ns()
        assert q.get() == seconds
        d = now_ns()
        lows.append(c - b)
        highs.append(d - a)
    lows.sort()
    highs.sort()
    wait = q.stats()["wait_ns"]
    assert wait.count == len(sleeps) and wait.clamped == 0
    assert lows[-1] >= 60_000_000 * 0.999
    for p in (0, 10, 25, 50, 75, 90, 99, 100):
        rank = max(1, math.ceil(p / 100 * len(sleeps)))
        assert lows[rank - 1] <= wait.percentile(p) <= highs[rank - 1] * 1.001 + 1, p
    assert lows[-1] <= wait.max <= highs[-1]
    assert wait.memory_bytes - Histogram().memory_bytes == wait_counts_bytes(wait.max)
    assert wait_counts_bytes(wait.max) < 264 * 1024


def test_queue_holding_a_cycle_is_collected():
    class Job:
        pass

    q = TaskQueue()
    job = Job()
    job.queue = q
    q.put(job)
    ref = weakref.ref(job)
    del q, job
    gc.collect()
    assert ref() is None


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_one_million_put_get_keep_rss_flat():
    q = TaskQueue()
    put, get = q.put, q.get

    def op(n):
        for i in range(n // 2):
            put(i, i & 7)
            get()

    assert rss_growth_bytes(op, 1_000_000) < 4 * 1024 * 1024
    assert q.qsize() == 0


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_queues_created_and_freed_keep_rss_flat():
    def op(n):
        for _ in range(n):
            q = TaskQueue()
            q.put(object())
            q.stats()

    assert rss_growth_bytes(op, 20_000, batch=2_000) < 4 * 1024 * 1024


def test_subclass_and_repr():
    class Named(TaskQueue):
        pass

    q = Named(3)
    q.put(1)
    assert q.get() == 1
    assert "maxsize=3" in repr(q)


# ---- asyncio ----


def test_aget_does_not_block_the_event_loop():
    q = TaskQueue()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        threading.Timer(0.15, q.put, args=("from thread",)).start()
        item = await q.aget()
        tick_task.cancel()
        return item, ticks

    item, ticks = asyncio.run(main())
    assert item == "from thread"
    assert ticks >= 5


def test_aget_timeout_and_close():
    q = TaskQueue()

    async def main():
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.05)
        q.put("left")
        q.close()
        assert await q.aget() == "left"
        with pytest.raises(QueueClosed):
            await q.aget()
        with pytest.raises(QueueClosed):
            await q.aput("x")
        with pytest.raises(ValueError, match="timeout"):
            await q.aget(timeout=-1)

    asyncio.run(main())


def test_cancelled_aget_loses_no_item():
    q = TaskQueue()

    async def main():
        task = asyncio.create_task(q.aget())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        q.put("kept")
        await asyncio.sleep(0.15)
        return q.get_nowait()

    assert asyncio.run(main()) == "kept"


def test_aput_waits_for_room():
    q = TaskQueue(maxsize=1)
    q.put("first")

    async def main():
        threading.Timer(0.05, q.get).start()
        await q.aput("second", priority=1, timeout=5)
        with pytest.raises(queue.Full):
            await q.aput("third", timeout=0.02)
        return q.get_nowait()

    assert asyncio.run(main()) == "second"


def test_async_producers_and_consumers_round_trip():
    q = TaskQueue(maxsize=8)

    async def main():
        async def produce(base):
            for i in range(base, base + 200):
                await q.aput(i)

        async def consume(out):
            while True:
                try:
                    out.append(await q.aget())
                except QueueClosed:
                    return

        outs: list[list[int]] = [[], []]
        consumers = [asyncio.create_task(consume(o)) for o in outs]
        await asyncio.gather(produce(0), produce(200))
        q.close()
        await asyncio.gather(*consumers)
        return sorted(outs[0] + outs[1])

    assert asyncio.run(main()) == list(range(400))


# ---- fork (regression) ----


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_child_forked_while_threads_wait_can_use_the_queues():
    # Forked while threads wait in get(), put() and join(): the child inherits condition variables
    # that count waiters which do not exist there; signalling them once a child thread waits too
    # used to block the child forever.
    code = """if True:
        import os, sys, threading, time, warnings
        from pyagentbench import TaskQueue
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        empty, full, pending = TaskQueue(), TaskQueue(maxsize=1), TaskQueue()
        full.put("f0")
        pending.put("p0")
        for target in (empty.get, lambda: full.put("f1"), pending.join):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(0.3)  # all three waiting
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(3):
                    empty.put(1)
                    assert empty.get(timeout=1) == 1
                    got = []
                    t = threading.Thread(target=lambda: got.append(empty.get(timeout=5)))
                    t.start()
                    time.sleep(0.05)
                    empty.put(2)
                    t.join()
                    assert got == [2], got
                assert full.get(timeout=1) == "f0"
                t = threading.Thread(target=lambda: full.put("f2", timeout=5))
                t.start()
                time.sleep(0.05)
                assert full.get(timeout=5) == "f2"
                t.join()
                assert pending.get(timeout=1) == "p0"
                t = threading.Thread(target=pending.join)
                t.start()
                time.sleep(0.05)
                pending.task_done()
                t.join(5)
                assert not t.is_alive()
                assert empty.stats()["gets"] == 6
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
            os._exit(0)
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                print("child hung")
                sys.exit(1)
            time.sleep(0.02)
        empty.put("wake")
        full.get()
        pending.get()
        pending.task_done()
        print("child exit", os.waitstatus_to_exitcode(status))
    """
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "child exit 0", proc.stdout + proc.stderr


@pytest.mark.parametrize("bad, name", [("3", "str"), (2.0, "float"), (None, "NoneType"), (True, "bool")])
def test_maxsize_of_the_wrong_type_is_named(bad, name):
    with pytest.raises(TypeError, match=rf"^TaskQueue\(\): maxsize must be an int, not {name}$"):
        TaskQueue(maxsize=bad)
    with pytest.raises(TypeError, match="maxsize must be an int"):
        TaskQueue(bad)


def test_deeply_nested_payloads_pass_through_untouched():
    # Issue 19: the queue never hashes, compares or reprs an item (priorities are numbers), so a
    # payload nested 200,000 deep goes in and out, is collected with a cycle through the queue,
    # and is freed with the queue, without recursing in C.
    code = """if True:
        import gc
        from pyagentbench import TaskQueue
        deep = []
        for _ in range(200_000):
            deep = [deep]
        q = TaskQueue()
        q.put(deep, 1)
        q.put(deep, 0)
        deep.append(q)  # a cycle through the queue, for the collector
        assert q.get() is deep and "depth=1" in repr(q)
        del deep
        gc.collect()
        q.close()
        del q
        gc.collect()
        print("ok")
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
