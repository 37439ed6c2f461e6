"""A benchmark's round times, kept small enough to save: log-bucketed counts.

pytest-benchmark keeps a benchmark's rounds only under ``--benchmark-save-data``; without them a
later compare has one number per side and no way to tell a change from noise. The fixture saves,
in ``extra_info["agentbench"]["round_times"]``, a :class:`Samples`: each round's time per call,
counted in buckets whose width grows with the value (bucket ``i`` holds ``(g**(i-1), g**i]`` with
``g = (1 + e) / (1 - e)``), read back as ``2 * g**i / (g + 1)``, which is within a relative error
``e`` of every value in the bucket. With the default ``e = 0.5%``, every quantile read back is
within 0.5% of the same quantile of the raw rounds; min and max are kept exact.

The encoding is bounded: a summary whose JSON would exceed :data:`MAX_JSON_BYTES` (8 KiB) merges
neighbouring buckets (``g`` squared, so ``e`` about doubles) until it fits, and says so in its
``relative_error``. Rounds spread over a range of less than about 10**6 (e.g. 1 us to 1 s) fit
at 0.5%.

This module reads and writes plain JSON values and never imports the native module, so the saved
runs can be read anywhere.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["Samples", "SAMPLES_KEY", "FORMAT", "MAX_JSON_BYTES", "DEFAULT_RELATIVE_ERROR"]

#: Key of the summary inside a benchmark's ``extra_info["agentbench"]``.
SAMPLES_KEY = "round_times"
#: Value of the summary's ``format`` key; a reader refuses another.
FORMAT = "logbins-1"
#: Largest JSON text of one summary (what it adds to the saved file per benchmark).
MAX_JSON_BYTES = 8192
#: Relative error of each value read back, before any merging to fit MAX_JSON_BYTES.
DEFAULT_RELATIVE_ERROR = 0.005


def _gamma(relative_error: float) -> float:
    return (1 + relative_error) / (1 - relative_error)


@dataclass(frozen=True)
class Samples:
    """Counts of positive values in log buckets (index -> count), plus exact count, min and max.

    ``zeros`` counts values <= 0 (a round faster than the clock's resolution), read back as 0.
    ``blocks`` are the medians of up to :attr:`BLOCKS` consecutive runs of rounds in the order
    they ran (the run's drift over time), when the writer knew the order.
    """

    relative_error: float
    bins: Mapping[int, int]
    count: int
    min: float
    max: float
    zeros: int = 0
    blocks: tuple[float, ...] = field(default=())

    #: How many time-ordered block medians :meth:`from_values` keeps.
    BLOCKS = 16

    # ---- building ----

    @classmethod
    def from_values(cls, values: Iterable[float], relative_error: float = DEFAULT_RELATIVE_ERROR,
                    ordered: bool = True) -> "Samples":
        """A summary of *values* (seconds), in the order they were taken if *ordered*."""
        data = [float(v) for v in values]
        if not data:
            raise ValueError("Samples.from_values(): no values")
        if not all(math.isfinite(v) for v in data):
            raise ValueError("Samples.from_values(): values must be finite numbers")
        if not 0 < relative_error < 0.5:
            raise ValueError(f"Samples.from_values(): relative_error must be in (0, 0.5), got {relative_error}")
        scale = 1 / math.log(_gamma(relative_error))
        log, ceil = math.log, math.ceil
        positive = [value for value in data if value > 0]
        zeros = len(data) - len(positive)
        bins = Counter([ceil(log(value) * scale) for value in positive])
        blocks: tuple[float, ...] = ()
        if ordered and len(data) >= 2 * cls.BLOCKS:
            size = len(data) / cls.BLOCKS
            blocks = tuple(_median(data[round(b * size):round((b + 1) * size)]) for b in range(cls.BLOCKS))
        return cls(relative_error, dict(sorted(bins.items())), len(data), min(data), max(data), zeros,
                   blocks)

    def coarsened(self) -> "Samples":
        """The same values in buckets twice as wide (on a log scale): neighbouring buckets merged."""
        bins: dict[int, int] = {}
        for index, count in self.bins.items():
            merged = -((-index) // 2)  # ceil(index / 2): (g**(2j-2), g**(2j)] is bucket j at g**2
            bins[merged] = bins.get(merged, 0) + count
        gamma = _gamma(self.relative_error) ** 2
        return Samples((gamma - 1) / (gamma + 1), bins, self.count, self.min, self.max, self.zeros,
                       self.blocks)

    def bounded(self, max_bytes: int = MAX_JSON_BYTES) -> "Samples":
        """This summary, coarsened until its JSON is at most *max_bytes* long."""
        samples = self
        while len(json.dumps(samples.to_json(), separators=(",", ":"))) > max_bytes:
            if len(samples.bins) <= 1:
                raise ValueError("Samples.bounded(): cannot fit the summary")  # pragma: no cover
            samples = samples.coarsened()
        return samples

    # ---- reading ----

    @property
    def gamma(self) -> float:
        return _gamma(self.relative_error)

    def value(self, index: int) -> float:
        """The value bucket *index* stands for, clamped to the exact min and max."""
        estimate = 2 * self.gamma ** index / (self.gamma + 1)
        return min(max(estimate, self.min), self.max)

    def items(self) -> list[tuple[float, int]]:
        """(value, count) pairs in increasing value, zeros first."""
        pairs = [(0.0, self.zeros)] if self.zeros else []
        return pairs + [(self.value(i), c) for i, c in self.bins.items()]

    def quantile(self, q: float) -> float:
        """The nearest-rank quantile: the smallest value with at least ``q * count`` values at or
        below it (``q`` in [0, 1]; 0 is the min, 1 the max)."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if q == 0:
            return self.min
        if q == 1:
            return self.max
        rank = max(1, math.ceil(q * self.count - 1e-9))
        seen = 0
        for value, count in self.items():
            seen += count
            if seen >= rank:
                return value
        return self.max  # pragma: no cover - counts add up to count

    @property
    def median(self) -> float:
        return self.quantile(0.5)

    @property
    def mean(self) -> float:
        """The mean of the values read back (within relative_error of the raw mean)."""
        return sum(v * c for v, c in self.items()) / self.count

    # ---- JSON ----

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``bins`` is [first index, count, gap to the next index, count, ...]."""
        flat: list[int] = []
        previous = None
        for index, count in self.bins.items():
            flat += [index if previous is None else index - previous, count]
            previous = index
        data: dict[str, Any] = {
            "format": FORMAT, "unit": "s", "relative_error": self.relative_error, "count": self.count,
            "min": self.min, "max": self.max, "zeros": self.zeros, "bins": flat,
        }
        if self.blocks:
            data["blocks"] = [float(f"{b:.6g}") for b in self.blocks]
        return data

    @classmethod
    def from_json(cls, data: Any) -> "Samples":
        """The summary *data* holds; ValueError saying which key is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"is {type(data).__name__}, expected an object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")

        def number(key: str, integer: bool = False) -> Any:
            value = data.get(key)
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or not math.isfinite(value):
                raise ValueError(f"{key} is {value!r}, expected a {'whole ' if integer else ''}number")
            return value

        relative_error = float(number("relative_error"))
        if not 0 < relative_error < 1:
            raise ValueError(f"relative_error is {relative_error}, expected a number in (0, 1)")
        count, zeros = number("count", True), number("zeros", True)
        flat = data.get("bins")
        if not isinstance(flat, list) or len(flat) % 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise ValueError("bins is not a list of whole numbers in pairs")
        bins: dict[int, int] = {}
        index = 0
        for position in range(0, len(flat), 2):
            gap, bin_count = flat[position], flat[position + 1]
            if position and gap <= 0 or bin_count <= 0:
                raise ValueError(f"bins[{position}:{position + 2}] = {flat[position:position + 2]}: "
                                 "gaps and counts must be positive")
            index = gap if position == 0 else index + gap
            bins[index] = bin_count
        if sum(bins.values()) + zeros != count or count < 1:
            raise ValueError(f"the bins and zeros hold {sum(bins.values()) + zeros} values, count says {count}")
        blocks = data.get("blocks", [])
        if not isinstance(blocks, list) or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in blocks):
            raise ValueError("blocks is not a list of numbers")
        low, high = float(number("min")), float(number("max"))
        if low > high:
            raise ValueError(f"min {low} is above max {high}")
        return cls(relative_error, bins, count, low, high, zeros, tuple(float(b) for b in blocks))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
