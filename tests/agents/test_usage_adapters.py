"""Adapters for real clients, offline: each client answers from a fake transport or fake model,
built with the client's own types, and its usage must reach a UsageWindow exactly."""

from __future__ import annotations

import asyncio
import json

import pytest

from pyagentbench.agents.usage import UsageWindow

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from pyagentbench.agents.adapters import (  # noqa: E402
    LangChainUsageHandler,
    instrument_openai,
    record_openai_usage,
    record_pydantic_ai_usage,
)

CHAT = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-test",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
RESPONSE = {
    "id": "r1", "object": "response", "created_at": 0, "model": "gpt-test", "status": "completed",
    "output": [], "parallel_tool_calls": False, "tool_choice": "auto", "tools": [],
    "usage": {"input_tokens": 30, "output_tokens": 7, "total_tokens": 37,
              "input_tokens_details": {"cached_tokens": 0},
              "output_tokens_details": {"reasoning_tokens": 0}},
}


def _chunk(content: str | None, usage: dict | None) -> dict:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-test",
            "choices": choices, "usage": usage}


def _sse(events: list[tuple[str | None, dict]]) -> bytes:
    lines = []
    for name, data in events:
        if name:
            lines.append(f"event: {name}")
        lines.append(f"data: {json.dumps(data)}")
        lines.append("")
    lines += ["data: [DONE]", "", ""]
    return "\n".join(lines).encode()


class Server:
    """What the fake transport saw and answers."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        streaming = body.get("stream")
        if request.url.path.endswith("/chat/completions"):
            if not streaming:
                return httpx.Response(200, json=CHAT)
            usage = CHAT["usage"] if body.get("stream_options", {}).get("include_usage") else None
            events = [(None, _chunk("h", None)), (None, _chunk("i", None))]
            if usage:
                events.append((None, _chunk(None, usage)))
            return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})
        if not streaming:
            return httpx.Response(200, json=RESPONSE)
        events = [("response.created", {"type": "response.created", "sequence_number": 0,
                                        "response": dict(RESPONSE, status="in_progress", usage=None)}),
                  ("response.completed", {"type": "response.completed", "sequence_number": 1,
                                          "response": RESPONSE})]
        return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})


def _clients(server: Server):
    sync = openai.OpenAI(api_key="test", base_url="http://test/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(server.handle)))

    async def ahandle(request: httpx.Request) -> httpx.Response:
        return server.handle(request)

    asynchronous = openai.AsyncOpenAI(api_key="test", base_url="http://test/v1", max_retries=0,
                                      http_client=httpx.AsyncClient(transport=httpx.MockTransport(ahandle)))
    return instrument_openai(sync), instrument_openai(asynchronous)


MESSAGES = [{"role": "user", "content": "hello"}]


def test_openai_sync_chat_and_responses_report_their_usage():
    server = Server()
    client, _ = _clients(server)
    with UsageWindow() as window:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        client.responses.create(model="gpt-test", input="hello")
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (2, 12 + 30, 5 + 7)


def test_openai_sync_streams_report_usage_and_chat_streams_ask_for_it():
    server = Server()
    client, _ = _clients(server)
    with UsageWindow() as window:
        chunks = list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
        events = list(client.responses.create(model="gpt-test", input="hello", stream=True))
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    assert len(chunks) == 3 and len(events) == 2
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (2, 42, 12)


def test_openai_async_calls_and_streams_report_their_usage():
    server = Server()
    _, client = _clients(server)

    async def run() -> None:
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        await client.responses.create(model="gpt-test", input="hello")
        stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        async with await client.responses.create(model="gpt-test", input="hi", stream=True) as events:
            async for _ in events:
                pass

    with UsageWindow() as window:
        asyncio.run(run())
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (4, 84, 24)


def test_openai_objects_are_read_directly_and_the_model_is_theirs():
    from openai.types.chat import ChatCompletion

    with UsageWindow({"gpt-test": (1.0, 1.0)}) as window:  # type: ignore[dict-item]
        assert record_openai_usage(ChatCompletion.model_validate(CHAT))
        assert not record_openai_usage(ChatCompletion.model_validate(dict(CHAT, usage=None)))
    assert window.totals().llm_calls == 1 and not window.unpriced_models


def test_instrumenting_twice_reports_once_and_other_objects_are_refused():
    server = Server()
    client, _ = _clients(server)
    instrument_openai(client)
    with UsageWindow() as window:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert window.totals().llm_calls == 1
    with pytest.raises(TypeError, match="takes an openai.OpenAI or AsyncOpenAI client, not str"):
        instrument_openai("client")


def test_langchain_handler_reads_usage_metadata():
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    replies = iter([AIMessage(content="hi", usage_metadata={"input_tokens": 9, "output_tokens": 4,
                                                            "total_tokens": 13},
                              response_metadata={"model_name": "lc-model"})])
    model = GenericFakeChatModel(messages=replies)
    with UsageWindow() as window:
        model.invoke("hello", config={"callbacks": [LangChainUsageHandler()]})
    totals = window.totals()
    assert (totals.llm_calls, totals.tokens_in, totals.tokens_out) == (1, 9, 4)
    assert window.unpriced_models == {"lc-model"}


def test_pydantic_ai_run_usage():
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.test import TestModel

    agent = pydantic_ai.Agent(TestModel())
    result = agent.run_sync("hello")
    usage = result.usage if hasattr(result.usage, "requests") else result.usage()
    with UsageWindow() as window:
        record_pydantic_ai_usage(result, model="test")
    totals = window.totals()
    assert totals.llm_calls == usage.requests >= 1
    assert (totals.tokens_in, totals.tokens_out) == (usage.input_tokens, usage.output_tokens)
    assert totals.tokens_in > 0
    with pytest.raises(TypeError, match="takes a pydantic-ai run result, not str"):
        record_pydantic_ai_usage("result")


def test_a_chat_stream_keeps_its_own_stream_options_and_an_abandoned_stream_reports_nothing():
    server = Server()
    client, _ = _clients(server)
    with UsageWindow() as window:
        list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": False}))
        stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        next(iter(stream))  # the first chunk only: the usage comes in the last
        stream.close()
    assert server.requests[0]["stream_options"] == {"include_usage": False}
    assert window.totals().llm_calls == 0
