"""AgentPool: lending, limits, acquire timeout, idle recycling and lifetime retirement on a test clock."""

import threading
import time

import pytest

from pyagentbench import AgentPool


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Worker:
    def __init__(self):
        self.closed = False

    def __call__(self, payload):
        return payload * 2

    def close(self):
        self.closed = True


def test_acquire_release_reuses_agents_and_counts():
    pool = AgentPool(Worker, initial_size=1, max_size=2)
    a = pool.acquire()
    b = pool.acquire()
    assert a is not b
    pool.release(a)
    assert pool.acquire() is a
    pool.release(a)
    pool.release(b)
    s = pool.stats()
    assert (s["active"], s["idle"], s["created"], s["destroyed"]) == (0, 2, 2, 0)
    with pytest.raises(ValueError, match="not acquired"):
        pool.release(Worker())


def test_context_manager_and_execute():
    pool = AgentPool(Worker, max_size=1)
    with pool.agent() as a:
        assert a(2) == 4
        assert pool.stats()["active"] == 1
    assert pool.execute(5) == 10
    assert pool.stats()["active"] == 0


def test_past_max_size_acquire_waits_then_times_out():
    pool = AgentPool(Worker, max_size=1, acquire_timeout=0.05)
    held = pool.acquire()
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="max_size"):
        pool.acquire()
    assert time.perf_counter() - start >= 0.05
    threading.Timer(0.05, pool.release, args=(held,)).start()
    assert pool.acquire(timeout=5) is held
    assert pool.stats()["waits"] == 2


def test_never_more_than_max_size_lent():
    pool = AgentPool(Worker, max_size=3)
    lent = [0]
    peak = [0]
    lock = threading.Lock()

    def use():
        for _ in range(50):
            with pool.agent():
                with lock:
                    lent[0] += 1
                    peak[0] = max(peak[0], lent[0])
                time.sleep(0.0005)
                with lock:
                    lent[0] -= 1

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 3 and pool.stats()["created"] == 3


def test_idle_agents_are_recycled_down_to_initial_size():
    clock = Clock()
    pool = AgentPool(Worker, initial_size=1, max_size=3, idle_timeout=10, clock=clock)
    agents = [pool.acquire() for _ in range(3)]
    for a in agents:
        pool.release(a)
    clock.now = 5
    assert pool.reap() == 0
    clock.now = 10
    assert pool.reap() == 2
    s = pool.stats()
    assert (s["idle"], s["destroyed"]) == (1, 2)
    assert sum(a.closed for a in agents) == 2


def test_old_agents_are_retired():
    clock = Clock()
    pool = AgentPool(Worker, max_size=2, max_lifetime=60, clock=clock)
    a = pool.acquire()
    clock.now = 61
    pool.release(a)
    assert a.closed and pool.stats()["destroyed"] == 1
    b = pool.acquire()
    assert b is not a


def test_utilization_is_time_weighted():
    clock = Clock()
    pool = AgentPool(Worker, max_size=2, clock=clock)
    a = pool.acquire()
    clock.now = 10  # 1 of 2 lent for 10 s
    pool.release(a)
    clock.now = 20  # none lent for 10 s
    assert pool.stats()["utilization"] == pytest.approx(25.0)


def test_close_closes_idle_agents_and_refuses_acquire():
    pool = AgentPool(Worker, initial_size=2, max_size=2)
    agents = [pool.acquire(), pool.acquire()]
    pool.release(agents[0])
    pool.close()
    assert agents[0].closed and not agents[1].closed
    pool.release(agents[1])
    assert agents[1].closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire()


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"max_size": 0}, ValueError), ({"initial_size": 11}, ValueError), ({"max_size": "2"}, TypeError),
     ({"idle_timeout": -1}, ValueError), ({"acquire_timeout": "1"}, TypeError)],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        AgentPool(Worker, **kwargs)
    with pytest.raises(TypeError, match="factory"):
        AgentPool(3)


def test_idle_agents_are_reaped_on_release_and_stats_too():
    clock = Clock()
    pool = AgentPool(Worker, max_size=3, idle_timeout=10, clock=clock)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    clock.now = 10
    pool.release(b)  # a has idled 10 s: reaped here, not only on the next acquire()
    assert a.closed and not b.closed
    clock.now = 20
    s = pool.stats()  # b has idled 10 s
    assert b.closed and (s["idle"], s["destroyed"]) == (0, 2)


def test_retiring_old_agents_keeps_initial_size():
    clock = Clock()
    pool = AgentPool(Worker, initial_size=2, max_size=3, max_lifetime=60, clock=clock)
    a = pool.acquire()
    clock.now = 61
    pool.release(a)  # retired, and both initial agents are past max_lifetime
    assert a.closed
    s = pool.stats()
    assert s["idle"] == 2 and s["destroyed"] == 2 and s["created"] == 4
    b = pool.acquire()
    assert not b.closed and b is not a


def test_double_release_says_already_released():
    pool = AgentPool(Worker, max_size=2)
    a = pool.acquire()
    pool.release(a)
    with pytest.raises(ValueError, match="already released"):
        pool.release(a)
    with pytest.raises(ValueError, match="not acquired from this pool"):
        pool.release(Worker())
    clock = Clock()
    old = AgentPool(Worker, max_size=2, max_lifetime=1, clock=clock)
    b = old.acquire()
    clock.now = 2
    old.release(b)  # retired
    with pytest.raises(ValueError, match="already released"):
        old.release(b)
