"""Agents: the agent layer built on the runtime.

Agent, AgentPool, BatchExecutor, CircuitBreaker, load runs, token accounting and the seeded mock LLM
and tools. Imports the instruments and runtime layers, never the integrations above it.
"""
