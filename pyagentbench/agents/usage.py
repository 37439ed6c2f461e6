"""Usage of LLMs and tools: calls, tokens in and out, tokens saved by cache hits, and cost.

Code reports what it spent with :func:`record_usage` (an LLM call: tokens in and out, the model)
and :func:`record_tool_call`; :class:`~pyagentbench.mocks.MockLLM` and
:class:`~pyagentbench.mocks.MockTool` do it on every call, the adapters in
:mod:`pyagentbench.agents.adapters` do it for real clients, and an :class:`~pyagentbench.Agent`
reports the tokens its cache hits saved.

Each report goes to two places, if they are open:

- the current :class:`~pyagentbench.Agent` task's counters (a context variable, so concurrent
  tasks on threads or asyncio tasks never mix their counts): these are ``Agent.metrics()``;
- the open :class:`UsageWindow`, process-wide: the ``agent_benchmark`` fixture opens one around
  each counted call of the benchmarked function, so usage reported on any thread or event loop
  while that call runs is counted for it.

With neither open a report costs a context-variable read and a global read, and records nothing.

Cost comes from the caller (``record_usage(cost=...)``: a MockLLM with ``price_in_per_1k`` /
``price_out_per_1k`` passes its own), or else from the window's price table (model -> prices per
1000 tokens, see :func:`load_prices`). A call whose model has no price leaves the cost unknown:
the window lists the model in ``unpriced_models`` rather than counting it as free.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import numbers
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Optional

from .. import _native
from ._tokens import token_sink

_now_ns = _native.now_ns

__all__ = [
    "record_usage",
    "record_tool_call",
    "record_tokens_saved",
    "Price",
    "Prices",
    "UsageWindow",
    "UsageTotals",
    "load_prices",
    "parse_prices",
    "CountedCalls",
    "GCWatch",
]


class Price(NamedTuple):
    """Prices of one model per 1000 tokens, in whatever currency the table uses."""

    in_per_1k: float
    out_per_1k: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """The cost of a call with these tokens."""
        return tokens_in * self.in_per_1k / 1000.0 + tokens_out * self.out_per_1k / 1000.0


Prices = Mapping[str, Price]


class UsageTotals(NamedTuple):
    """A window's running totals (``cost`` is the priced calls' cost; ``unpriced`` counts the calls
    with tokens whose model had no price)."""

    llm_calls: int
    tool_calls: int
    tokens_in: int
    tokens_out: int
    tokens_saved: int
    cost: float
    unpriced: int


_ZERO = UsageTotals(0, 0, 0, 0, 0, 0.0, 0)

#: The open window (process-wide), or None. Set and reset only by UsageWindow.__enter__/__exit__.
_active: Optional["UsageWindow"] = None
_active_lock = threading.Lock()


class UsageWindow:
    """Counts the usage reported (on any thread) while it is open; windows nest, the innermost
    counting.

    ``prices`` maps a model name to its :class:`Price`, used for calls that report no cost of
    their own. :meth:`totals` reads the running totals; ``unpriced_models`` names the models whose
    calls could not be priced; ``metrics`` holds the custom metric values reported into it (name
    -> last value).
    """

    def __init__(self, prices: Optional[Prices] = None) -> None:
        self.prices: dict[str, Price] = dict(prices or {})
        self._lock = threading.Lock()
        self._llm_calls = self._tool_calls = 0
        self._tokens_in = self._tokens_out = self._tokens_saved = 0
        self._cost = 0.0
        self._unpriced = 0
        self.unpriced_models: set[str] = set()
        self.metrics: dict[str, float] = {}
        self._previous: Optional[UsageWindow] = None

    def __enter__(self) -> "UsageWindow":
        global _active
        with _active_lock:
            self._previous = _active
            _active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        with _active_lock:
            _active = self._previous
            self._previous = None

    def totals(self) -> UsageTotals:
        """The counts so far."""
        with self._lock:
            return UsageTotals(self._llm_calls, self._tool_calls, self._tokens_in, self._tokens_out,
                               self._tokens_saved, self._cost, self._unpriced)

    def add_llm(self, tokens_in: int, tokens_out: int, model: Optional[str], calls: int,
                cost: Optional[float]) -> None:
        """Count LLM calls and their tokens (what :func:`record_usage` does for the open window)."""
        if cost is None and (tokens_in or tokens_out):
            price = self.prices.get(model) if model is not None else None
            if price is not None:
                cost = tokens_in * price[0] / 1000.0 + tokens_out * price[1] / 1000.0
        with self._lock:
            self._llm_calls += calls
            self._tokens_in += tokens_in
            self._tokens_out += tokens_out
            if cost is not None:
                self._cost += cost
                return
        if tokens_in or tokens_out:
            with self._lock:
                self._unpriced += calls or 1
                self.unpriced_models.add(model if model is not None else "(no model named)")

    def add_tools(self, calls: int) -> None:
        """Count tool calls."""
        with self._lock:
            self._tool_calls += calls

    def add_saved(self, tokens: int) -> None:
        """Count tokens a cache hit did not spend again."""
        with self._lock:
            self._tokens_saved += tokens


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"record_usage(): {name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"record_usage(): {name} must be >= 0, got {value}")
    return int(value)


def record_usage(tokens_in: int = 0, tokens_out: int = 0, model: Optional[str] = None,
                 calls: int = 1, cost: Optional[float] = None) -> None:
    """Report LLM usage: ``calls`` calls (default 1) that spent ``tokens_in`` prompt tokens and
    ``tokens_out`` completion tokens on ``model``.

    ``cost``, if given, is the calls' cost; otherwise the price table of the open window prices
    them by ``model``. Counted by the current Agent task (its ``tokens_in`` / ``tokens_out``) and
    by the open :class:`UsageWindow` (the ``agent_benchmark`` fixture's counted calls); without
    either it records nothing.
    """
    if tokens_in.__class__ is not int or tokens_out.__class__ is not int or calls.__class__ is not int \
            or tokens_in < 0 or tokens_out < 0 or calls < 0:
        tokens_in, tokens_out, calls = (_count("tokens_in", tokens_in), _count("tokens_out", tokens_out),
                                        _count("calls", calls))
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, numbers.Real) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"record_usage(): cost must be a finite number >= 0 or None, got {cost!r}")
        cost = float(cost)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"record_usage(): model must be a str or None, not {type(model).__name__}")
    sink = token_sink.get()
    if sink is not None:
        sink.tokens_in += tokens_in
        sink.tokens_out += tokens_out
    window = _active
    if window is not None:
        window.add_llm(tokens_in, tokens_out, model, calls, cost)


def record_tool_call(calls: int = 1) -> None:
    """Report ``calls`` tool calls to the open :class:`UsageWindow` (nothing without one)."""
    window = _active
    if window is not None:
        window.add_tools(_count("calls", calls) if calls.__class__ is not int or calls < 0 else calls)


def record_tokens_saved(tokens: int) -> None:
    """Report tokens a cache hit did not spend again to the open :class:`UsageWindow`."""
    window = _active
    if window is not None and tokens:
        window.add_saved(tokens)


def _report_metric(name: str, value: float) -> bool:
    """Put a custom metric's value into the open window; False when none is open."""
    window = _active
    if window is None:
        return False
    with window._lock:
        window.metrics[name] = value
    return True


def _price_number(where: str, key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{where}: {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {key} must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_prices(data: Any, source: str = "prices") -> dict[str, Price]:
    """A price table from a mapping ``{model: {"in_per_1k": x, "out_per_1k": y}}``.

    ValueError naming the model and key on anything else.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a table of models, e.g. "
                         '{"gpt-4o-mini": {"in_per_1k": 0.00015, "out_per_1k": 0.0006}}')
    table = {}
    for model, entry in data.items():
        where = f"{source}: model {model!r}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected in_per_1k and out_per_1k, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"in_per_1k", "out_per_1k"})
        if unknown or "in_per_1k" not in entry or "out_per_1k" not in entry:
            raise ValueError(f"{where}: expected exactly in_per_1k and out_per_1k, got {sorted(entry)}")
        table[str(model)] = Price(_price_number(where, "in_per_1k", entry["in_per_1k"]),
                                  _price_number(where, "out_per_1k", entry["out_per_1k"]))
    return table


def _toml_loads(text: str, source: str) -> Any:
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ValueError(
                f"{source}: reading TOML needs Python 3.11+ (tomllib) or the tomli package; "
                "install tomli or write the prices as JSON"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from None


def load_prices(path: "str | Path") -> dict[str, Price]:
    """The price table in a ``.json`` or ``.toml`` file (see :func:`parse_prices` for its shape).

    OSError when it cannot be read; ValueError naming the file and the problem otherwise.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        data = _toml_loads(text, str(path))
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
    else:
        raise ValueError(f"{path}: a price table must be a .json or .toml file")
    return parse_prices(data, str(path))



# ---- counted calls and the garbage collector, for the agent_benchmark fixture ----


class CountedCalls:
    """Calls of a benchmarked function made one by one, each in a :class:`UsageWindow` of its own:
    per call, the usage reported, the custom metric values, and wall, CPU and waiting time.

    The CPU time is the calling thread's; for a function whose value is awaitable, the await runs
    on an event loop (see :class:`~pyagentbench.instruments.timers._AsyncRounds`) and its wall and
    CPU time are read on the loop's thread, inside the loop. Waiting is wall minus CPU: time
    blocked (sleeps, locks, I/O) or suspended in an await.
    """

    def __init__(self, prices: Optional[Prices] = None) -> None:
        self.prices = dict(prices or {})
        self.usage: list[UsageTotals] = []
        self.wall_ns: list[int] = []
        self.cpu_ns: list[int] = []
        self.unpriced_models: set[str] = set()
        self.metric_values: dict[str, list[float]] = {}
        #: False once a window counted several calls: the per-call maxima are unknown then.
        self.maxima = True
        #: run(): the first call was slow; the last call's time when it can be the timing probe.
        self.slow = False
        self.probe_ns: Optional[int] = None
        self._window: Optional[UsageWindow] = None

    def report_metric(self, name: str, value: float) -> None:
        """A custom metric's value for the call running now (the last one in a call counts)."""
        window = self._window
        if window is not None:
            with window._lock:
                window.metrics[name] = value

    @contextlib.contextmanager
    def counting(self, calls: int = 1) -> Iterator[UsageWindow]:
        """A window for *calls* calls made inside it (a pedantic round, a load run): on a normal
        exit its usage, divided by *calls*, counts as one call's. Windows of several calls give
        means, so the record then has no ``*_max`` keys."""
        window = UsageWindow(self.prices)
        self._window = window
        try:
            with window:
                yield window
        finally:
            self._window = None
        self.add_window(window, calls)

    def add_window(self, window: UsageWindow, calls: int) -> None:
        """Count what *window* saw as *calls* calls' usage (see :meth:`counting`)."""
        totals = window.totals()
        if calls != 1:
            self.maxima = False
            totals = UsageTotals(*(value / max(calls, 1) for value in totals))  # type: ignore[arg-type]
        self.usage.append(totals)
        self.unpriced_models |= window.unpriced_models
        for name, metric_value in window.metrics.items():
            self.metric_values.setdefault(name, []).append(metric_value)

    def run(self, fn: Any, args: tuple, kwargs: Mapping[str, Any], calls: int,
            slow_ns: Optional[int] = None) -> None:
        """Make *calls* counted calls of fn (awaiting, or consuming a stream, as the timed rounds
        would). With *slow_ns*, a first call at least that long makes it 2 calls at most (a slow
        target's counted calls cost what its timed rounds cost); ``probe_ns`` is then the last
        call's time if every call returned a plain value, for the timing loop to use as its probe."""
        from ..instruments.timers import _AsyncRounds

        now_ns, cpu_ns = _now_ns, _native.thread_cpu_ns
        runner: Any = None

        async def awaited(value: Any) -> tuple[int, int]:
            wall0, cpu0 = now_ns(), cpu_ns()
            if inspect.isasyncgen(value):
                async for _ in value:
                    pass
            else:
                await value
            return now_ns() - wall0, cpu_ns() - cpu0

        plain = True
        try:
            index = 0
            while index < calls:
                index += 1
                with self.counting():
                    wall0, cpu0 = now_ns(), cpu_ns()
                    value = fn(*args, **kwargs)
                    if inspect.isgenerator(value):
                        plain = False
                        for _ in value:
                            pass
                    wall, cpu = now_ns() - wall0, cpu_ns() - cpu0
                    if inspect.isawaitable(value) or inspect.isasyncgen(value):
                        plain = False
                        if runner is None:
                            runner = _AsyncRounds(fn, (), None)
                        await_wall, await_cpu = runner.run_awaitable(awaited(value))
                        wall, cpu = wall + await_wall, cpu + await_cpu
                self.wall_ns.append(wall)
                self.cpu_ns.append(min(cpu, wall))
                if slow_ns is not None and index == 1 and wall >= slow_ns:
                    calls = min(calls, 2)
                    self.slow = True
            if self.slow and plain:
                self.probe_ns = self.wall_ns[-1]
        finally:
            if runner is not None:
                runner.close()

    def metrics(self) -> dict[str, Any]:
        """Record keys: per call means (and ``*_max``) of the usage, when any was reported, and
        ``wall_per_call_s``, ``cpu_per_call_s``, ``wait_per_call_s``, ``usage_calls``."""
        n = len(self.usage)
        if not n:
            return {}
        record: dict[str, Any] = {"usage_calls": n}
        if self.wall_ns:
            timed = len(self.wall_ns)
            record["wall_per_call_s"] = sum(self.wall_ns) / timed * 1e-9
            record["cpu_per_call_s"] = sum(self.cpu_ns) / timed * 1e-9
            record["wait_per_call_s"] = sum(w - c for w, c in zip(self.wall_ns, self.cpu_ns)) / timed * 1e-9
        if not any(u.llm_calls or u.tool_calls or u.tokens_in or u.tokens_out or u.tokens_saved
                   for u in self.usage):
            return record
        columns = {
            "llm_calls_per_call": [u.llm_calls for u in self.usage],
            "tool_calls_per_call": [u.tool_calls for u in self.usage],
            "tokens_in_per_call": [u.tokens_in for u in self.usage],
            "tokens_out_per_call": [u.tokens_out for u in self.usage],
            "tokens_per_call": [u.tokens_in + u.tokens_out for u in self.usage],
            "tokens_saved_per_call": [u.tokens_saved for u in self.usage],
        }
        llm_calls = sum(columns["llm_calls_per_call"])
        if llm_calls and not any(u.unpriced for u in self.usage):
            columns["cost_per_call"] = [u.cost for u in self.usage]
        elif self.unpriced_models:
            record["unpriced_models"] = sorted(self.unpriced_models)
        for key, values in columns.items():
            record[key] = sum(values) / n
            if self.maxima:
                record[key + "_max"] = max(values)
        return record


class GCWatch:
    """The cyclic garbage collector's runs while it is open (through ``gc.callbacks``):
    collections per generation and the total and longest pause. The callback runs only when a
    collection starts or stops, so code that makes no collection pays nothing."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_ns = 0
        self.pause_max_ns = 0
        self._start_ns = 0

    def _callback(self, phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._start_ns = _now_ns()
            return
        pause = _now_ns() - self._start_ns if self._start_ns else 0
        self._start_ns = 0
        generation = info.get("generation", 0)
        if 0 <= generation < 3:
            self.collections[generation] += 1
        self.pause_ns += pause
        self.pause_max_ns = max(self.pause_max_ns, pause)

    def __enter__(self) -> "GCWatch":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            gc.callbacks.remove(self._callback)
        except ValueError:
            pass

    def metrics(self) -> dict[str, Any]:
        """Record keys: ``gc_collections`` (all generations), ``gc_collections_gen0`` .. ``gen2``,
        ``gc_pause_s`` (the total) and ``gc_pause_max_s``."""
        return {
            "gc_collections": sum(self.collections),
            "gc_collections_gen0": self.collections[0],
            "gc_collections_gen1": self.collections[1],
            "gc_collections_gen2": self.collections[2],
            "gc_pause_s": self.pause_ns * 1e-9,
            "gc_pause_max_s": self.pause_max_ns * 1e-9,
        }
