"""Shared by the tests that run an operation a million times and expect RSS to stay flat."""

import gc
import warnings

import psutil


def _collect() -> None:
    """gc.collect(), quiet about what earlier tests left for it: an unclosed socket or event loop
    another test dropped warns (a ResourceWarning, an error under filterwarnings=error) in
    whichever test collects it first, and RSS is this helper's only concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def rss_growth_bytes(op, total: int, batch: int = 100_000) -> int:
    """RSS growth across `total` operations of op(n) (op does n operations) after a warm-up batch."""
    process = psutil.Process()
    op(batch)
    _collect()
    before = process.memory_info().rss
    for _ in range(total // batch):
        op(batch)
    _collect()
    return process.memory_info().rss - before
