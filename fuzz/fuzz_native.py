"""Fuzz target: every function and method of the C extension ``pyagentbench._native``, called with
random arguments of random types.

    python fuzz/fuzz_native.py -max_total_time=600 [corpus dir]

What is called is found by introspection, so a function or method added later is covered without
touching this file: every public callable of the module, every public type's constructor, and each
instance's public methods, properties and protocol slots (``len``, ``[]``, ``in``, ``with``,
calls, ``__get__``). Arguments are drawn from: ints at every boundary (2**31, 2**63, 2**64,
10**400), floats (NaN, the infinities, -0.0, subnormals), strings, bytes, buffers (array 'q', 'd'),
tuples nested 100000 deep, lists, dicts, None, objects whose ``__index__``, ``__float__``,
``__hash__``, ``__eq__``, ``__lt__``, ``__iter__``, ``__len__`` or ``__call__`` return the wrong
type, raise, or call back into a live native object (re-entrancy), and the live native objects
themselves.

Allowed exceptions (each documented by the method that raises it): TypeError, ValueError,
OverflowError, KeyError, RecursionError (a key nested past the recursion limit), OSError (no
procfs), RuntimeError (documented state errors: a Timer stopped twice, a Sampler started twice),
queue.Empty, queue.Full, QueueClosed, and FuzzUserError, which the fuzzer's own callables raise
and which must come through unchanged. A crash (libFuzzer reports the signal), a hang past
-timeout, a SystemError or any other exception fails the run.

Not called with random arguments, and why:
- the TaskQueue methods that wait (``get``, ``put``, ``join``, ``wait_not_empty``,
  ``wait_not_full``) would wait forever on an open queue with ``timeout=None``: they get random
  arguments on a closed queue (which never waits: QueueClosed or an immediate return), and on an
  open one only with ``block=False`` or a timeout of at most 10 ms;
- ``time_rounds``' ``loops`` between 10**5 and 2**63 is replaced by 10**5: that many calls are a
  long run, not a hang (its overflow paths above 2**63 keep their random value); its ``fn`` is
  always one of the fuzzer's callables, which stop (FuzzUserError) after a few hundred calls;
- ``clock_info``, which measures each clock for tens of milliseconds, runs in one of a hundred
  inputs that pick it;
- ``Sampler.start`` is followed by ``stop`` at the end of each input, and ``AllocCounter.start`` by
  ``stop``: a sampler thread or allocator hook left running would make every later input slower.
"""

from __future__ import annotations

import array
import gc
import inspect
import os
import queue
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

from _harness import FuzzUserError, main  # noqa: E402

from pyagentbench import _native  # noqa: E402

ALLOWED = (TypeError, ValueError, OverflowError, KeyError, RecursionError, OSError, RuntimeError,
           queue.Empty, queue.Full, _native.QueueClosed, FuzzUserError)

PROTOCOL = ("__enter__", "__exit__", "__getitem__", "__setitem__", "__delitem__", "__contains__",
            "__len__", "__call__", "__get__", "__iter__", "__next__")
#: Functions that measure for tens of milliseconds (clock_info times each clock many times): called
#: in one input of a hundred that picks them, or they would take most of the run.
SLOW = {"clock_info"}
BLOCKING = {("TaskQueue", name) for name in ("get", "put", "join", "wait_not_empty", "wait_not_full")}


def public_functions() -> dict[str, Callable[..., Any]]:
    return {name: obj for name, obj in vars(_native).items()
            if not name.startswith("_") and callable(obj) and not isinstance(obj, type)}


def public_types() -> dict[str, type]:
    return {name: obj for name, obj in vars(_native).items()
            if not name.startswith("_") and isinstance(obj, type) and not issubclass(obj, BaseException)}


def members(cls: type) -> list[str]:
    names = []
    for name in dir(cls):
        if name.startswith("__") and name not in PROTOCOL:
            continue
        if name.startswith("_") and not name.startswith("__"):
            continue
        if name in dir(object) and name not in PROTOCOL:
            continue
        names.append(name)
    return sorted(names)


FUNCTIONS = public_functions()
TYPES = public_types()
MEMBERS = {name: members(cls) for name, cls in TYPES.items()}

INTS = [0, 1, -1, 2, 3, 5, 10, 100, 2**31 - 1, 2**31, 2**32, 2**53, 2**53 + 1, 2**62, 2**63 - 1,
        2**63, 2**64 - 1, 2**64, -2**63, -2**63 - 1, 10**400, -10**400, 3_600_000_000_000]
FLOATS = [0.0, -0.0, 0.5, 1.5, 1e-9, 5e-324, 1e308, -1e308, float("inf"), float("-inf"),
          float("nan"), 2.0**63, 9.3e18, -1.0, 100.0, 0.001]


def deep_tuple(depth: int) -> tuple:
    value: Any = ()
    for _ in range(depth):
        value = (value,)
    return value


DEEP = [deep_tuple(10), deep_tuple(1000), deep_tuple(100_000)]


