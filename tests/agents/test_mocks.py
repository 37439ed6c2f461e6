"""MockLLM and MockTool: seeded latency models, tokens, failures, limits, recording, GIL-free waits."""

import asyncio
import gc
import itertools
import threading
import time
import tracemalloc

import pytest
from leakcheck import rss_growth_bytes

from pyagentbench.mocks import (
    Fixed,
    LogNormal,
    MockLLM,
    MockLLMError,
    MockTool,
    MockToolError,
    Normal,
    RateLimitError,
    Replay,
    estimate_tokens,
)


MiB = 1 << 20


def _latencies(mock):
    return [c.latency for c in mock.calls]


# ---- latency models and determinism ----


@pytest.mark.parametrize(
    "model", [Fixed(0.01), Normal(0.05, 0.02), LogNormal(0.05, 0.5), Replay([0.1, 0.2, 0.3]), 0.02, [0.1, 0.2]]
)
def test_same_seed_gives_the_same_calls_and_latencies(model):
    runs = []
    for _ in range(2):
        llm = MockLLM(latency=model, seed=7, latency_scale=0, failure_rate=0.3)
        for i in range(50):
            try:
                llm.complete(f"prompt {i}")
            except MockLLMError:
                pass
        runs.append([(c.prompt, c.response, c.latency, c.error is None) for c in llm.calls])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 50


def test_different_seeds_draw_different_latencies():
    a = MockLLM(latency=LogNormal(0.05, 0.5), seed=1, latency_scale=0)
    b = MockLLM(latency=LogNormal(0.05, 0.5), seed=2, latency_scale=0)
    for i in range(20):
        a.complete("x")
        b.complete("x")
    assert _latencies(a) != _latencies(b)


def test_latency_models_have_the_expected_shape():
    llm = MockLLM(latency=Normal(0.05, 0.01), seed=3, latency_scale=0, keep_calls=None)
    for _ in range(2000):
        llm.complete("p")
    lat = _latencies(llm)
    mean = sum(lat) / len(lat)
    assert 0.049 < mean < 0.051
    assert min(lat) >= 0
    llm = MockLLM(latency=LogNormal(0.02, 0.8), seed=3, latency_scale=0, keep_calls=None)
    for _ in range(2001):
        llm.complete("p")
    lat = sorted(_latencies(llm))
    assert 0.018 < lat[1000] < 0.022  # median
    assert lat[-1] > 5 * lat[1000]  # long right tail


def test_replay_cycles_and_normal_is_truncated():
    llm = MockLLM(latency=[0.1, 0.2, 0.3], latency_scale=0)
    for _ in range(7):
        llm.complete("p")
    assert _latencies(llm) == [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1]
    llm = MockLLM(latency=Normal(0.0, 1.0, minimum=0.5), latency_scale=0)
    for _ in range(100):
        llm.complete("p")
    assert min(_latencies(llm)) == 0.5


def test_reset_replays_the_sequence():
    llm = MockLLM(latency=LogNormal(0.01, 1.0), seed=5, latency_scale=0)
    for _ in range(10):
        llm.complete("p")
    first = _latencies(llm)
    llm.reset()
    assert llm.call_count == 0
    for _ in range(10):
        llm.complete("p")
    assert _latencies(llm) == first


def test_latency_is_really_waited_unless_scaled_to_zero():
    llm = MockLLM(latency=0.05)
    start = time.perf_counter()
    llm.complete("p")
    assert time.perf_counter() - start >= 0.049
    llm = MockLLM(latency=0.05, latency_scale=0.2)
    start = time.perf_counter()
    llm.complete("p")
    elapsed = time.perf_counter() - start
    assert 0.009 <= elapsed < 0.045
    assert llm.calls[0].latency == 0.05  # recorded unscaled


def test_waiting_does_not_hold_the_gil():
    llm = MockLLM(latency=0.2)
    counter = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        llm.complete("p")
    finally:
        done.set()
        spinner.join()
    assert counter[0] > 10_000


