"""Usage from real LLM clients, reported with :func:`~pyagentbench.agents.usage.record_usage`.

Each adapter needs nothing but the client library itself, imported only when the adapter is used:

- **openai**: :func:`record_openai_usage` reads the ``usage`` of a chat completion, a Responses
  API response, a streamed chat chunk or a Responses stream event; :func:`instrument_openai`
  makes every ``chat.completions.create`` and ``responses.create`` of a client (``OpenAI`` or
  ``AsyncOpenAI``, streaming or not) report its usage. A chat stream reports usage only when asked
  (``stream_options={"include_usage": True}``), so the instrumented client asks for it unless the
  call set ``stream_options`` itself.
- **langchain-core**: :class:`LangChainUsageHandler` (a callback handler) reports each LLM run's
  ``usage_metadata``: ``model.invoke(..., config={"callbacks": [LangChainUsageHandler()]})``.
- **pydantic-ai**: :func:`record_pydantic_ai_usage` reports an agent run's ``usage()``.

One call of ``create`` (or one LLM run) is one LLM call; a streamed call is reported when the chunk
or event carrying its usage arrives, so a stream abandoned before its end reports nothing.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional

from .usage import record_usage

__all__ = [
    "record_openai_usage",
    "instrument_openai",
    "LangChainUsageHandler",
    "record_pydantic_ai_usage",
]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def record_openai_usage(obj: Any, model: Optional[str] = None) -> bool:
    """Report the usage an openai object carries; True if it carried any.

    *obj*: a ``ChatCompletion`` or ``ChatCompletionChunk`` (``usage.prompt_tokens`` /
    ``completion_tokens``), a Responses ``Response`` (``usage.input_tokens`` /
    ``output_tokens``), or a Responses stream event whose ``response`` has a usage (the
    ``response.completed`` event). *model* defaults to the object's own ``model``.
    """
    response = getattr(obj, "response", None)
    if getattr(obj, "usage", None) is None and response is not None:
        obj = response  # a Responses stream event
    usage = getattr(obj, "usage", None)
    if usage is None:
        return False
    if hasattr(usage, "prompt_tokens"):
        tokens_in, tokens_out = _int(usage.prompt_tokens), _int(usage.completion_tokens)
    else:
        tokens_in, tokens_out = _int(getattr(usage, "input_tokens", 0)), _int(getattr(usage, "output_tokens", 0))
    name = model if model is not None else getattr(obj, "model", None)
    record_usage(tokens_in, tokens_out, name if isinstance(name, str) else None)
    return True


class _UsageStream:
    """A client's stream, reporting the usage its chunks or events carry as they pass."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._iterator: Any = None

    def __iter__(self) -> "_UsageStream":
        self._iterator = iter(self._stream)
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._stream)
        item = next(self._iterator)
        record_openai_usage(item)
        return item

    def __aiter__(self) -> "_UsageStream":
        self._iterator = self._stream.__aiter__()
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        item = await self._iterator.__anext__()
        record_openai_usage(item)
        return item

    def __enter__(self) -> "_UsageStream":
        self._stream.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._stream.__exit__(*exc_info)

    async def __aenter__(self) -> "_UsageStream":
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._stream.__aexit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _reported(result: Any, streaming: bool) -> Any:
    if streaming:
        return _UsageStream(result)
    record_openai_usage(result)
    return result


def _wrap_create(create: Any, chat: bool) -> Any:
    def prepare(kwargs: dict) -> bool:
        streaming = bool(kwargs.get("stream"))
        if streaming and chat and "stream_options" not in kwargs:
            kwargs["stream_options"] = {"include_usage": True}
        return streaming

    @functools.wraps(create)
    def reporting_create(*args: Any, **kwargs: Any) -> Any:
        streaming = prepare(kwargs)
        result = create(*args, **kwargs)
        if inspect.isawaitable(result):  # AsyncOpenAI: a coroutine to await
            async def finish() -> Any:
                return _reported(await result, streaming)

            return finish()
        return _reported(result, streaming)

    reporting_create.__pyagentbench_usage__ = True  # type: ignore[attr-defined]
    return reporting_create


def instrument_openai(client: Any) -> Any:
    """Make *client* (``openai.OpenAI`` or ``openai.AsyncOpenAI``) report the usage of every
    ``chat.completions.create`` and ``responses.create``, streaming or not; returns the client.
    Instrumenting a client twice changes nothing."""
    targets = [(getattr(getattr(client, "chat", None), "completions", None), True),
               (getattr(client, "responses", None), False)]
    if all(resource is None for resource, _ in targets):
        raise TypeError(f"instrument_openai() takes an openai.OpenAI or AsyncOpenAI client, "
                        f"not {type(client).__name__}")
    for resource, chat in targets:
        create = getattr(resource, "create", None) if resource is not None else None
        if create is not None and not getattr(create, "__pyagentbench_usage__", False):
            resource.create = _wrap_create(create, chat)
    return client


def _langchain_base() -> Any:
    try:
        from langchain_core.callbacks import BaseCallbackHandler
    except ImportError:  # the handler still works with any callback manager that calls on_llm_end
        return object
    return BaseCallbackHandler


class LangChainUsageHandler(_langchain_base()):  # type: ignore[misc]
    """A langchain-core callback handler that reports each LLM run's usage.

    On ``on_llm_end`` it reads every generation's message ``usage_metadata`` (``input_tokens``,
    ``output_tokens``) and its model (``response_metadata["model_name"]`` or ``["model"]``); a
    run whose messages carry no usage reports one call without tokens.
    """

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        """Report the usage of a finished LLM run."""
        tokens_in = tokens_out = 0
        model = None
        for generations in getattr(response, "generations", None) or []:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None) or {}
                tokens_in += _int(usage.get("input_tokens"))
                tokens_out += _int(usage.get("output_tokens"))
                metadata = getattr(message, "response_metadata", None) or {}
                model = model or metadata.get("model_name") or metadata.get("model")
        if model is None:
            llm_output = getattr(response, "llm_output", None) or {}
            model = llm_output.get("model_name") or llm_output.get("model")
        record_usage(tokens_in, tokens_out, model if isinstance(model, str) else None)


def record_pydantic_ai_usage(result: Any, model: Optional[str] = None) -> None:
    """Report a pydantic-ai agent run's usage: ``record_pydantic_ai_usage(agent.run_sync(...))``.

    Reads ``result.usage`` (a property; a method in releases before 2): ``input_tokens`` /
    ``output_tokens`` (``request_tokens`` / ``response_tokens`` in older releases) and
    ``requests``, the LLM calls the run made.
    """
    usage = getattr(result, "usage", None)
    if usage is not None and not hasattr(usage, "requests") and callable(usage):
        usage = usage()  # releases before 2: a method
    if usage is None or not hasattr(usage, "requests"):
        raise TypeError(f"record_pydantic_ai_usage() takes a pydantic-ai run result, not {type(result).__name__}")
    tokens_in = _int(getattr(usage, "input_tokens", None)) or _int(getattr(usage, "request_tokens", None))
    tokens_out = _int(getattr(usage, "output_tokens", None)) or _int(getattr(usage, "response_tokens", None))
    calls = _int(getattr(usage, "requests", None))
    record_usage(tokens_in, tokens_out, model, calls)