class State:
    """One input's live native objects, call budget and cleanup."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.live: list[Any] = []
        self.calls_left = 300  # calls of the fuzzer's own callables, per input

    def spend(self) -> None:
        self.calls_left -= 1
        if self.calls_left < 0:
            raise FuzzUserError("call budget spent")

    def cleanup(self) -> None:
        for obj in reversed(self.live):
            for name in ("stop", "close"):
                if type(obj).__name__ in ("Sampler", "AllocCounter", "Timer") and name == "stop" or \
                        type(obj).__name__ == "TaskQueue" and name == "close":
                    try:
                        getattr(obj, name)()
                    except ALLOWED:
                        pass
        self.live.clear()


class Hostile:
    """An object whose dunders misbehave as the input says: wrong types, FuzzUserError, or a call
    into a live native object (re-entrancy)."""

    def __init__(self, state: State, script: bytes) -> None:
        self.state = state
        self.script = script
        self.step = 0

    def _act(self, good: Any) -> Any:
        self.state.spend()
        op = self.script[self.step % len(self.script)] if self.script else 0
        self.step += 1
        if op % 6 == 0:
            raise FuzzUserError("hostile dunder")
        if op % 6 == 1 and self.state.live:
            reenter(self.state, self.state.live[op % len(self.state.live)], op)
        if op % 6 == 2:
            return "not a number"
        if op % 6 == 3:
            return 10**400
        return good

    def __index__(self) -> int:
        return self._act(7)  # type: ignore[no-any-return]

    def __int__(self) -> int:
        return self._act(7)  # type: ignore[no-any-return]

    def __float__(self) -> float:
        return self._act(0.25)  # type: ignore[no-any-return]

    def __hash__(self) -> int:
        return self._act(self.script[:1].__hash__())  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        return self._act(other is self)  # type: ignore[no-any-return]

    def __lt__(self, other: object) -> bool:
        return self._act(False)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._act(2)  # type: ignore[no-any-return]

    def __iter__(self) -> Any:
        return iter([self._act(1), self._act(2.5), self._act(self)])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._act(args[0] if args else 1.0)

    def __repr__(self) -> str:
        return "Hostile()"


@atheris.instrument_func
def reenter(state: State, obj: Any, op: int) -> None:
    """From inside a dunder: a quick call on a live object (clear a cache, put, record, stop...)."""
    names = [n for n in MEMBERS.get(type(obj).__name__, []) + MEMBERS.get(type(obj).__base__.__name__, [])
             if n in ("clear", "set", "pop", "get", "put_nowait", "get_nowait", "record", "reset",
                      "merge", "stop", "lap", "expire", "keys", "close", "__len__", "cache_clear")]
    if not names:
        return
    name = names[op % len(names)]
    if name == "get" and isinstance(obj, _native.TaskQueue):
        name = "get_nowait"  # get() would wait for an item forever
    args = {"set": (op, op), "pop": (op, None), "get": (op,), "put_nowait": (op, op),
            "record": (op,), "merge": (obj,)}.get(name, ())
    try:
        getattr(obj, name)(*args)
    except ALLOWED:
        pass


@atheris.instrument_func
def value(state: State, depth: int = 0) -> Any:
    fdp = state.fdp
    kind = fdp.ConsumeIntInRange(0, 19)
    if kind <= 3:
        return fdp.PickValueInList(INTS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-5, 2000)
    if kind <= 5:
        return fdp.PickValueInList(FLOATS) if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 6:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))
    if kind == 7:
        return fdp.PickValueInList([None, True, False, b"", b"\x00" * 8, bytearray(16)])
    if kind == 8:
        n = fdp.ConsumeIntInRange(0, 16)
        return array.array(fdp.PickValueInList(["q", "d", "i", "b"]), [1] * n)
    if kind == 9:
        return memoryview(array.array("q", [0] * fdp.ConsumeIntInRange(0, 8)))
    if kind == 10:
        return fdp.PickValueInList(DEEP)
    if kind == 11 and depth < 2:
        return tuple(value(state, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4)))
    if kind == 12 and depth < 2:
        return [value(state, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 13 and depth < 2:
        items = {}
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            key = fdp.PickValueInList(["lowest", "highest", "significant_figures", "clamp", "count",
                                       "min", "max", "mean", "m2", "counts", "clamped", "version",
                                       "clamped_above", "clamped_above_at", "x"])
            items[key] = value(state, depth + 1)
        return items
    if kind in (14, 15):
        return Hostile(state, fdp.ConsumeBytes(4))
    if kind == 16 and state.live:
        return fdp.PickValueInList(state.live)
    if kind == 17:
        return histogram_dict(state)
    return fdp.ConsumeIntInRange(0, 64)


def _histogram_dict() -> dict:
    h = _native.Histogram()
    for v in (1, 5, 1000, 10**6):
        h.record(v)
    return h.to_dict()  # type: ignore[no-any-return]


HISTOGRAM_DICT = _histogram_dict()


@atheris.instrument_func
def histogram_dict(state: State) -> dict:
    """A Histogram.to_dict() result, one field bent: near-valid input for from_dict()."""
    data = dict(HISTOGRAM_DICT, counts=[list(pair) for pair in HISTOGRAM_DICT["counts"]])
    fdp = state.fdp
    key = fdp.PickValueInList(sorted(data))
    data[key] = value(state, 2)
    if fdp.ConsumeBool():
        data["counts"] = [[value(state, 2), value(state, 2)] for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return data


@atheris.instrument_func
def arguments(state: State) -> tuple[list, dict]:
    fdp = state.fdp
    args = [value(state) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    kwargs = {}
    for _ in range(fdp.ConsumeIntInRange(0, 2) if fdp.ConsumeIntInRange(0, 3) == 0 else 0):
        kwargs[fdp.PickValueInList(["timeout", "block", "priority", "count", "ttl", "clock", "key",
                                    "maxsize", "cpu", "lowest", "highest", "significant_figures",
                                    "clamp", "default", "x"])] = value(state)
    return args, kwargs


def call(state: State, fn: Callable[..., Any], args: list, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except ALLOWED as exc:  # anything else (SystemError, AttributeError, ...) fails the run
        outcome(exc)
        return None


@atheris.instrument_func
def outcome(exc: BaseException) -> None:
    """A branch per exception type, so that libFuzzer sees a new outcome as new coverage (the
    extension's own C code is not instrumented: this harness's branches are the feedback)."""
    for kind in ALLOWED:
        if type(exc) is kind:
            return


@atheris.instrument_func
def defuse_blocking(state: State, obj: Any, name: str, args: list, kwargs: dict) -> tuple[list, dict]:
    """See the module docstring: a waiting TaskQueue method never waits forever."""
    if obj.closed or state.fdp.ConsumeBool():
        obj.close()
        return args, kwargs
    timeout = state.fdp.ConsumeProbability() * 0.01
    if name in ("put",):
        return args[:2], {"block": False} if state.fdp.ConsumeBool() else {"timeout": timeout}
    if name == "get":
        return [], {"block": False} if state.fdp.ConsumeBool() else {"timeout": timeout}
    return [timeout], {}


@atheris.instrument_func
def one_call(state: State) -> None:
    fdp = state.fdp
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice == 0:
        name = fdp.PickValueInList(sorted(FUNCTIONS))
        if name in SLOW and fdp.ConsumeIntInRange(0, 99) != 99:
            return
        args, kwargs = arguments(state)
        if name == "time_rounds":
            args = [Hostile(state, fdp.ConsumeBytes(4))] + args
            while len(args) < 5:
                args.append(value(state))
            if isinstance(args[3], int) and 10**5 < args[3] < 2**63:
                args[3] = 10**5
        call(state, FUNCTIONS[name], args, kwargs)
        return
    if choice <= 3 or not state.live:
        name = fdp.PickValueInList(sorted(TYPES))
        args, kwargs = arguments(state)
        if name == "CachedFunction" and fdp.ConsumeBool():
            args = [Hostile(state, fdp.ConsumeBytes(4)), _native.Cache(4)] + args[:1]
        if name == "Cache" and fdp.ConsumeBool() and "clock" in kwargs:
            kwargs["clock"] = Hostile(state, fdp.ConsumeBytes(4))
        obj = call(state, TYPES[name], args, kwargs)
        if obj is not None and type(obj).__module__ == _native.__name__:
            state.live.append(obj)
        return
    obj = fdp.PickValueInList(state.live)
    type_name = type(obj).__name__
    name = fdp.PickValueInList(MEMBERS[type_name])
    attr = inspect.getattr_static(type(obj), name, None)
    if attr is not None and not callable(attr) and hasattr(attr, "__get__") and name not in PROTOCOL:
        call(state, getattr, [obj, name], {})  # a property
        return
    args, kwargs = arguments(state)
    if (type_name, name) in BLOCKING:
        args, kwargs = defuse_blocking(state, obj, name, args, kwargs)
    bound = getattr(obj, name, None)
    if bound is None:
        return
    result = call(state, bound, args, kwargs)
    if result is not None and type(result).__module__ == _native.__name__ and result is not obj:
        state.live.append(result)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    state = State(fdp)
    try:
        for _ in range(fdp.ConsumeIntInRange(1, 12)):
            one_call(state)
    finally:
        state.cleanup()
    if fdp.ConsumeIntInRange(0, 15) == 15:  # (an exhausted input reads 0: keep the default cheap)
        gc.collect(1)  # tp_traverse/tp_clear of the cycles the calls made (young: not DEEP)


if __name__ == "__main__":
    main(test_one_input, [bytes([i]) * 32 for i in range(0, 256, 17)]
         + [bytes((i * 7919 + j * 104729) % 251 for j in range(1024)) for i in range(8)])
