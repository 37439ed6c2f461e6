"""TaskQueue: ordering, bounds and timeouts, close(), join(), Ctrl-C, threads, asyncio, leaks."""

from __future__ import annotations

import asyncio
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

from pyagentbench import Histogram, QueueClosed, TaskQueue
from leakcheck import rss_growth_bytes


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
        env={"PYTHONPATH": ":".join(sys.path), "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "child exit 0", proc.stdout + proc.stderr


@pytest.mark.parametrize("bad, name", [("3", "str"), (2.0, "float"), (None, "NoneType"), (True, "bool")])
def test_maxsize_of_the_wrong_type_is_named(bad, name):
    with pytest.raises(TypeError, match=rf"^TaskQueue\(\): maxsize must be an int, not {name}$"):
        TaskQueue(maxsize=bad)
    with pytest.raises(TypeError, match="maxsize must be an int"):
        TaskQueue(bad)
