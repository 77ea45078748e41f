"""Latest state kept for snapshots, and per-venue statistics for status.

Updated by the hub with every batch it sends, on the server's event loop, so
a snapshot taken there is exactly "everything sent before this point".
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

from sinks.fanout.requests import Filter
from sinks.fanout.routing import matches, truncate_book

Record = dict[str, Any]
_UNIT_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_INTERVAL_RE = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
RATE_WINDOW_S = 10
# Status event -> connection state it implies (other events leave the state as it was).
_STATE_OF_EVENT = {
    "connected": "connected",
    "subscribed": "connected",
    "resynced": "connected",
    "disconnected": "disconnected",
    "reconnecting": "reconnecting",
    "planned_reconnect": "reconnecting",
    "stale": "stale",
}


def interval_us(interval: str) -> int:
    match = _INTERVAL_RE.match(interval)
    return int(match.group(1)) * _UNIT_US[match.group(2)] if match else 0


class RateWindow:
    """Events per second over the last ``RATE_WINDOW_S`` whole seconds."""

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [second, count]

    def add(self, count: int, now: float) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            while self._buckets[0][0] <= second - RATE_WINDOW_S:
                self._buckets.popleft()

    def rate(self, now: float) -> float:
        second = int(now)
        total = sum(c for s, c in self._buckets if second - RATE_WINDOW_S < s < second)
        # Whole seconds only (the current one is still filling).
        return round(total / RATE_WINDOW_S, 2)


class VenueStats:
    def __init__(self) -> None:
        self.state = "unknown"
        self.records = 0
        self.reconnects = 0
        self.gaps = 0
        self.checksum_failures = 0
        self.last_message_ts: int | None = None
        self.last_event: str | None = None
        self.rate = RateWindow()

    def on_status(self, record: Record) -> None:
        event = record.get("event")
        self.last_event = event
        self.state = _STATE_OF_EVENT.get(str(event), self.state)
        if event in ("reconnecting", "planned_reconnect"):
            self.reconnects += 1
        elif event == "gap_detected":
            self.gaps += 1
        elif event == "checksum_mismatch":
            self.checksum_failures += 1

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state,
            "messages_per_second": self.rate.rate(now),
            "records": self.records,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "checksum_failures": self.checksum_failures,
            "last_message_ts": self.last_message_ts,
            "last_event": self.last_event,
        }


class LatestState:
    def __init__(self) -> None:
        self.books: dict[tuple[str, str], Record] = {}
        self.bbos: dict[tuple[str, str, str], Record] = {}  # by origin (book / ticker)
        self.bars: dict[tuple[str, str], dict[str, Record]] = {}
        self.status: dict[tuple[str, str | None], Record] = {}
        self.venues: dict[str, VenueStats] = {}
        self.total = RateWindow()
        self.records = 0

    def venue(self, name: str) -> VenueStats:
        stats = self.venues.get(name)
        if stats is None:
            stats = self.venues[name] = VenueStats()
        return stats

    def update(self, records: list[Record], now: float | None = None) -> None:
        now = time.time() if now is None else now
        counts: dict[str, int] = {}
        for record in records:
            if not isinstance(record, dict):
                continue  # off the contract (a user operator's bug): never sent either
            kind = record.get("type")
            venue = record.get("venue")
            if kind == "late":
                trade = record.get("trade")
                venue = trade.get("venue") if isinstance(trade, dict) else None
            if not isinstance(venue, str):
                continue
            counts[venue] = counts.get(venue, 0) + 1
            symbol: Any = record.get("symbol")
            if kind == "book":
                self.books[(venue, symbol)] = record
            elif kind == "bbo":
                self.bbos[(venue, symbol, record.get("origin", ""))] = record
            elif kind == "bar" and isinstance(record.get("interval"), str):
                self.bars.setdefault((venue, symbol), {})[record["interval"]] = record
            elif kind == "status":
                self.status[(venue, symbol)] = record
                self.venue(venue).on_status(record)
        micros = int(now * 1_000_000)
        for venue, count in counts.items():
            stats = self.venue(venue)
            stats.records += count
            stats.last_message_ts = micros
            stats.rate.add(count, now)
        self.records += len(records)
        self.total.add(len(records), now)

    def snapshot(self, flt: Filter) -> list[Record]:
        """Latest state a new subscription matches, in a stable order."""
        out: list[Record] = []
        for (venue, symbol), record in sorted(self.status.items(), key=_status_order):
            if matches(flt, ("status", venue, symbol)):
                out.append(record)
        keys = sorted({*self.books, *((v, s) for v, s, _ in self.bbos), *self.bars})
        for venue, symbol in keys:
            if matches(flt, ("orderbook", venue, symbol)):
                book = self.books.get((venue, symbol))
                if book is not None:
                    out.append(truncate_book(book, flt.depth or 0))
                for origin in ("book", "ticker"):
                    bbo = self.bbos.get((venue, symbol, origin))
                    if bbo is not None:
                        out.append(bbo)
            if matches(flt, ("bars", venue, symbol)):
                bars = self.bars.get((venue, symbol), {})
                out.extend(bars[i] for i in sorted(bars, key=interval_us))
        return out

    def symbol_view(self, venue: str, symbol: str, depth: int | None) -> dict[str, Any]:
        """Everything known about one symbol (HTTP /snapshot)."""
        book = self.books.get((venue, symbol))
        bars = self.bars.get((venue, symbol), {})
        return {
            "venue": venue,
            "symbol": symbol,
            "book": None if book is None else truncate_book(book, depth or 0),
            "bbo": {
                origin: bbo
                for origin in ("book", "ticker")
                if (bbo := self.bbos.get((venue, symbol, origin))) is not None
            },
            "bars": {i: bars[i] for i in sorted(bars, key=interval_us)},
            "status": self.status.get((venue, symbol)),
        }

    def symbols(self) -> list[tuple[str, str]]:
        return sorted({*self.books, *((v, s) for v, s, _ in self.bbos), *self.bars})


def _status_order(item: tuple[tuple[str, str | None], Record]) -> tuple[str, str]:
    (venue, symbol), _ = item
    return venue, symbol or ""
