"""Looping a tape (``--loop``): lap N is the capture again, moved forward in time and ids.

A client that saw lap 0 must see lap 1 as new market data, not as a replay:
trade ids, book update ids and event times all shift by a per-tape stride times
the lap number, so dedupe windows keep filling, books keep their sequence rules
and bars keep opening. Prices and sizes are untouched. A lap is served on fresh
connections only (the simulator closes a connection at the end of its lap), so
each lap starts the way a real reconnect does: a new REST / in-band snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from simulator.tape import Tape

# Binance: E/T event times (ms); t/a/f/l trade ids; U/u/pu book ids (u also in
# bookTicker), lastUpdateId in REST snapshots. Values are bare integers; the
# array-valued "a" (asks) never matches.
_BINANCE_TIME = re.compile(r'"(E|T)":(\d+)')
_BINANCE_ID = re.compile(r'"(t|a|f|l|U|u|pu|lastUpdateId)":(\d+)')
# OKX: ts (ms text), tradeId (text), seqId/prevSeqId (integers; a prevSeqId of -1
# means "snapshot" and has no digits right after the colon, so it is kept).
_OKX_TIME = re.compile(r'"(ts)":"(\d+)"')
_OKX_ID = re.compile(r'"(tradeId)":"(\d+)"|"(seqId|prevSeqId)":(\d+)')


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

    def __init__(self, tape: Tape, shift_times: bool = True) -> None:
        self.okx = tape.venue == "okx"
        time_re, id_re = (_OKX_TIME, _OKX_ID) if self.okx else (_BINANCE_TIME, _BINANCE_ID)
        texts = [e.text for e in tape.entries]
        times = [int(m.group(2)) for t in texts for m in time_re.finditer(t)]
        ids = [int(m.group(2) or m.group(4)) for t in texts for m in id_re.finditer(t)]
        ids.extend(seed.last_update_id for seed in tape.seeds.values())
        ids.extend(e.last_id for e in tape.entries if e.last_id is not None)
        # One second past the capture's span: lap n+1 starts after lap n ended.
        self.time_stride_ms = _span(times) + 1000
        self.id_stride = _round_up(_span(ids))
        self._time_re, self._id_re = time_re, id_re
        # Off when the simulator re-stamps each lap to "now" itself (simulator.restamp).
        self.shift_times = shift_times

    def apply(self, text: str, lap: int) -> str:
        if lap <= 0:
            return text
        dt = lap * self.time_stride_ms if self.shift_times else 0
        did = lap * self.id_stride
        if self.okx:
            text = self._time_re.sub(lambda m: f'"ts":"{int(m.group(2)) + dt}"', text)

            def shift_id(m: re.Match[str]) -> str:
                if m.group(1) is not None:
                    return f'"tradeId":"{int(m.group(2)) + did}"'
                return f'"{m.group(3)}":{int(m.group(4)) + did}'

            return self._id_re.sub(shift_id, text)
        text = self._time_re.sub(lambda m: f'"{m.group(1)}":{int(m.group(2)) + dt}', text)
        return self._id_re.sub(lambda m: f'"{m.group(1)}":{int(m.group(2)) + did}', text)
