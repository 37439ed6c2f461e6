"""Runtime: the native data structures an agent runs on.

TaskQueue, Cache/cached and Histogram, thin facades over the types in ``pyagentbench._native``.
Imports only the native module.
"""
