"""Shared by the tests that run an operation a million times and expect RSS to stay flat."""

import gc

import psutil


def rss_growth_bytes(op, total: int, batch: int = 100_000) -> int:
    """RSS growth across `total` operations of op(n) (op does n operations) after a warm-up batch."""
    process = psutil.Process()
    op(batch)
    gc.collect()
    before = process.memory_info().rss
    for _ in range(total // batch):
        op(batch)
    gc.collect()
    return process.memory_info().rss - before
