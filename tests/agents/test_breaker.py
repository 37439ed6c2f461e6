"""CircuitBreaker: the closed/open/half-open state machine on a controlled clock."""

import asyncio
import threading

import pytest

from pyagentbench.agents.breaker import CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Down(Exception):
    pass


def fail():
    raise Down("down")


def ok():
    return "ok"


def make(**kwargs):
    clock = Clock()
    kwargs.setdefault("failure_threshold", 3)
    kwargs.setdefault("reset_timeout", 10.0)
    return CircuitBreaker(clock=clock, **kwargs), clock


def trip(breaker, n):
    for _ in range(n):
        with pytest.raises(Down):
            breaker.call(fail)


def test_opens_after_threshold_consecutive_failures_only():
    breaker, _ = make()
    trip(breaker, 2)
    assert breaker.call(ok) == "ok"  # a success resets the streak
    trip(breaker, 2)
    assert breaker.state == "closed"
    trip(breaker, 1)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == pytest.approx(10.0)
    assert breaker.stats() == {
        "state": "open",
        "calls": 6,
        "successes": 1,
        "failures": 5,
        "rejections": 1,
        "times_opened": 1,
        "consecutive_failures": 3,
    }


def test_open_rejects_until_reset_timeout_then_half_open_closes_on_success():
    breaker, clock = make()
    trip(breaker, 3)
    clock.now += 9.99
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.now += 0.01
    assert breaker.state == "half_open"
    assert breaker.call(ok) == "ok"
    assert breaker.state == "closed"
    assert [(t.old, t.new) for t in breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert [t.time for t in breaker.transitions] == [1000.0, 1010.0, 1010.0]


def test_half_open_failure_reopens_and_restarts_the_timeout():
    breaker, clock = make()
    trip(breaker, 3)
    clock.now += 10
    trip(breaker, 1)
    assert breaker.state == "open"
    clock.now += 5
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == pytest.approx(5.0)
    assert breaker.times_opened == 2


def test_half_open_limits_trial_calls():
    breaker, clock = make(half_open_max_calls=2)
    trip(breaker, 3)
    clock.now += 10
    breaker.allow()
    breaker.allow()
    with pytest.raises(CircuitOpenError, match="half-open"):
        breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.allow()  # closed again: no limit


def test_unexpected_exceptions_pass_through_without_counting():
    breaker, _ = make(expected_exceptions=Down)
    for _ in range(5):
        with pytest.raises(KeyError):
            breaker.call(lambda: {}["x"])
    assert breaker.state == "closed" and breaker.failures == 0


def test_decorator_sync_and_async():
    breaker, clock = make(failure_threshold=1)

    @breaker
    def sync(x):
        if x < 0:
            raise Down
        return x

    @breaker
    async def coro(x):
        if x < 0:
            raise Down
        return x

    assert sync(1) == 1 and sync.breaker is breaker
    assert asyncio.run(coro(2)) == 2
    with pytest.raises(Down):
        asyncio.run(coro(-1))
    with pytest.raises(CircuitOpenError):
        sync(1)
    with pytest.raises(CircuitOpenError):
        asyncio.run(coro(1))
    async def plain(x):
        return x

    clock.now += 10
    assert asyncio.run(breaker.call(plain, 3)) == 3  # call() on a coroutine function gives a coroutine
    assert breaker.state == "closed"


def test_listeners_see_every_transition():
    breaker, clock = make(failure_threshold=1)
    seen = []
    breaker.add_listener(lambda t: seen.append((t.old, t.new)))
    trip(breaker, 1)
    clock.now += 10
    breaker.call(ok)
    breaker.reset()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    trip(breaker, 1)
    breaker.reset()
    assert seen[-1] == ("open", "closed") and breaker.state == "closed"


def test_thread_safe_counters():
    breaker = CircuitBreaker(failure_threshold=10**9)

    def hammer():
        for i in range(5000):
            try:
                breaker.call(fail if i % 2 else ok)
            except Down:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (breaker.calls, breaker.successes, breaker.failures) == (20000, 10000, 10000)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"failure_threshold": 0}, ValueError),
        ({"failure_threshold": 1.5}, TypeError),
        ({"reset_timeout": -1}, ValueError),
        ({"reset_timeout": "1"}, TypeError),
        ({"half_open_max_calls": 0}, ValueError),
        ({"expected_exceptions": (int,)}, TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        CircuitBreaker(**kwargs)
