"""Fuzz target: re-entrancy in the native Cache and CachedFunction (csrc/cache.c).

    python fuzz/fuzz_cache.py -max_total_time=600 [corpus dir]

Each input is a sequence of operations (set, get, pop, del, ``in``, ``len``, ``keys``, ``expire``,
``stats``, ``clear``, calls of a CachedFunction) on a small Cache, some with a TTL and a test clock,
with keys and values that fight back:
  - keys whose ``__hash__`` or ``__eq__`` clear the cache, store or delete other keys, raise, or
    change their hash after they were stored (a mutated ``dataclass(unsafe_hash=True)``);
  - values whose ``__del__`` (run when an eviction, expiry, pop or clear drops them) does the same;
  - a clock that mutates the cache, raises, or returns NaN, a huge number or a wrong type;
  - a CachedFunction's ``key=`` and function doing the same, and calling itself.

After every operation the cache must agree with itself: ``len(c) == len(c.keys()) ==
c.stats()["size"]`` and no more than ``maxsize``; once the hostile objects are gone a plain key set
is found again.

Allowed: FuzzUserError (raised by the fuzzer's own keys, values and callables, which must come
through unchanged), KeyError (a missing key), TypeError (an unhashable key), ValueError (a clock
returning a number out of range), RecursionError (a key nested too deep, a cached function
calling itself without end). A crash, a hang or any other exception fails the run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

from _harness import FuzzUserError, main  # noqa: E402

from pyagentbench import _native  # noqa: E402

ALLOWED = (FuzzUserError, KeyError, TypeError, ValueError, RecursionError)


class Context:
    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.cache: Any = None
        self.now = 0.0
        self.budget = 400  # hostile actions per input: re-entrant calls nest, this bounds them


@atheris.instrument_func
def mischief(ctx: Context, script: int) -> None:
    """One hostile action from inside a dunder, chosen by *script*."""
    ctx.budget -= 1
    if ctx.budget < 0:
        return
    c = ctx.cache
    op = script % 9
    try:
        if op == 0:
            c.clear()
        elif op == 1:
            c[script % 5] = script
        elif op == 2:
            c.pop(script % 5, None)
        elif op == 3:
            raise FuzzUserError("hostile dunder")
        elif op == 4:
            len(c)
        elif op == 5:
            c.get(script % 7)
        elif op == 6:
            c.set(("t", script % 3), script, ttl=0.5)
        elif op == 7:
            c.expire()
        else:
            c.keys()
    except (KeyError, TypeError, ValueError, RecursionError):
        pass


class Key:
    """A key whose hash can change after it is stored and whose __hash__/__eq__ fight back."""

    def __init__(self, ctx: Context, ident: int, hash_script: int, eq_script: int) -> None:
        self.ctx = ctx
        self.ident = ident
        self.hash_value = ident % 3  # few buckets: many __eq__ calls
        self.hash_script = hash_script
        self.eq_script = eq_script

    def __hash__(self) -> int:
        if self.hash_script & 1:
            mischief(self.ctx, self.hash_script >> 1)
        return self.hash_value

    def __eq__(self, other: object) -> bool:
        if self.eq_script & 1:
            mischief(self.ctx, self.eq_script >> 1)
        return isinstance(other, Key) and other.ident == self.ident

    def __repr__(self) -> str:
        return f"Key({self.ident})"


class Value:
    """A value whose __del__ (an eviction, expiry, pop or clear dropping it) fights back."""

    def __init__(self, ctx: Context, script: int) -> None:
        self.ctx = ctx
        self.script = script

    def __del__(self) -> None:
        if self.script & 1:
            try:
                mischief(self.ctx, self.script >> 1)
            except FuzzUserError:
                pass  # an exception from __del__ is only printed: keep the output readable


@atheris.instrument_func
def make_key(ctx: Context) -> Any:
    fdp = ctx.fdp
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        return fdp.ConsumeIntInRange(0, 6)
    if kind == 1:
        return ("t", fdp.ConsumeIntInRange(0, 2))
    if kind == 2:
        return [fdp.ConsumeIntInRange(0, 2)]  # unhashable
    return Key(ctx, fdp.ConsumeIntInRange(0, 6), fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 255))


@atheris.instrument_func
def make_value(ctx: Context) -> Any:
    if ctx.fdp.ConsumeBool():
        return Value(ctx, ctx.fdp.ConsumeIntInRange(0, 255))
    return ctx.fdp.ConsumeIntInRange(0, 100)


def check(c: Any) -> None:
    size = len(c)
    keys = c.keys()
    stats = c.stats()
    assert size == len(keys) == stats["size"], (size, len(keys), stats)
    if c.maxsize is not None:
        assert size <= c.maxsize, (size, c.maxsize)


@atheris.instrument_func
def one_op(ctx: Context, cached: Any) -> None:
    fdp, c = ctx.fdp, ctx.cache
    op = fdp.ConsumeIntInRange(0, 12)
    if op == 0:
        c[make_key(ctx)] = make_value(ctx)
    elif op == 1:
        c.set(make_key(ctx), make_value(ctx), ttl=fdp.PickValueInList([None, 0.5, 1.0, 1e-9]))
    elif op == 2:
        c.get(make_key(ctx))
    elif op == 3:
        c[make_key(ctx)]
    elif op == 4:
        c.pop(make_key(ctx), None) if fdp.ConsumeBool() else c.pop(make_key(ctx))
    elif op == 5:
        del c[make_key(ctx)]
    elif op == 6:
        make_key(ctx) in c
    elif op == 7:
        c.clear()
    elif op == 8:
        ctx.now += fdp.PickValueInList([0.0, 0.25, 0.6, 2.0])
        c.expire()
    elif op == 9:
        cached(make_key(ctx))
    elif op == 10:
        cached(make_key(ctx), k=make_value(ctx))
    elif op == 11:
        c.reset_stats()
    else:
        mischief(ctx, fdp.ConsumeIntInRange(0, 255))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    ctx = Context(fdp)
    clock_script = fdp.ConsumeIntInRange(0, 255)

    def clock() -> Any:
        if clock_script & 1 and ctx.budget > 0:
            mischief(ctx, clock_script >> 1)
        if clock_script % 31 == 7 and ctx.budget > 0:
            return fdp.PickValueInList([float("nan"), 1e300, "x", None])
        return ctx.now

    maxsize = fdp.PickValueInList([0, 1, 2, 3, 5, None])
    use_clock = fdp.ConsumeBool()
    ctx.cache = _native.Cache(maxsize, fdp.PickValueInList([None, 1.0]), clock=clock if use_clock else None)
    depth = [0]

    def func(*args: Any, **kwargs: Any) -> Any:
        if clock_script % 5 == 0 and depth[0] < 3:
            depth[0] += 1
            try:
                return cached(args[0] if args else 0)  # calls itself through the cache
            finally:
                depth[0] -= 1
        if clock_script % 7 == 1:
            mischief(ctx, clock_script)
        return make_value(ctx) if fdp.remaining_bytes() else 0

    key_func = None
    if fdp.ConsumeBool():
        def key_func(*args: Any, **kwargs: Any) -> Any:
            mischief(ctx, clock_script >> 2)
            return args[0] if args else 0
    cached = _native.CachedFunction(func, ctx.cache, key_func)

    for _ in range(fdp.ConsumeIntInRange(1, 40)):
        try:
            one_op(ctx, cached)
        except ALLOWED:
            pass
        budget, ctx.budget = max(ctx.budget, 0), 0  # quiet while the cache is compared with itself
        try:
            check(ctx.cache)
        finally:
            ctx.budget = budget
    ctx.budget = 0  # the hostile objects go quiet: the cache must work as a plain one now
    c = ctx.cache
    c.clear()
    if c.maxsize != 0:
        c["plain"] = 1
        assert c.get("plain") == 1 and len(c) == 1 and c.keys() == ["plain"], (c.keys(), len(c))
    check(c)


if __name__ == "__main__":
    main(test_one_input, [bytes((i * 7919 + j * 104729) % 251 for j in range(512)) for i in range(16)])
