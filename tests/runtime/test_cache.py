"""Cache, cached() and cache_key(): LRU and TTL behaviour (also against a reference model),
stats under threads, reference cycles, leaks."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from pyagentbench import Cache, cache_key, cached
from leakcheck import rss_growth_bytes


class FakeClock:
    """Monotonic seconds under the test's control."""

    def __init__(self) -> None:
        self.now = 1000

    def __call__(self) -> float:
        return self.now


# ---- mapping behaviour ----


def test_mapping_api():
    c = Cache(maxsize=10)
    assert (c.maxsize, c.ttl) == (10, None)
    c["a"] = 1
    c.set(("tuple", 2), 2)
    c.set(3, "three")
    assert c["a"] == 1 and c.get(("tuple", 2)) == 2 and c.get(3) == "three"
    assert c.get("missing") is None and c.get("missing", "dflt") == "dflt"
    assert "a" in c and "missing" not in c
    assert len(c) == 3
    with pytest.raises(KeyError):
        c["missing"]
    del c["a"]
    with pytest.raises(KeyError):
        del c["a"]
    assert c.pop(3) == "three"
    assert c.pop(3, None) is None
    with pytest.raises(KeyError):
        c.pop(3)
    assert c.keys() == [("tuple", 2)]
    c.clear()
    assert len(c) == 0 and c.keys() == []
    with pytest.raises(TypeError):
        c[["unhashable"]] = 1
    with pytest.raises(TypeError):
        c.get({})
    with pytest.raises(TypeError):
        hash(c)


def test_lru_eviction_order():
    c = Cache(maxsize=3)
    for key in "abc":
        c[key] = key
    assert c.get("a") == "a"  # a becomes most recent
    assert "b" in c  # membership does not reorder
    c["d"] = "d"  # evicts b, the least recently used
    assert c.keys() == ["c", "a", "d"]
    c["c"] = "C"  # update refreshes
    c["e"] = "e"
    assert c.keys() == ["d", "c", "e"]
    assert c.stats()["evictions"] == 2


