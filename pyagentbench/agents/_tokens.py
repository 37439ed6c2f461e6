"""Token accounting shared by the mocks and the agent layer.

An agent points the context variable ``token_sink`` at the per-worker counters of the task it is
running; :class:`pyagentbench.mocks.MockLLM` (or the handler, through ``Agent.record_tokens``) adds
the tokens it spends with :func:`report_tokens`. A context variable follows both threads and
asyncio tasks, so concurrent tasks never mix their counts. Outside an agent nothing is recorded.
"""

from __future__ import annotations

import contextvars
from typing import Any, Optional

__all__ = ["token_sink", "report_tokens", "estimate_tokens"]

#: The object whose ``tokens_in`` / ``tokens_out`` attributes collect the current task's tokens.
token_sink: contextvars.ContextVar[Optional[Any]] = contextvars.ContextVar("pyagentbench_token_sink", default=None)


def report_tokens(tokens_in: int, tokens_out: int) -> None:
    """Add tokens to the current context's sink, if an agent set one."""
    sink = token_sink.get()
    if sink is not None:
        sink.tokens_in += tokens_in
        sink.tokens_out += tokens_out


def estimate_tokens(text: str) -> int:
    """Tokens in *text* by the common rule of thumb for English with BPE tokenizers: one per 4 chars.

    Rounded up, so any non-empty text counts at least one token; the empty string counts zero.
    """
    return (len(text) + 3) // 4
