"""Latency histogram: the native :class:`Histogram`.

``Histogram(lowest=1, highest=3_600_000_000_000, significant_figures=3, clamp=True)`` keeps counts
in HDR-style log-linear buckets: every value in ``[0, highest]`` is stored with
``significant_figures`` decimal digits of precision, so ``percentile(p)`` is within a relative error
of ``10 ** -significant_figures`` of the exact nearest-rank percentile. ``min`` and ``max`` are
exact; ``mean`` and ``stddev`` are computed from the exact values recorded. Memory follows the
largest value recorded: a new histogram holds no counts, and they grow to the bucket of the largest
value so far (``memory_bytes``); a ``record()`` within them never allocates.

Values outside ``[0, highest]`` are clamped to the nearest bound and counted in ``clamped`` (the
default), or raise ``ValueError`` when ``clamp=False``.

The class is the native type itself: ``record()`` is a direct C call.
"""

from __future__ import annotations

from .._native import Histogram

__all__ = ["Histogram", "DEFAULT_PERCENTILES"]

#: The percentiles ``Histogram.percentiles()`` reports when called without arguments.
DEFAULT_PERCENTILES = (50, 95, 99.0, 99.9)
