"""Human units: format durations, sizes and rates for people, and parse them from budget strings.

Durations are seconds, sizes are bytes. Parsing accepts ``ns``, ``us``, ``µs``, ``ms``, ``s`` for
time and ``B``, ``KB``, ``MB``, ``GB`` (powers of 1000), ``KiB``, ``MiB``, ``GiB`` (powers of 1024)
for size; a plain number is taken in the base unit.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "format_duration",
    "format_bytes",
    "format_rate",
    "format_count",
    "parse_duration",
    "parse_size",
]

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\d\s.]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    match = _NUMBER_WITH_UNIT.match(text)
    if match is None:
        raise ValueError(f"cannot parse {what} {text!r}: expected a number and a unit, e.g. '200ms'")
    return float(match.group(1)), match.group(2)


def _as_float(value: int | float, what: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past a float's range
        raise ValueError(f"a {what} must be finite, got an integer of {value.bit_length()} bits") from None


def parse_duration(value: str | float | int) -> float:
    """Return *value* in seconds: ``"200ms"`` -> 0.2; a plain number is seconds."""
    if isinstance(value, bool):
        raise TypeError("a duration must be a number or a string such as '200ms', not bool")
    if isinstance(value, (int, float)):
        seconds = _as_float(value, "duration")
    elif isinstance(value, str):
        number, unit = _split(value, "duration")
        if unit and unit not in _DURATION_UNITS:
            raise ValueError(
                f"cannot parse duration {value!r}: unknown unit {unit!r} "
                f"(use one of {', '.join(_DURATION_UNITS)})"
            )
        seconds = number * _DURATION_UNITS.get(unit, 1.0)
    else:
        raise TypeError(f"a duration must be a number or a string, not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, got {value!r}")
    return seconds


def parse_size(value: str | float | int) -> float:
    """Return *value* in bytes: ``"50MB"`` -> 50_000_000, ``"1KiB"`` -> 1024; plain numbers are bytes."""
    if isinstance(value, bool):
        raise TypeError("a size must be a number or a string such as '50MB', not bool")
    if isinstance(value, (int, float)):
        size = _as_float(value, "size")
    elif isinstance(value, str):
        number, unit = _split(value, "size")
        if unit and unit.lower() not in _SIZE_UNITS:
            raise ValueError(
                f"cannot parse size {value!r}: unknown unit {unit!r} "
                "(use B, KB, MB, GB, KiB, MiB or GiB)"
            )
        size = number * _SIZE_UNITS.get(unit.lower(), 1)
    else:
        raise TypeError(f"a size must be a number or a string, not {type(value).__name__}")
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"a size must be finite and >= 0, got {value!r}")
    return size


def _scaled(value: float, steps: list[tuple[float, str]], digits: int) -> str:
    for factor, unit in steps:
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {unit}" if digits else f"{value / factor:.0f} {unit}"
    factor, unit = steps[-1]
    return f"{value / factor:.{digits}g} {unit}"


def format_duration(seconds: float, digits: int = 4) -> str:
    """Format seconds with the largest unit that keeps the number >= 1: ``0.0000162`` -> ``'16.2 us'``."""
    if seconds is None or not math.isfinite(seconds):
        return str(seconds)
    if seconds == 0:
        return "0 s"
    return _scaled(seconds, [(1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")], digits)


def format_bytes(size: float, digits: int = 4) -> str:
    """Format a byte count in binary units: ``52428800`` -> ``'50 MiB'``."""
    if size is None or not math.isfinite(size):
        return str(size)
    if size == 0:
        return "0 B"
    return _scaled(size, [(1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB"), (1.0, "B")], digits)


def format_count(value: float, digits: int = 4) -> str:
    """Format a plain count with k/M/G suffixes: ``1234567`` -> ``'1.235 M'``."""
    if value is None or not math.isfinite(value):
        return str(value)
    if abs(value) < 1000:
        return f"{value:.{digits}g}"
    return _scaled(value, [(1e9, "G"), (1e6, "M"), (1e3, "k")], digits)


def format_rate(per_second: float, unit: str = "ops", digits: int = 4) -> str:
    """Format a rate: ``61_700_000`` -> ``'61.7 Mops/s'``."""
    if per_second is None or not math.isfinite(per_second):
        return str(per_second)
    text = format_count(per_second, digits)
    if text[-1] in "kMG":
        return f"{text}{unit}/s"
    return f"{text} {unit}/s"
