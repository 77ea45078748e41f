"""Bar interval labels ("500ms", "1s", "5m", "1h", "1d") <-> microseconds."""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise

_INTERVAL_RE = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
_UNIT_US = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}


def parse_interval(text: str) -> int:
    """Interval label -> length in microseconds; ValueError explains a bad label."""
    match = _INTERVAL_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"bad bar interval {text!r}: expected <positive integer><unit> with unit "
            "ms, s, m, h or d, e.g. '1s', '5m', '1h', '1d'"
        )
    length = int(match.group(1)) * _UNIT_US[match.group(2)]
    if length == 0:
        raise ValueError(f"bad bar interval {text!r}: must be longer than zero")
    return length


def parse_intervals(texts: Iterable[str]) -> list[tuple[str, int]]:
    """Labels -> [(label, µs)] shortest first; rejects empty lists and duplicate lengths."""
    parsed = sorted(((text, parse_interval(text)) for text in texts), key=lambda item: item[1])
    if not parsed:
        raise ValueError("no bar intervals configured")
    for (first, length), (second, other) in pairwise(parsed):
        if length == other:
            raise ValueError(f"bar intervals {first!r} and {second!r} are the same length")
    return parsed
