"""Event times moved to the present: one constant offset for every time field a venue sends.

A capture recorded in 2024 replayed as-is makes a live pipeline (windows closed
by the wall clock) treat every trade as late. The simulator therefore shifts
each event time field of every frame it sends by one offset, fixed when the
replay starts, so order, spacing and everything else in the frame (prices,
sizes, update ids, OKX checksums, which cover prices and sizes only) stay
byte for byte as recorded.

Fields shifted (values of 12+ digits only: epoch milliseconds, or microseconds
from 15 digits on, which get the offset times 1000):
- Binance spot / USD-M: ``E`` (event time) and ``T`` (trade, transaction, kline
  close or next funding time), and a kline's ``t`` (open time). A trade's ``t`` is
  its id and is never touched.
- OKX: ``ts`` and the funding channel's ``fundingTime`` / ``nextFundingTime``.
Binance REST depth snapshots carry no time field.
"""

from __future__ import annotations

import math
import re

from simulator.tape import BINANCE_VENUES, Tape

_BINANCE_FIELDS = re.compile(r'"([ET])":([0-9]{12,})')
_BINANCE_KLINE_OPEN = re.compile(r'"(t)":([0-9]{12,})')
_OKX_FIELDS = re.compile(r'"(ts|fundingTime|nextFundingTime)":"([0-9]{12,})"')
_MICROS_DIGITS = 15  # 1e14 ms is the year 5138: longer values are microseconds
_ROUND_MS = 1000  # whole seconds: what was second-aligned in the capture stays so


def first_event_ms(tape: Tape) -> int:
    """The earliest event time of the tape (ms): Binance ``E``, OKX ``ts``.

    Falls back to the first frame's receive time for a tape without them."""
    binance = tape.venue in BINANCE_VENUES
    pattern = _BINANCE_FIELDS if binance else _OKX_FIELDS
    primary = "E" if binance else "ts"
    earliest: int | None = None
    for entry in tape.entries:
        for match in pattern.finditer(entry.text):
            if match.group(1) == primary:
                value = _as_ms(match.group(2))
                earliest = value if earliest is None else min(earliest, value)
    if earliest is None:
        return tape.entries[0].ts // 1000 if tape.entries else 0
    return earliest


def offset_to(now_ms: int, first_ms: int) -> int:
    """Offset (ms) that moves ``first_ms`` to ``now_ms``, rounded up to a whole second."""
    return math.ceil((now_ms - first_ms) / _ROUND_MS) * _ROUND_MS


class Restamper:
    """Shifts the event time fields of one venue's frames by ``offset_ms``."""

    def __init__(self, venue: str, offset_ms: int) -> None:
        self.binance = venue in BINANCE_VENUES
        self.offset_ms = offset_ms

    def __call__(self, text: str) -> str:
        if self.binance:
            text = _BINANCE_FIELDS.sub(self._shift, text)
            if '"e":"kline"' in text:
                text = _BINANCE_KLINE_OPEN.sub(self._shift, text)
            return text
        return _OKX_FIELDS.sub(self._shift_quoted, text)

    def _shifted(self, digits: str) -> int:
        micros = len(digits) >= _MICROS_DIGITS
        return int(digits) + (self.offset_ms * 1000 if micros else self.offset_ms)

    def _shift(self, match: re.Match[str]) -> str:
        return f'"{match.group(1)}":{self._shifted(match.group(2))}'

    def _shift_quoted(self, match: re.Match[str]) -> str:
        return f'"{match.group(1)}":"{self._shifted(match.group(2))}"'


def _as_ms(digits: str) -> int:
    return int(digits) // 1000 if len(digits) >= _MICROS_DIGITS else int(digits)
