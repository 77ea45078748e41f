"""Event times moved to the present: one constant offset for every time field a venue sends.

A capture recorded in 2024 replayed as-is makes a live pipeline (windows closed
by the wall clock) treat every trade as late. The simulator therefore shifts
each event time field of every frame it sends by one offset, fixed when the
replay starts, so order, spacing and everything else in the frame (prices,
sizes, update ids, OKX checksums, which cover prices and sizes only) stay
byte for byte as recorded.

Which fields are event times is the venue's (``VenueSim.restamp`` and
``event_times_ms``; docs/simulator.md lists them per venue). Binance and OKX
shift values of 12+ digits only: epoch milliseconds, or microseconds from 15
digits on, which get the offset times 1000.
"""

from __future__ import annotations

import math
import time

from simulator.tape_types import Tape
from simulator.venues import VenueSim, venue_sim

_ROUND_MS = 1000  # whole seconds: what was second-aligned in the capture stays so
_KEPT = 64  # re-stamp offsets kept over a long soak (``loop``): the oldest laps go

Session = frozenset[str] | None  # a subscription set; None: lap 0 of every set


def first_event_ms(tape: Tape, venue: VenueSim | None = None) -> int:
    """The earliest event time of the tape (ms): Binance ``E``, OKX ``ts``.

    Falls back to the first frame's receive time for a tape without them."""
    times = venue if venue is not None else venue_sim(tape.venue)
    earliest: int | None = None
    for entry in tape.entries:
        for value in times.event_times_ms(entry.text):
            earliest = value if earliest is None else min(earliest, value)
    if earliest is None:
        return tape.entries[0].ts // 1000 if tape.entries else 0
    return earliest


def offset_to(now_ms: int, first_ms: int) -> int:
    """Offset (ms) that moves ``first_ms`` to ``now_ms``, rounded up to a whole second."""
    return math.ceil((now_ms - first_ms) / _ROUND_MS) * _ROUND_MS


class Restamper:
    """Shifts the event time fields of one venue's frames by ``offset_ms``."""

    def __init__(self, venue: VenueSim, offset_ms: int) -> None:
        self._venue = venue
        self.offset_ms = offset_ms

    def __call__(self, text: str) -> str:
        return self._venue.restamp(text, self.offset_ms)


class LapStamps:
    """The simulator's offsets: lap 0, one offset fixed when the first client starts;
    later laps (``loop``), one per subscription set and lap, fixed when that lap
    starts. None of them with original times."""

    def __init__(self, tape: Tape, venue: VenueSim, original_times: bool) -> None:
        self._venue = venue
        self._first_event_ms = None if original_times else first_event_ms(tape, venue)
        self._stamps: dict[tuple[Session, int], Restamper] = {}

    @property
    def first_offset_ms(self) -> int | None:
        first = self._stamps.get((None, 0))
        return None if first is None else first.offset_ms

    def start(self, session: Session, lap: int) -> None:
        """Event times of this lap start now (when its first client starts streaming, not
        when the server started: a paced replay then stamps frames about when sent)."""
        key = (None, 0) if lap == 0 else (session, lap)
        if self._first_event_ms is None or key in self._stamps:
            return
        offset = offset_to(time.time_ns() // 1_000_000, self._first_event_ms)
        self._stamps[key] = Restamper(self._venue, offset)
        if len(self._stamps) > _KEPT:
            for old in sorted(self._stamps, key=lambda k: k[1])[: len(self._stamps) - _KEPT]:
                if old != (None, 0):
                    del self._stamps[old]

    def edit(self, text: str, session: Session, lap: int) -> str:
        stamp = self._stamps.get((None, 0) if lap == 0 else (session, lap))
        return text if stamp is None else stamp(text)