def test_unbounded_and_zero_size():
    c = Cache(maxsize=None)
    for i in range(5000):
        c[i] = i
    assert len(c) == 5000 and c.maxsize is None
    nothing = Cache(maxsize=0)
    nothing["a"] = 1
    assert len(nothing) == 0 and nothing.get("a") is None


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="maxsize"):
        Cache(-1)
    with pytest.raises(TypeError, match="maxsize"):
        Cache("10")
    with pytest.raises(ValueError, match="ttl"):
        Cache(ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        Cache(ttl=float("inf"))
    with pytest.raises(TypeError, match="ttl"):
        Cache(ttl="5")
    with pytest.raises(TypeError, match="clock"):
        Cache(clock=5)
    c = Cache()
    with pytest.raises(ValueError, match="ttl"):
        c.set("k", 1, ttl=-1)
    with pytest.raises(TypeError):
        c.set("k")
    with pytest.raises(TypeError, match="unexpected keyword"):
        c.set("k", 1, expire=3)


# ---- TTL ----


def test_entries_expire_ttl_seconds_after_set():
    clock = FakeClock()
    c = Cache(ttl=10, clock=clock)
    c["a"] = 1
    clock.now += 9
    assert c["a"] == 1
    c.set("b", 2, ttl=30)
    clock.now += 1  # a is exactly 10 s old
    assert c.get("a") is None
    assert c["b"] == 2
    stats = c.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (2, 1, 1)
    c.set("a", 1)  # set again: lives another 10 s
    clock.now += 9
    assert c.keys() == ["b", "a"]
    clock.now += 1
    assert len(c) == 1 and c.keys() == ["b"]  # len and keys drop the expired a
    assert c.stats()["expirations"] == 2
    clock.now += 19  # b is exactly 30 s old
    assert len(c) == 0
    assert c.stats()["expirations"] == 3


def test_expire_removes_expired_entries_and_in_does_not_count():
    clock = FakeClock()
    c = Cache(clock=clock)
    c.set("short", 1, ttl=1)
    c.set("long", 2, ttl=100)
    c["forever"] = 3
    clock.now += 5
    assert "short" not in c
    c.set("short2", 1, ttl=1)
    clock.now += 5
    assert c.expire() == 1
    assert c.keys() == ["long", "forever"]
    stats = c.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"], stats["size"]) == (0, 0, 2, 2)
    with pytest.raises(KeyError):
        c.pop("short2")


def test_ttl_uses_the_real_monotonic_clock_by_default():
    c = Cache(ttl=0.05)
    c["k"] = "v"
    assert c.get("k") == "v"
    time.sleep(0.08)
    assert c.get("k") is None
    assert c.stats()["expirations"] == 1


def test_stats_and_hit_rate():
    c = Cache(maxsize=2)
    assert c.stats() == {
        "hits": 0, "misses": 0, "evictions": 0, "expirations": 0, "size": 0, "hit_rate": 0.0,
    }
    c["a"] = 1
    c.get("a")
    c.get("a")
    c.get("b")
    c["b"] = 2
    c["c"] = 3
    stats = c.stats()
    assert stats["hits"] == 2 and stats["misses"] == 1 and stats["evictions"] == 1
    assert stats["size"] == 2
    assert stats["hit_rate"] == pytest.approx(2 / 3)
    c.reset_stats()
    assert c.stats()["hits"] == 0 and c.stats()["size"] == 2


# ---- the reference model ----


class CacheModel(RuleBasedStateMachine):
    """Cache against an OrderedDict model of LRU order, TTL expiry and the stats."""

    keys = st.integers(min_value=0, max_value=7)

    @initialize(maxsize=st.integers(min_value=1, max_value=5), ttl=st.none() | st.integers(1, 5))
    def setup(self, maxsize, ttl):
        self.clock = FakeClock()
        self.cache = Cache(maxsize=maxsize, ttl=ttl, clock=self.clock)
        self.maxsize, self.ttl = maxsize, ttl
        self.model: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "evictions": 0, "expirations": 0}
        self.counter = 0

    def _expired(self, key) -> bool:
        return self.clock.now >= self.model[key][1]

    def _expire_all(self) -> None:
        for key in [k for k in self.model if self._expired(k)]:
            del self.model[key]
            self.stats["expirations"] += 1

    @rule(key=keys, ttl=st.none() | st.integers(1, 5))
    def set(self, key, ttl):
        self.counter += 1
        self.cache.set(key, self.counter, ttl=ttl)
        lifetime = ttl if ttl is not None else self.ttl
        expires = self.clock.now + lifetime if lifetime is not None else float("inf")
        self.model[key] = (self.counter, expires)
        self.model.move_to_end(key)
        while len(self.model) > self.maxsize:
            self.model.popitem(last=False)
            self.stats["evictions"] += 1

    @rule(key=keys)
    def get(self, key):
        expected = None
        if key in self.model:
            if self._expired(key):
                del self.model[key]
                self.stats["expirations"] += 1
                self.stats["misses"] += 1
            else:
                expected = self.model[key][0]
                self.model.move_to_end(key)
                self.stats["hits"] += 1
        else:
            self.stats["misses"] += 1
        assert self.cache.get(key) == expected

    @rule(key=keys)
    def contains(self, key):
        expected = key in self.model
        if expected and self._expired(key):
            del self.model[key]
            self.stats["expirations"] += 1
            expected = False
        assert (key in self.cache) is expected

    @rule(key=keys)
    def pop(self, key):
        expected = None
        if key in self.model:
            if self._expired(key):
                del self.model[key]
                self.stats["expirations"] += 1
            else:
                expected = self.model.pop(key)[0]
        assert self.cache.pop(key, None) == expected

    @rule(seconds=st.integers(0, 4))
    def advance(self, seconds):
        self.clock.now += seconds

    @rule()
    def expire(self):
        before = len(self.model)
        self._expire_all()
        assert self.cache.expire() == before - len(self.model)

    @rule()
    def keys_and_stats(self):
        self._expire_all()
        assert self.cache.keys() == list(self.model)
        stats = self.cache.stats()
        assert {k: stats[k] for k in self.stats} == self.stats
        assert stats["size"] == len(self.model) == len(self.cache)


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---- threads, cycles, leaks ----


