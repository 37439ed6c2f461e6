"""LRU + TTL cache: the native :class:`Cache`, the :func:`cached` decorator and :func:`cache_key`.

``Cache(maxsize=1024, ttl=None, *, clock=None)`` maps any hashable key to a value. Beyond
``maxsize`` entries the least recently used is evicted (``maxsize=None``: unbounded). An entry set
with a TTL (the cache's ``ttl``, or ``set(key, value, ttl=...)``) expires ``ttl`` seconds after it was
set, on the monotonic clock; an expired entry counts as a miss, and is removed when it is next
looked up, by :meth:`Cache.expire`, or before ``len()``, ``keys()`` and ``stats()`` answer.
``clock`` replaces the clock with a callable returning seconds, for tests; it is consulted only when
set, so the default lookup never calls Python code.

Lookups (``get``, ``c[key]``) move the entry to most recently used and count a hit or a miss;
``key in c`` neither counts nor reorders. ``stats()`` reports hits, misses, evictions, expirations,
size and hit_rate; each operation runs under the GIL, so the counts stay exact under threads.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any, Callable, Iterator, TypeVar, overload

from .. import _native
from .._native import CachedFunction

__all__ = ["Cache", "CachedFunction", "cached", "cache_key"]

F = TypeVar("F", bound=Callable[..., Any])


class Cache(_native.Cache):
    """LRU cache with optional time to live: the native type, plus a readable ``repr()``.

    ``Cache(maxsize=1024, ttl=None, *, clock=None)``; see the module documentation. Every method
    is the native one: a lookup runs no Python code.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        stats = self.stats()  # like len(), drops expired entries first
        bound = "unbounded" if self.maxsize is None else self.maxsize
        return (
            f"<Cache size={stats['size']}/{bound} ttl={self.ttl!r} "
            f"hits={stats['hits']} misses={stats['misses']}>"
        )

_MISSING = object()
_KWD_MARK = object()


def _default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The key cached() uses for an async function: the same shape as the native key."""
    if not kwargs and len(args) == 1 and type(args[0]) in (str, int):
        return args[0]
    if not kwargs:
        return args
    return args + (_KWD_MARK,) + tuple(part for item in kwargs.items() for part in item)


def _check_maxsize(maxsize: Any) -> None:
    if maxsize is None:
        return
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"cached(): maxsize must be an int or None, not {type(maxsize).__name__}")
    if maxsize < 0:
        raise ValueError(f"cached(): maxsize must be >= 0 or None, got {maxsize}")


def _wrap_async(func: Callable[..., Any], cache: Cache, key: Callable[..., Any] | None) -> Any:
    @functools.wraps(func)
    async def cached_coroutine(*args: Any, **kwargs: Any) -> Any:
        cache_key_value = key(*args, **kwargs) if key is not None else _default_key(args, kwargs)
        value = cache.get(cache_key_value, _MISSING)
        if value is not _MISSING:
            return value
        value = await func(*args, **kwargs)
        cache.set(cache_key_value, value)
        return value

    cached_coroutine.cache = cache  # type: ignore[attr-defined]
    cached_coroutine.cache_clear = cache.clear  # type: ignore[attr-defined]
    return cached_coroutine


@overload
def cached(maxsize: F) -> F: ...
@overload
def cached(
    maxsize: int | None = ..., ttl: float | None = ..., key: Callable[..., Any] | None = ...
) -> Callable[[F], F]: ...


def cached(
    maxsize: Any = 1024, ttl: float | None = None, key: Callable[..., Any] | None = None
) -> Any:
    """Decorator caching a function's results in a :class:`Cache` (``maxsize``, ``ttl``).

    Works on plain and ``async def`` functions (for coroutines the awaited result is cached).
    Calls are keyed like :func:`functools.lru_cache` (positional and keyword arguments, which must
    be hashable), or by ``key(*args, **kwargs)`` when ``key`` is given. The wrapper exposes its
    cache as ``.cache`` and ``cache_clear()``. Sync wrappers are native: a hit runs no Python code.
    Usable bare (``@cached``) or with arguments (``@cached(maxsize=128, ttl=60)``).
    """
    if callable(maxsize) and not isinstance(maxsize, int):
        return cached()(maxsize)
    _check_maxsize(maxsize)
    if key is not None and not callable(key):
        raise TypeError(f"cached(): key must be callable or None, not {type(key).__name__}")
    cache = Cache(maxsize, ttl)  # validates ttl

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"cached(): can only decorate a callable, not {type(func).__name__}")
        if inspect.iscoroutinefunction(func):
            return _wrap_async(func, cache, key)  # type: ignore[no-any-return]
        wrapper = CachedFunction(func, cache, key)
        functools.update_wrapper(wrapper, func)
        return wrapper  # type: ignore[return-value]

    return decorate


def cache_key(*args: Any, **kwargs: Any) -> str:
    """A stable SHA-256 hex digest of JSON-serialisable arguments.

    The same arguments give the same digest in every process and run (no ``hash()``
    randomisation): they are serialised as canonical JSON (sorted object keys, no whitespace,
    UTF-8). Lists and tuples serialise alike. So that two different arguments never share a key,
    dict keys must be ``str`` (JSON would turn ``{1: "a"}`` into ``{"1": "a"}``): other keys raise
    ``TypeError``; NaN and infinite floats (not JSON) raise ``ValueError``. Raises ``TypeError``
    naming the first argument that JSON cannot represent.
    """
    payload = {"args": list(args), "kwargs": kwargs}
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError:
        _check_arguments(args, kwargs)
        raise
    except ValueError:
        _check_arguments(args, kwargs)
        raise
    _check_arguments(args, kwargs, keys_only=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _labels(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for index, value in enumerate(args):
        yield f"argument {index}", value
    for name, value in kwargs.items():
        yield f"keyword argument {name!r}", value


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], keys_only: bool = False) -> None:
    for label, value in _labels(args, kwargs):
        _check_dict_keys(label, value)
        if not keys_only:
            _check_serialisable(label, value)


def _check_dict_keys(label: str, value: Any) -> None:
    """Raise TypeError for a dict key that is not a str, anywhere inside value."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if id(item) in seen:
                continue
            seen.add(id(item))
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"cache_key(): {label} has a dict key {key!r} of type {type(key).__name__}; dict keys "
                        f"must be str (JSON would turn it into the string {json.dumps(str(key))}, the same "
                        "key as that string)"
                    )
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item)


def _check_serialisable(label: str, value: Any) -> None:
    try:
        json.dumps(value, sort_keys=True, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"cache_key(): {label} is not JSON-serialisable: {exc}") from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise ValueError(
                f"cache_key(): {label} contains NaN or an infinite float, which JSON cannot represent "
                "(and NaN never equals itself); use None or a string instead"
            ) from None
        raise ValueError(f"cache_key(): {label} cannot be serialised: {exc}") from None
