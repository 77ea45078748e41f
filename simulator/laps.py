"""Looping a tape (``--loop``): lap N is the capture again, moved forward in time and ids.

A client that saw lap 0 must see lap 1 as new market data, not as a replay:
trade ids, book update ids and event times all shift by a per-tape stride times
the lap number, so dedupe windows keep filling, books keep their sequence rules
and bars keep opening. Prices and sizes are untouched. A lap is served on fresh
connections only (the simulator closes a connection at the end of its lap), so
each lap starts the way a real reconnect does: a new REST / in-band snapshot.
Which fields are times and ids is the venue's (``VenueSim.lap_times``,
``lap_ids``, ``lap_shift``).
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.tape_types import Tape
from simulator.venues import VenueSim, venue_sim


def _round_up(span: int) -> int:
    """A power of ten above ``span``: shifted ids stay readable (lap visible in the digits)."""
    stride = 10
    while stride <= span:
        stride *= 10
    return stride


def _span(values: Iterable[int]) -> int:
    found = list(values)
    return max(found) - min(found) if found else 0


class LapShift:
    """Rewrites frame text for lap ``n``: ids + n * id_stride, times + n * time_stride_ms."""

    def __init__(self, tape: Tape, shift_times: bool = True, venue: VenueSim | None = None) -> None:
        self._venue = venue if venue is not None else venue_sim(tape.venue)
        texts = [e.text for e in tape.entries]
        times = [value for t in texts for value in self._venue.lap_times(t)]
        ids = [value for t in texts for value in self._venue.lap_ids(t)]
        ids.extend(seed.last_update_id for seed in tape.seeds.values())
        ids.extend(e.last_id for e in tape.entries if e.last_id is not None)
        # One second past the capture's span: lap n+1 starts after lap n ended.
        self.time_stride_ms = _span(times) + 1000
        self.id_stride = _round_up(_span(ids))
        # Off when the simulator re-stamps each lap to "now" itself (simulator.restamp).
        self.shift_times = shift_times

    def apply(self, text: str, lap: int) -> str:
        if lap <= 0:
            return text
        dt = lap * self.time_stride_ms if self.shift_times else 0
        return self._venue.lap_shift(text, dt, lap * self.id_stride)