def test_four_threads_on_the_same_keys_keep_exact_stats():
    c = Cache(maxsize=64)
    hot = list(range(8))
    for key in hot:
        c[key] = key
    rounds = 20_000

    def hammer(seed):
        get, set_ = c.get, c.set
        for i in range(rounds):
            key = hot[(i + seed) & 7]
            assert get(key) == key  # always present: a hit
            set_(key, key)
            assert get(100 + (i & 3)) is None  # never present: a miss
            c[f"t{seed}-{i & 15}"] = i  # churn: evicts other threads' churn keys only

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = c.stats()
    assert stats["hits"] == 4 * rounds
    assert stats["misses"] == 4 * rounds
    assert stats["size"] == 64 == len(c.keys())
    assert all(c.get(key) == key for key in hot)
    assert len(set(c.keys())) == 64


def test_reference_cycles_through_cached_values_are_collected():
    class Value:
        pass

    c = Cache()
    value = Value()
    value.cache = c
    c["self"] = value
    c[value] = "keyed by the value"
    refs = [weakref.ref(value)]
    del c, value

    @cached(maxsize=4)
    def make(n):
        v = Value()
        v.fn = make
        return v

    refs.append(weakref.ref(make(1)))
    refs.append(weakref.ref(make))
    del make
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_one_million_cache_operations_keep_rss_flat():
    c = Cache(maxsize=1000, ttl=3600)
    get, set_ = c.get, c.set

    def op(n):
        for i in range(n // 2):
            set_(i, i)
            get(i - 500)

    assert rss_growth_bytes(op, 1_000_000) < 4 * 1024 * 1024
    assert len(c) == 1000


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_one_million_cached_calls_keep_rss_flat():
    @cached(maxsize=256)
    def square(x, y=1):
        return x * x

    def op(n):
        for i in range(n // 2):
            square(i & 511)
            square(i & 511, y=2)

    assert rss_growth_bytes(op, 1_000_000) < 4 * 1024 * 1024


# ---- cached() ----


def test_cached_keys_like_lru_cache():
    calls = []

    @cached(maxsize=16)
    def add(a, b=0):
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    assert add(1) == 1 and add(1) == 1
    assert add(1, 2) == 3 and add(1, b=2) == 3 and add(1, b=2) == 3
    assert calls == [(1, 0), (1, 2), (1, 2)]  # positional and keyword calls differ, like lru_cache
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert add.__wrapped__(5, 5) == 10
    assert isinstance(add.cache, Cache) and add.cache.maxsize == 16
    assert add.cache.stats()["hits"] == 2
    add.cache_clear()
    assert len(add.cache) == 0


def test_cached_with_key_function_ttl_and_errors():
    clock_calls = []

    @cached(ttl=60, key=lambda user, request_id=None: user)
    def profile(user, request_id=None):
        clock_calls.append(user)
        if user == "bad":
            raise LookupError(user)
        return {"user": user}

    assert profile("ann", request_id=1) is profile("ann", request_id=2)
    assert clock_calls == ["ann"]
    with pytest.raises(LookupError):
        profile("bad")
    with pytest.raises(LookupError):
        profile("bad")  # exceptions are not cached
    assert profile.cache.ttl == 60


def test_cached_bare_methods_and_bad_arguments():
    @cached
    def double(x):
        return 2 * x

    assert double(4) == 8 and double.cache.maxsize == 1024

    class Service:
        def __init__(self):
            self.calls = 0

        @cached(maxsize=8)
        def lookup(self, key):
            self.calls += 1
            return key.upper()

    s = Service()
    assert s.lookup("a") == "A" and s.lookup("a") == "A" and s.calls == 1
    with pytest.raises(TypeError, match="maxsize"):
        cached(maxsize="big")
    with pytest.raises(ValueError, match="maxsize"):
        cached(maxsize=-1)
    with pytest.raises(TypeError, match="key"):
        cached(key=3)
    with pytest.raises(ValueError, match="ttl"):
        cached(ttl=0)
    with pytest.raises(TypeError, match="callable"):
        cached(maxsize=4)(42)
    with pytest.raises(TypeError):
        double([1])  # unhashable argument


def test_cached_async_function():
    calls = []

    @cached(maxsize=8)
    async def fetch(url, timeout=1):
        calls.append(url)
        await asyncio.sleep(0)
        return url.upper()

    async def main():
        first = await fetch("a")
        second = await fetch("a")
        third = await fetch("a", timeout=2)
        return first, second, third

    assert asyncio.run(main()) == ("A", "A", "A")
    assert calls == ["a", "a"]
    assert fetch.cache.stats()["hits"] == 1
    assert asyncio.iscoroutinefunction(fetch) and fetch.__name__ == "fetch"


# ---- cache_key() ----


def test_cache_key_is_a_stable_sha256_of_canonical_json():
    digest = cache_key("prompt", 3, model="m", options={"b": 1, "a": [1, 2.5, None]})
    canonical = json.dumps(
        {"args": ["prompt", 3], "kwargs": {"model": "m", "options": {"a": [1, 2.5, None], "b": 1}}},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert cache_key(model="m", x=1) == cache_key(x=1, model="m")
    assert cache_key(1) != cache_key("1") != cache_key([1])
    assert cache_key("é") == cache_key("é")


@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_cache_key_is_the_same_in_another_process():
    args = ("summarise", {"temperature": 0.2, "tools": ["a", "b"]})
    code = (
        "import sys; from pyagentbench import cache_key; "
        "print(cache_key('summarise', {'temperature': 0.2, 'tools': ['a', 'b']}, seed=7))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path),
             **{name: os.environ[name] for name in SANITIZER_VARIABLES if name in os.environ}},
    )
    assert out.stdout.strip() == cache_key(*args, seed=7)


def test_cache_key_names_the_bad_argument():
    with pytest.raises(TypeError, match="argument 1"):
        cache_key("ok", object())
    with pytest.raises(TypeError, match="keyword argument 'when'"):
        cache_key(when={1, 2})


# ---- removal while Python code runs (regressions) ----


#: Passed on to child interpreters, so that a sanitizer build's children load its runtime too.
SANITIZER_VARIABLES = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (a crash must not take pytest down with it)."""
    env = {"PYTHONPATH": ":".join(sys.path), "PYTHONFAULTHANDLER": "1"}
    env.update({name: os.environ[name] for name in SANITIZER_VARIABLES if name in os.environ})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
    )


@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_eviction_runs_no_key_code_and_leaves_a_consistent_cache():
    # Eviction used to delete k1 from the dict by calling k1.__hash__ again; a lookup made from
    # there found an entry unlinked from the LRU list but still in the dict, and crashed. Entries
    # now leave the dict by their stored hash and identity: k1's __hash__ is not called at all.
    code = """if True:
        from pyagentbench import Cache
        c = Cache(maxsize=1)
        seen = []
        class K:
            armed = False
            def __hash__(self):
                if self.armed:
                    self.armed = False
                    seen.append((c.get(self, "absent"), len(c), c.keys() == [self]))
                return 1
        k1, k2 = K(), K()
        c[k1] = "v1"
        k1.armed = True
        c[k2] = "v2"
        assert seen == [] and k1.armed, seen
        assert c.keys() == [k2] and len(c) == 1 and c.get(k2) == "v2", (c.keys(), len(c))
        assert c.stats()["evictions"] == 1, c.stats()
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("through", ["cache", "cached"])
@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_threads_evicting_keys_with_python_hash_do_not_crash(through):
    # Frozen-dataclass keys hash in Python, so the GIL can switch inside an eviction's dict deletion.
    code = f"""if True:
        import dataclasses, sys, threading, time
        from pyagentbench import Cache, cached
        sys.setswitchinterval(1e-6)
        @dataclasses.dataclass(frozen=True)
        class Key:
            a: int
        keys = [Key(i) for i in range(8)]
        c = Cache(maxsize=4)
        f = cached(maxsize=4)(lambda k: k.a)
        through = {through!r}
        stop = False
        def writer():
            i = 0
            while not stop:
                if through == "cache":
                    c[keys[i % 8]] = i
                else:
                    f(keys[i % 8])
                i += 1
        def reader():
            i = 0
            while not stop:
                if through == "cache":
                    c.get(keys[i % 8])
                else:
                    f(keys[(i * 3) % 8])
                i += 1
        ts = [threading.Thread(target=writer), threading.Thread(target=reader),
              threading.Thread(target=reader)]
        for t in ts:
            t.start()
        time.sleep(1.5)
        stop = True
        for t in ts:
            t.join()
        cache = c if through == "cache" else f.cache
        assert len(cache) == len(cache.keys()) <= 4
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


class FlakyKey:
    """A key whose __hash__ raises once when armed (as a transient failure in Python code would)."""

    def __init__(self, h: int) -> None:
        self.h = h
        self.fail = False

    def __hash__(self) -> int:
        if self.fail:
            self.fail = False
            raise RuntimeError("transient hash failure")
        return self.h


class ArmingKey:
    """A key whose __hash__ arms another key's failure (for the dict deletion that follows)."""

    def __init__(self, victim: FlakyKey) -> None:
        self.victim = victim

    def __hash__(self) -> int:
        if self.victim is not None:
            self.victim.fail, self.victim = True, None
        return 8


def test_eviction_does_not_hash_the_evicted_key_again():
    c = Cache(maxsize=1)
    k1 = FlakyKey(7)
    c[k1] = 1
    c[ArmingKey(k1)] = 2  # arms k1's __hash__ to fail, then evicts k1
    assert k1.fail  # never called: the eviction used the stored hash
    k1.fail = False
    assert len(c) == 1 and len(c.keys()) == 1 and c.get(k1) is None
    assert c.stats()["evictions"] == 1


def test_pop_and_del_hash_the_key_once_for_the_lookup_only():
    c = Cache()
    k = FlakyKey(7)
    c[k] = "v"

    class ArmOnEq:  # equal to k; its comparison arms k's __hash__ to fail
        def __hash__(self):
            return 7

        def __eq__(self, other):
            k.fail = True
            return other is k

    assert c.pop(ArmOnEq()) == "v" and k.fail and len(c) == 0 and c.keys() == []
    k.fail = False
    c[k] = "v"
    del c[ArmOnEq()]
    assert k.fail and len(c) == 0 and c.keys() == []


def test_expiry_does_not_hash_the_expired_key_again():
    clock = FakeClock()
    c = Cache(ttl=1, clock=clock)
    k = FlakyKey(7)
    c[k] = "v"
    clock.now += 5
    k.fail = True
    assert c.expire() == 1 and k.fail
    assert (c.stats()["expirations"], c.stats()["size"]) == (1, 0) and c.keys() == []


@dataclasses.dataclass(unsafe_hash=True)
class MutableKey:
    x: int


def test_a_key_whose_hash_changed_after_storing_is_still_evicted():
    # Issue 19: removal re-hashed the key; a key mutated after insertion left the LRU list but
    # stayed in the dict, counted against maxsize for ever and pushed out one live entry each time.
    c = Cache(maxsize=2)
    k = MutableKey(1)
    c[k] = "a"
    k.x = 2  # hash(k) is no longer the hash it was stored under
    for i in range(10):
        c[i] = i
    assert c.keys() == [8, 9] and len(c) == 2 and c.stats()["size"] == 2
    assert c.stats()["evictions"] == 9


def test_a_mutated_key_equal_to_another_removes_the_right_entries():
    c = Cache(maxsize=10)
    k1, k2 = MutableKey(1), MutableKey(2)
    c[k1], c[k2] = "one", "two"
    k1.x = 2  # k1 now equals k2 and hashes like it: a lookup with k1 finds k2's entry, as in a dict
    assert c.pop(k1) == "two" and c.keys() == [k1] and len(c) == 1
    for i in range(20):
        c[i] = i
    assert c.keys() == list(range(10, 20)) and len(c) == 10  # k1's entry was evicted, not lost


def test_a_mutated_key_counts_against_maxsize_until_evicted_or_cleared():
    c = Cache(maxsize=3)
    k = MutableKey(1)
    c[k] = "a"
    k.x = 5
    assert c.get(k) is None and k not in c  # looked up by its new hash: absent, as in a dict
    c[k] = "b"  # stored again under the new hash: two entries, both counted
    assert len(c) == 2 and c.keys() == [k, k]
    c.clear()
    assert len(c) == 0 and c.keys() == []


@pytest.mark.parametrize("seconds", [1e300, -1e300, 9.3e9, -9.3e9, float("nan"), float("inf")])
def test_test_clock_out_of_int64_nanoseconds_raises_value_error(seconds):
    c = Cache(ttl=1, clock=lambda: seconds)
    with pytest.raises(ValueError, match="Cache clock"):
        c["k"] = 1
    assert len(Cache(ttl=1, clock=lambda: 9.2e9)) == 0  # the edge of the range still works


@pytest.mark.no_sanitizer(
    reason="its child gets a fresh environment, without the ASan preload the build needs")
def test_calling_a_cleared_cached_function_raises_instead_of_crashing():
    # The GC's tp_clear empties a CachedFunction; a call reaching it afterwards (any call goes
    # through vectorcall) must raise, not call a NULL function.
    code = """if True:
        import ctypes
        from pyagentbench import cached
        from pyagentbench._native import CachedFunction
        get_slot = ctypes.pythonapi.PyType_GetSlot
        get_slot.restype, get_slot.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
        Py_tp_clear = 51
        tp_clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(get_slot(CachedFunction, Py_tp_clear))
        f = cached()(lambda x: x)
        assert f(1) == 1
        assert tp_clear(f) == 0
        for call in (lambda: f(2), lambda: f(x=3), lambda: f.__call__(4), lambda: f(1)):
            try:
                call()
            except RuntimeError as e:
                assert "cleared" in str(e), e
            else:
                raise AssertionError("no error")
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cache_key_refuses_non_str_dict_keys_that_json_would_merge():
    with pytest.raises(TypeError, match=r"argument 0 has a dict key 1 of type int; dict keys must be str"):
        cache_key({1: "a"})
    assert cache_key({"1": "a"})  # the string key is fine
    with pytest.raises(TypeError, match="keyword argument 'opts'.*key None of type NoneType"):
        cache_key(opts=[{"a": {None: 1}}])
    with pytest.raises(TypeError, match="key True of type bool"):
        cache_key("x", ({"a": 1, True: 2},))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_cache_key_refuses_nan_and_infinity(bad):
    with pytest.raises(ValueError, match="argument 0 contains NaN or an infinite float"):
        cache_key(bad)
    with pytest.raises(ValueError, match="keyword argument 'p'"):
        cache_key(p={"t": [1.0, bad]})


def test_cache_key_still_reports_circular_values():
    a = []
    a.append(a)
    with pytest.raises(ValueError, match="argument 0 cannot be serialised: Circular reference"):
        cache_key(a)


def test_cache_repr_shows_size_bound_ttl_and_counts():
    c = Cache(maxsize=1024)
    for k in "abc":
        c[k] = k
    c.get("a"), c.get("a"), c.get("zz")
    assert repr(c) == "<Cache size=3/1024 ttl=None hits=2 misses=1>"
    assert repr(Cache(None, ttl=5)) == "<Cache size=0/unbounded ttl=5.0 hits=0 misses=0>"

    @cached(maxsize=8)
    def f(x):
        return x

    f(1)
    assert repr(f.cache) == "<Cache size=1/8 ttl=None hits=0 misses=1>"


# ---- deep recursion (issue 19): RecursionError, never a crash ----


def test_tuple_keys_nested_deeper_than_the_recursion_limit_raise_recursion_error():
    # hash() of a tuple nested 200,000 deep overflows the C stack in CPython itself (dicts and
    # functools.lru_cache crash on it too); every way a key enters a Cache raises RecursionError.
    code = """if True:
        from pyagentbench import Cache, cached
        key = ()
        for _ in range(200_000):
            key = (key,)
        c = Cache()
        f = cached(lambda x: 1)
        g = cached(key=lambda x: x)(lambda x: 1)
        ops = [lambda: c.set(key, 1), lambda: c.__setitem__(key, 1), lambda: c.get(key),
               lambda: key in c, lambda: c.pop(key, None), lambda: c.__delitem__(key),
               lambda: f(key), lambda: g(key), lambda: Cache(maxsize=0).set(key, 1),
               lambda: c.set(("flat", "outer", key), 1)]
        for op in ops:
            try:
                op()
            except RecursionError as exc:
                assert "Cache key" in str(exc), exc
            else:
                raise AssertionError("no RecursionError")
        shallow = ()
        for _ in range(100):
            shallow = (shallow,)
        c[shallow] = "ok"  # nesting within the limit is an ordinary key
        assert c[shallow] == "ok" and f(shallow) == 1 and len(c) == 1
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_keys_whose_hash_or_eq_recurse_deeply_raise_recursion_error():
    code = """if True:
        from pyagentbench import Cache, cached
        class DeepHash:
            def __init__(self, n): self.n = n
            def __hash__(self): return hash(DeepHash(self.n - 1)) if self.n else 0
        class DeepEq:
            def __init__(self, n): self.n = n
            def __hash__(self): return 0
            def __eq__(self, other):
                return DeepEq(self.n - 1) == DeepEq(self.n - 1) if self.n else True
        c = Cache()
        f = cached(lambda x: 1)
        for op in (lambda: c.set(DeepHash(100_000), 1), lambda: c.get(DeepHash(100_000)),
                   lambda: f(DeepHash(100_000))):
            try:
                op()
            except RecursionError:
                pass
            else:
                raise AssertionError("no RecursionError")
        c[DeepEq(100_000)] = "deep"  # compared with the stored key on every later hash match
        for op in (lambda: c.get(DeepEq(0)), lambda: c.set(DeepEq(0), 1), lambda: DeepEq(0) in c):
            try:
                op()
            except RecursionError:
                pass
            else:
                raise AssertionError("no RecursionError")
        assert len(c) == 1 and c.stats()["size"] == 1
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_a_cached_function_recursing_deeply_raises_recursion_error_like_lru_cache():
    # Each level of a cached function calling itself passes through the native wrapper's C frame:
    # counted like a call through functools.lru_cache's wrapper, so a recursion limit under which
    # lru_cache raises RecursionError makes cached() raise it too (it used to overflow the stack).
    code = """if True:
        import functools, sys
        sys.setrecursionlimit(20_000)
        from pyagentbench import cached
        @functools.lru_cache(maxsize=None)
        def lru_depth(n):
            return lru_depth(n - 1) + 1 if n else 0
        @cached(maxsize=None)
        def depth(n):
            return depth(n - 1) + 1 if n else 0
        for f in (lru_depth, depth):
            try:
                f(300_000)
            except RecursionError:
                pass
            else:
                raise AssertionError("no RecursionError")
        depth.cache_clear()
        assert depth(50) == 50  # the cache still works afterwards (CPython 3.12 counts each level
        # against its C recursion limit too, so a deeper check would test the interpreter)
        print("ok")
    """
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
