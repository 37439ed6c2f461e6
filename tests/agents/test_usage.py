"""record_usage and its windows: what the mocks, the Agent and any code report, and where it goes."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time

import pytest

import pyagentbench
from pyagentbench import Agent, Cache
from pyagentbench.agents.usage import (
    CountedCalls,
    GCWatch,
    Price,
    UsageWindow,
    load_prices,
    parse_prices,
    record_tool_call,
    record_usage,
)
from pyagentbench.mocks import MockLLM, MockLLMError, MockTool

PROMPT = "p" * 400  # 100 tokens at one token per 4 characters
RESPONSE = "r" * 40  # 10 tokens


def test_record_usage_is_public_from_the_root():
    assert pyagentbench.record_usage is record_usage
    assert "record_usage" in dir(pyagentbench)


def test_outside_any_window_nothing_is_recorded_and_nothing_fails():
    record_usage(tokens_in=5, tokens_out=7, model="m")
    record_tool_call()
    with UsageWindow() as window:
        pass
    assert window.totals().llm_calls == 0


def test_a_window_counts_calls_tokens_and_tools():
    with UsageWindow() as window:
        record_usage(tokens_in=5, tokens_out=7, model="m")
        record_usage(tokens_in=1, tokens_out=2, model="m", calls=2)
        record_tool_call()
        record_tool_call(3)
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out, totals.tool_calls) == (3, 6, 9, 4)


def test_the_price_table_prices_by_model_and_unpriced_models_are_named_not_free():
    with UsageWindow({"small": Price(1.0, 4.0)}) as window:
        record_usage(tokens_in=1000, tokens_out=500, model="small")  # 1.0 + 2.0
        record_usage(tokens_in=10, tokens_out=10, model="unknown")
        record_usage(tokens_in=10, tokens_out=10)
        record_usage(tokens_in=10, tokens_out=10, model="unknown", cost=0.5)  # its own cost wins
    totals = window.totals()
    assert totals.cost == pytest.approx(3.5)
    assert totals.unpriced == 2
    assert window.unpriced_models == {"unknown", "(no model named)"}


def test_usage_from_threads_and_asyncio_tasks_is_counted_by_the_open_window():
    def spend() -> None:
        for _ in range(1000):
            record_usage(tokens_in=1, tokens_out=2)

    async def aspend() -> None:
        await asyncio.sleep(0)
        record_usage(tokens_in=1, tokens_out=2)

    async def many() -> None:
        await asyncio.gather(*(aspend() for _ in range(100)))

    with UsageWindow() as window:
        threads = [threading.Thread(target=spend) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        asyncio.run(many())
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (4100, 4100, 8200)


def test_windows_nest_and_the_innermost_counts():
    with UsageWindow() as outer:
        with UsageWindow() as inner:
            record_usage(tokens_in=1)
        record_usage(tokens_in=10)
    assert inner.totals().tokens_in == 1
    assert outer.totals().tokens_in == 10


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tokens_in": 1.5}, TypeError, "tokens_in must be an int, not float"),
        ({"tokens_out": -1}, ValueError, "tokens_out must be >= 0, got -1"),
        ({"calls": True}, TypeError, "calls must be an int, not bool"),
        ({"cost": float("nan")}, ValueError, "cost must be a finite number >= 0 or None"),
        ({"model": 3}, TypeError, "model must be a str or None, not int"),
    ],
)
def test_bad_usage_is_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        record_usage(**kwargs)


def test_mock_llm_reports_each_call_with_its_tokens_and_its_own_price():
    llm = MockLLM(responses=[RESPONSE], price_in_per_1k=1.0, price_out_per_1k=2.0, model="m1")
    with UsageWindow() as window:
        llm.complete(PROMPT)
        "".join(llm.stream(PROMPT))
        asyncio.run(llm.acomplete(PROMPT))
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (3, 300, 30)
    # 100 tokens at 1.0 per 1000 plus 10 at 2.0 per 1000, three times
    assert totals.cost == pytest.approx(3 * 0.12)
    assert llm.cost == pytest.approx(3 * 0.12)


def test_a_failed_mock_llm_call_is_a_call_without_tokens():
    llm = MockLLM(responses=[RESPONSE], failure_rate=1.0)
    with UsageWindow() as window:
        with pytest.raises(MockLLMError):
            llm.complete(PROMPT)
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out, totals.unpriced) == (1, 0, 0, 0)


def test_mock_llm_without_prices_is_priced_by_the_table_for_its_model():
    llm = MockLLM(responses=[RESPONSE], model="table-model")
    with UsageWindow({"table-model": Price(10.0, 0.0)}) as window:
        llm.complete(PROMPT)
    assert window.totals().cost == pytest.approx(1.0)  # 100 tokens at 10 per 1000
    assert llm.cost is None


def test_mock_llm_needs_both_prices():
    with pytest.raises(ValueError, match="give both price_in_per_1k and price_out_per_1k"):
        MockLLM(price_in_per_1k=1.0)
    with pytest.raises(TypeError, match="price_out_per_1k must be a number"):
        MockLLM(price_in_per_1k=1.0, price_out_per_1k="2")


def test_mock_tool_reports_every_call_failures_included():
    tool = MockTool(failure_rate=0.0)
    failing = MockTool(failure_rate=1.0)
    with UsageWindow() as window:
        tool()
        asyncio.run(tool.acall())
        with pytest.raises(Exception):
            failing()
    assert window.totals().tool_calls == 3


class _LLMAgent(Agent):
    def __init__(self, llm: MockLLM, **kwargs) -> None:
        super().__init__(**kwargs)
        self.llm = llm

    def handle(self, task):
        return self.llm.complete(task.payload)


def test_usage_inside_agent_tasks_feeds_agent_metrics_and_the_window_alike():
    agent = _LLMAgent(MockLLM(responses=[RESPONSE]), cache=Cache(maxsize=16))
    with UsageWindow() as window:
        agent.process(PROMPT)  # a miss: 100 + 10 tokens spent
        agent.process(PROMPT)  # a hit: 110 tokens saved
        agent.record_tokens(3, 4)  # outside any task: still the agent's, and the window's
    metrics = agent.metrics()
    totals = window.totals()
    assert (metrics.tokens_in, metrics.tokens_out, metrics.tokens_saved) == (103, 14, 110)
    assert (totals.tokens_in, totals.tokens_out, totals.tokens_saved, totals.llm_calls) == (103, 14, 110, 1)


def test_counted_calls_give_usage_per_call_mean_and_max():
    llm = MockLLM(responses=[RESPONSE, RESPONSE * 3], price_in_per_1k=1.0, price_out_per_1k=2.0)
    tool = MockTool()

    def agent() -> None:
        tool()
        llm.complete(PROMPT)

    counted = CountedCalls()
    counted.run(agent, (), {}, 4)
    record = counted.metrics()
    # responses alternate 10 and 30 tokens out
    assert record["usage_calls"] == 4
    assert record["llm_calls_per_call"] == 1 and record["tool_calls_per_call_max"] == 1
    assert record["tokens_out_per_call"] == 20 and record["tokens_out_per_call_max"] == 30
    assert record["tokens_per_call"] == 120 and record["tokens_per_call_max"] == 130
    assert record["cost_per_call_max"] == pytest.approx(0.1 + 0.06)
    assert "unpriced_models" not in record


def test_counted_calls_leave_cost_out_when_a_model_has_no_price():
    llm = MockLLM(responses=[RESPONSE], model="nobody-priced-me")
    counted = CountedCalls({"other": Price(1.0, 1.0)})
    counted.run(llm.complete, (PROMPT,), {}, 2)
    record = counted.metrics()
    assert "cost_per_call" not in record
    assert record["unpriced_models"] == ["nobody-priced-me"]


def test_code_that_reports_no_usage_gets_only_the_time_split():
    counted = CountedCalls()
    counted.run(lambda: None, (), {}, 3)
    assert set(counted.metrics()) == {"usage_calls", "wall_per_call_s", "cpu_per_call_s", "wait_per_call_s"}


def test_waiting_is_wall_minus_cpu_for_sleeps_and_awaits():
    async def awaits() -> None:
        await asyncio.sleep(0.02)

    for target in (lambda: time.sleep(0.02), awaits):
        counted = CountedCalls()
        counted.run(target, (), {}, 2)
        record = counted.metrics()
        # a call that sleeps 20 ms waits at least 20 ms of its wall time, and spends little CPU
        assert record["wait_per_call_s"] >= 0.02
        assert record["cpu_per_call_s"] < record["wait_per_call_s"]
        assert record["wall_per_call_s"] == pytest.approx(record["cpu_per_call_s"] + record["wait_per_call_s"])


def test_gc_watch_counts_collections_per_generation():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with GCWatch() as watch:
            gc.collect(0)
            gc.collect(0)
            gc.collect(2)
    finally:
        if was_enabled:
            gc.enable()
    metrics = watch.metrics()
    assert (metrics["gc_collections_gen0"], metrics["gc_collections_gen1"],
            metrics["gc_collections_gen2"], metrics["gc_collections"]) == (2, 0, 1, 3)
    assert 0 < metrics["gc_pause_max_s"] <= metrics["gc_pause_s"]
    assert watch._callback not in gc.callbacks


def test_prices_from_json_and_toml(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"a": {"in_per_1k": 0.5, "out_per_1k": "1.5"}}))
    assert load_prices(tmp_path / "p.json") == {"a": Price(0.5, 1.5)}
    (tmp_path / "p.toml").write_text('["gpt-4o-mini"]\nin_per_1k = 0.00015\nout_per_1k = 0.0006\n')
    if sys.version_info >= (3, 11):
        assert load_prices(tmp_path / "p.toml") == {"gpt-4o-mini": Price(0.00015, 0.0006)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "expected a table of models"),
        ({"a": 1}, "model 'a': expected in_per_1k and out_per_1k, got int"),
        ({"a": {"in_per_1k": 1}}, "model 'a': expected exactly in_per_1k and out_per_1k"),
        ({"a": {"in_per_1k": -1, "out_per_1k": 1}}, "in_per_1k must be a finite number >= 0"),
        ({"a": {"in_per_1k": "x", "out_per_1k": 1}}, "in_per_1k must be a number, got 'x'"),
    ],
)
def test_bad_price_tables_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        parse_prices(data)


def test_a_price_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("a: 1")
    with pytest.raises(ValueError, match="must be a .json or .toml file"):
        load_prices(tmp_path / "p.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_prices(tmp_path / "bad.json")


def test_a_call_the_rate_limit_refused_is_not_an_llm_call():
    from pyagentbench.mocks import RateLimitError

    clock = [0.0]
    llm = MockLLM(rate_limit=1, clock=lambda: clock[0])
    with UsageWindow() as window:
        llm.complete("a")
        with pytest.raises(RateLimitError):
            llm.complete("b")
    assert window.totals().llm_calls == 1


def test_toml_prices_without_tomllib_or_tomli_say_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "p.toml").write_text('[a]\nin_per_1k = 1\nout_per_1k = 1\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.9 and 3.10
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ValueError, match="reading TOML needs Python 3.11\\+ \\(tomllib\\) or the tomli "
                                         "package; install tomli or write the prices as JSON"):
        load_prices(tmp_path / "p.toml")


def test_counted_calls_count_tokens_saved_by_agent_cache_hits():
    agent = _LLMAgent(MockLLM(responses=[RESPONSE]), cache=Cache(maxsize=16))
    counted = CountedCalls()
    counted.run(agent.process, (PROMPT,), {}, 3)  # a miss, then two hits
    record = counted.metrics()
    assert record["tokens_saved_per_call_max"] == 110
    assert record["tokens_saved_per_call"] == pytest.approx(220 / 3)
    assert record["llm_calls_per_call"] == pytest.approx(1 / 3)