# ---- responses, tokens, recording ----


def test_responses_list_cycles_and_callable_is_used():
    llm = MockLLM(responses=["a", "b"])
    assert [llm.complete("x") for _ in range(3)] == ["a", "b", "a"]
    llm = MockLLM(responses=lambda prompt: prompt.upper())
    assert llm.complete("hello") == "HELLO"
    assert MockLLM().complete("x") == "mock response 0"


def test_tokens_follow_the_documented_heuristic():
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    llm = MockLLM(responses=["x" * 40])
    llm.complete("y" * 10)
    call = llm.calls[0]
    assert (call.tokens_in, call.tokens_out) == (3, 10)
    assert (llm.tokens_in, llm.tokens_out) == (3, 10)


def test_tokens_per_second_adds_generation_time():
    llm = MockLLM(responses=["x" * 400], latency=0.1, tokens_per_second=50, latency_scale=0)
    llm.complete("p")
    assert llm.calls[0].latency == pytest.approx(0.1 + 100 / 50)


def test_failures_raise_the_configured_exception_and_are_recorded():
    llm = MockLLM(failure_rate=1.0)
    with pytest.raises(MockLLMError):
        llm.complete("p")
    assert llm.calls[0].error is not None and llm.calls[0].response is None
    assert llm.tokens_in == 0

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        MockLLM(failure_rate=1.0, failure=Boom).complete("p")
    instance = Boom("given")
    with pytest.raises(Boom) as info:
        MockLLM(failure_rate=1.0, failure=instance).complete("p")
    assert info.value is instance


def test_failure_rate_is_about_right():
    llm = MockLLM(failure_rate=0.25, seed=11)
    failures = 0
    for _ in range(4000):
        try:
            llm.complete("p")
        except MockLLMError:
            failures += 1
    assert 850 < failures < 1150


# ---- streaming ----


def test_stream_yields_the_response_in_chunks():
    llm = MockLLM(responses=["hello world, streaming"], stream_chunk_tokens=1)
    chunks = list(llm.stream("p"))
    assert "".join(chunks) == "hello world, streaming"
    assert all(len(c) <= 4 for c in chunks) and len(chunks) == 6
    assert llm.calls[0].streamed and llm.calls[0].tokens_out == 6


def test_stream_paces_chunks_at_tokens_per_second():
    llm = MockLLM(responses=["x" * 40], tokens_per_second=200, latency=0.0)
    start = time.perf_counter()
    list(llm.stream("p"))
    assert time.perf_counter() - start >= 0.045  # 10 tokens at 200/s


def test_failing_stream_raises_before_the_first_chunk():
    llm = MockLLM(failure_rate=1.0)
    with pytest.raises(MockLLMError):
        next(iter(llm.stream("p")))


def test_async_complete_and_stream():
    llm = MockLLM(responses=["abcdefgh"], latency=0.01)

    async def main():
        text = await llm.acomplete("p")
        chunks = [c async for c in llm.astream("p")]
        return text, chunks

    text, chunks = asyncio.run(main())
    assert text == "abcdefgh" and chunks == ["abcd", "efgh"]
    assert llm.call_count == 2


def test_async_calls_overlap():
    llm = MockLLM(latency=0.1)

    async def main():
        start = time.perf_counter()
        await asyncio.gather(*(llm.acomplete("p") for _ in range(50)))
        return time.perf_counter() - start

    assert asyncio.run(main()) < 0.5


# ---- limits ----


