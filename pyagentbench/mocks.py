"""Seeded stand-ins for LLMs and tools: the public home of :mod:`pyagentbench.agents.mocks`.

``from pyagentbench.mocks import MockLLM, MockTool`` is the import users write; the code lives in
the agent layer.
"""

from .agents.mocks import (
    DEFAULT_KEEP_CALLS,
    Fixed,
    LatencyModel,
    LLMCall,
    LogNormal,
    MockLLM,
    MockLLMError,
    MockTool,
    MockToolError,
    Normal,
    RateLimitError,
    Replay,
    ToolCall,
    estimate_tokens,
)

__all__ = [
    "MockLLM",
    "MockTool",
    "LLMCall",
    "ToolCall",
    "LatencyModel",
    "Fixed",
    "Normal",
    "LogNormal",
    "Replay",
    "MockLLMError",
    "MockToolError",
    "RateLimitError",
    "estimate_tokens",
    "DEFAULT_KEEP_CALLS",
]
