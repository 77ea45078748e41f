"""Which subscriptions a record or raw frame goes to.

A record's route key is ``(wire channel, venue, symbol)``; raw frames use the
channel ``RAW``. Records without a symbol (venue-wide status, dead letters) and
frames without one (acks, pongs) pass any symbol filter: they concern every
symbol of their venue.
"""

from __future__ import annotations

from typing import Any

from candlewax.client.protocol import WIRE_CHANNEL_OF_TYPE
from sinks.fanout.requests import Filter

RAW = "raw"
RouteKey = tuple[str, str, str | None]


def route_key(record: dict[str, Any]) -> RouteKey | None:
    """None for a record of no known type (never sent)."""
    if not isinstance(record, dict):
        return None
    kind = record.get("type")
    channel = WIRE_CHANNEL_OF_TYPE.get(kind) if isinstance(kind, str) else None
    if channel is None:
        return None
    if kind == "late":
        trade = record.get("trade")
        if not isinstance(trade, dict):
            return None
        return channel, str(trade.get("venue", "")), trade.get("symbol")
    return channel, str(record.get("venue", "")), record.get("symbol")


def matches(flt: Filter, key: RouteKey) -> bool:
    channel, venue, symbol = key
    if channel == RAW:
        if not flt.raw:
            return False
    elif channel not in flt.channels:
        return False
    if flt.exchanges is not None and venue not in flt.exchanges:
        return False
    return flt.symbols is None or symbol is None or symbol in flt.symbols


FULL = 0  # depth marker: send book records as produced


def depth_for(filters: frozenset[Filter], key: RouteKey) -> int | None:
    """The book depth a set of subscriptions wants for ``key``: None if none of them
    matches, ``FULL`` if one wants every level, else the largest depth asked for."""
    best: int | None = None
    for flt in filters:
        if matches(flt, key):
            if flt.depth is None:
                return FULL
            best = flt.depth if best is None else max(best, flt.depth)
    return best


def truncate_book(record: dict[str, Any], depth: int) -> dict[str, Any]:
    """A copy of a book record with at most ``depth`` levels per side (never mutates:
    the same dict goes to every other sink)."""
    if depth == FULL or depth >= int(record.get("depth", 0)):
        return record
    return {
        **record,
        "depth": depth,
        "bids": record["bids"][:depth],
        "asks": record["asks"][:depth],
    }