def test_max_concurrent_makes_extra_calls_wait_and_records_the_wait():
    llm = MockLLM(latency=0.05, max_concurrent=2)
    peak = [0]

    ready = threading.Barrier(6)

    def call():
        ready.wait()  # all six ask at once, however late a busy machine starts the threads
        llm.complete("p")

    def watch(stop):
        while not stop.is_set():
            peak[0] = max(peak[0], llm.in_flight)
            time.sleep(0.001)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    threads = [threading.Thread(target=call) for _ in range(6)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    stop.set()
    watcher.join()
    assert peak[0] == 2
    assert elapsed >= 0.14  # three waves of two
    waits = sorted(c.wait for c in llm.calls)
    assert waits[0] < 0.03 and waits[-1] >= 0.09
    assert llm.in_flight == 0


def test_max_concurrent_in_asyncio_with_cancellation():
    llm = MockLLM(latency=0.05, max_concurrent=3)

    async def main():
        tasks = [asyncio.ensure_future(llm.acomplete("p")) for _ in range(9)]
        await asyncio.sleep(0.01)
        tasks[8].cancel()  # waiting in line
        tasks[0].cancel()  # holding a slot
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results

    results = asyncio.run(main())
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 2
    assert llm.call_count == 7
    assert llm.in_flight == 0


def test_rate_limit_raises_past_the_budget_with_a_controlled_clock():
    now = [100.0]
    llm = MockLLM(rate_limit=5, clock=lambda: now[0])
    for _ in range(5):
        llm.complete("p")
    with pytest.raises(RateLimitError) as info:
        llm.complete("p")
    assert info.value.retry_after == pytest.approx(0.2)
    now[0] += 0.2
    llm.complete("p")
    with pytest.raises(RateLimitError):
        llm.complete("p")
    assert sum(isinstance(c.error, RateLimitError) for c in llm.calls) == 2


# ---- the bounded call log ----


def test_calls_keeps_the_last_n_and_the_counters_count_every_call():
    llm = MockLLM(responses=["yes"], failure_rate=0.3, seed=5, keep_calls=10, latency_scale=0)
    failures = 0
    for i in range(25):
        try:
            llm.complete("abcdefgh")  # 2 tokens in, "yes" is 1 token out
        except MockLLMError:
            failures += 1
    assert 0 < failures < 25
    assert len(llm.calls) == 10
    assert [c.index for c in llm.calls] == list(range(15, 25))
    assert (llm.call_count, llm.calls_dropped, llm.failure_count) == (25, 15, failures)
    assert (llm.tokens_in, llm.tokens_out) == (2 * (25 - failures), 25 - failures)


def test_the_default_keeps_the_last_hundred_calls():
    tool = MockTool("t", result=1)
    for i in range(150):
        tool(i)
    assert len(tool.calls) == 100 == tool.keep_calls
    assert tool.calls[0].args == (50,) and tool.calls[-1].args == (149,)
    assert tool.call_count == 150 and tool.calls_dropped == 50
    assert isinstance(tool.calls, list) and tool.calls[-3:][0].args == (147,)


def test_keep_calls_none_keeps_every_call_and_zero_keeps_none():
    every = MockTool("t", keep_calls=None)
    none = MockLLM(keep_calls=0)
    for _ in range(250):
        every()
        none.complete("abcd")
    assert len(every.calls) == 250 and every.calls_dropped == 0
    assert none.calls == [] and none.call_count == 250 and none.tokens_in == 250


def test_reset_forgets_calls_and_counts():
    llm = MockLLM(failure_rate=0.5, seed=1, keep_calls=3)
    for _ in range(10):
        try:
            llm.complete("abcd")
        except MockLLMError:
            pass
    llm.reset()
    assert (llm.calls, llm.call_count, llm.failure_count, llm.tokens_in, llm.tokens_out) == ([], 0, 0, 0, 0)


@pytest.mark.parametrize("bad", ["10", 1.5, True])
def test_keep_calls_must_be_an_int_or_none(bad):
    with pytest.raises(TypeError, match="keep_calls must be an int"):
        MockLLM(keep_calls=bad)
    with pytest.raises(TypeError, match="keep_calls must be an int"):
        MockTool(keep_calls=bad)


def test_negative_keep_calls_is_a_value_error():
    with pytest.raises(ValueError, match="keep_calls must be >= 0"):
        MockLLM(keep_calls=-1)


def _traced_growth(call, n: int) -> int:
    """Bytes still allocated (tracemalloc) after n more calls, past a warm-up of 1,000."""
    for _ in range(1000):
        call()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            call()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.no_sanitizer(reason="ASan's quarantine and shadow memory keep RSS from staying flat")
def test_a_hundred_thousand_calls_keep_the_mocks_memory_flat():
    """The log holds the last 100 records whatever the number of calls. Keeping every call of
    these (new prompt and response strings each call) costs ~320 B a call by tracemalloc, ~30 MiB
    of RSS over 1e5 calls; the bound, 1 MiB, is 3% of that."""
    llm = MockLLM()  # default responses: a new "mock response <n>" string per call
    tool = MockTool("search", result=lambda q: [q])
    counter = itertools.count()

    def calls(n):
        for _ in range(n):
            i = next(counter)
            llm.complete(f"question {i}")
            tool(f"query {i}")

    assert rss_growth_bytes(calls, total=100_000, batch=10_000) < MiB
    assert llm.call_count == tool.call_count == 110_000
    assert len(llm.calls) == len(tool.calls) == 100


def test_keeping_every_call_grows_as_documented():
    """keep_calls=None is the old unbounded log: a few hundred bytes a call (an LLMCall with its
    prompt and response), and nothing like that with the default."""
    counter = itertools.count()
    every = MockLLM(keep_calls=None)
    per_call = _traced_growth(lambda: every.complete(f"question {next(counter)}"), 10_000) / 10_000
    assert 200 < per_call < 800
    bounded = MockLLM()
    assert _traced_growth(lambda: bounded.complete(f"question {next(counter)}"), 10_000) < 32 * 1024


# ---- MockTool ----


def test_tool_sync_async_recorded_and_seeded():
    tool = MockTool("search", result=lambda q, k=1: [q] * k, latency=Normal(0.01, 0.005), seed=4, latency_scale=0)
    assert tool("a", k=2) == ["a", "a"]
    assert asyncio.run(tool.acall("b")) == ["b"]
    assert [(c.args, c.kwargs) for c in tool.calls] == [(("a",), {"k": 2}), (("b",), {})]
    twin = MockTool("search", result=1, latency=Normal(0.01, 0.005), seed=4, latency_scale=0)
    twin()
    twin()
    assert [c.latency for c in twin.calls] == [c.latency for c in tool.calls]
    assert MockTool("const", result=42)() == 42


def test_tool_failures():
    tool = MockTool("flaky", failure_rate=1.0)
    with pytest.raises(MockToolError):
        tool()
    with pytest.raises(MockToolError):
        asyncio.run(tool.acall())
    assert all(c.error is not None for c in tool.calls)


def test_tool_waits_its_latency():
    tool = MockTool("slow", latency=0.03)
    start = time.perf_counter()
    tool()
    assert time.perf_counter() - start >= 0.029


# ---- bad input ----


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"latency": "fast"}, TypeError),
        ({"latency": -1}, ValueError),
        ({"failure_rate": 2}, ValueError),
        ({"failure_rate": "x"}, TypeError),
        ({"max_concurrent": 0}, ValueError),
        ({"max_concurrent": 1.5}, TypeError),
        ({"rate_limit": 0}, ValueError),
        ({"latency_scale": -1}, ValueError),
        ({"responses": []}, ValueError),
        ({"responses": [1]}, TypeError),
        ({"responses": "abc"}, TypeError),
        ({"tokens_per_second": 0}, ValueError),
        ({"failure": 3}, TypeError),
    ],
)
def test_bad_arguments_are_named(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        MockLLM(**kwargs)


def test_bad_models_and_prompts():
    with pytest.raises(ValueError):
        Replay([])
    with pytest.raises(ValueError):
        LogNormal(0, 1)
    with pytest.raises(TypeError, match="prompt"):
        MockLLM().complete(3)
    with pytest.raises(TypeError, match="name"):
        MockTool(3)
