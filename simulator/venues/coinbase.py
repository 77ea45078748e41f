"""Coinbase Advanced Trade as the simulator serves it.

One WebSocket at ``/`` (as ``wss://advanced-trade-ws.coinbase.com``), subscribe /
unsubscribe frames naming one channel and its ``product_ids``, a ``subscriptions`` frame
after each, a fresh ``l2_data`` snapshot (from the books as of the client's position) on
each ``level2`` subscription once the book is known, and the capture's ``heartbeats``
frames to whoever subscribed them.

``sequence_num`` counts every frame of a connection, all channels together. The
capture's numbers belong to its own connection, so :meth:`CoinbaseSim.outgoing`
renumbers each frame per client connection (0, 1, ...); a dropped book update
(``--drop-depth``) is then a gap the client sees, as on the real venue, and a
duplicated frame repeats its number. Coinbase has no checksum.
"""

from __future__ import annotations

import re
import time
import weakref
from calendar import timegm
from collections.abc import Iterable
from typing import Any

import orjson

from simulator.books import BookState
from simulator.tape_types import SNAPSHOT, UPDATE, Entry, TapeBuilder
from simulator.venues.base import ClientPort, VenueSim, apply_in_band
from sources.frames import RawFrame

PATH = ""  # the venue serves the root path
MAX_DEPTH = 2000  # levels per side of a built snapshot (the real ones are the full book)
_CHANNELS = frozenset({"market_trades", "level2", "ticker", "ticker_batch", "heartbeats"})
_SEQUENCE = re.compile(r'"sequence_num":[0-9]+')
# RFC 3339 UTC times: envelope ``timestamp`` (ns), trade ``time``, level ``event_time``.
_TIMES = re.compile(r'"(timestamp|time|event_time)":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z"')
_TRADE_ID = re.compile(r'"trade_id":"(\d+)"')


def sub_key(channel: str, product: str) -> str:
    """Subscription key: ``channel:product`` (``heartbeats`` has no product)."""
    return "heartbeats" if channel == "heartbeats" else f"{channel}:{product}"


def _epoch_ms(head: str, fraction: str | None) -> int:
    seconds = timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    millis = int(((fraction or ".")[1:] + "000")[:3])
    return seconds * 1000 + millis


def _shift(match: re.Match[str], offset_ms: int) -> str:
    """One time moved by ``offset_ms``, keeping its fraction's digit count."""
    field, head, fraction = match[1], match[2], match[3] or ""
    digits = len(fraction) - 1
    scale = 10 ** max(digits, 0)
    seconds = timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    # Whole units of the fraction's precision; offsets finer than it are cut.
    units = seconds * scale + (int(fraction[1:]) if digits > 0 else 0)
    units += offset_ms * scale // 1000
    new_head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(units // scale))
    new_fraction = f".{units % scale:0{digits}d}" if digits > 0 else fraction
    return f'"{field}":"{new_head}{new_fraction}Z"'


def _now_text() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


class CoinbaseSim(VenueSim):
    names = ("coinbase",)
    ws_paths = (PATH,)
    ws_url_path = "/"
    connect_hint = "/"

    def __init__(self, venue: str, options: dict[str, object] | None = None) -> None:
        super().__init__(venue, options)
        # Per connection: the next sequence_num.
        self._next_seq: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def _seq(self, client: ClientPort) -> int:
        seq = self._next_seq.get(client, 0)
        self._next_seq[client] = seq + 1
        return seq

    def tape_builder(self) -> TapeBuilder:
        return _CoinbaseBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        apply_in_band(books, entry)

    # ---- connections ----

    async def on_text(self, client: ClientPort, text: str) -> None:
        try:
            request = orjson.loads(text)
            kind, channel = request["type"], request["channel"]
            products = request.get("product_ids") or []
            if kind not in ("subscribe", "unsubscribe") or channel not in _CHANNELS:
                raise ValueError(kind)
            if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
                raise TypeError(products)
            if channel != "heartbeats" and not products:
                raise ValueError("no product_ids")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            error = {"type": "error", "message": f"Failure to subscribe: {text[:200]}"}
            await client.send(orjson.dumps(error).decode())
            return
        client.stats.subscribe_requests += 1
        keys = [sub_key(channel, p) for p in products] or [sub_key(channel, "")]
        for key in keys:
            if kind == "subscribe":
                client.subs[key] = channel
            else:
                client.subs.pop(key, None)
        await client.send(self._subscriptions(client))
        if kind != "subscribe":
            return
        client.begin()
        if channel == "level2":
            for key in keys:
                snapshot = self._snapshot(client, key)
                if snapshot is not None:
                    await client.send_snapshot(snapshot)
        client.stream()

    def _subscriptions(self, client: ClientPort) -> str:
        """The venue's ``subscriptions`` frame: what the connection is subscribed to."""
        listed: dict[str, list[str]] = {}
        for key, channel in client.subs.items():
            listed.setdefault(channel, []).extend(key.split(":", 1)[1:])
        frame = {
            "channel": "subscriptions",
            "client_id": "",
            "timestamp": _now_text(),
            "sequence_num": self._seq(client),
            "events": [{"subscriptions": listed}],
        }
        return orjson.dumps(frame).decode()

    def _snapshot(self, client: ClientPort, key: str) -> str | None:
        """An ``l2_data`` snapshot for a subscribing client, None before the book is known."""
        book = client.market().books.get(key)
        if book is None:
            return None
        bids, asks = book.book.top(MAX_DEPTH)
        ts = book.ts_text
        updates = [
            {"side": "bid", "event_time": ts, "price_level": p, "new_quantity": s} for p, s in bids
        ] + [
            {"side": "offer", "event_time": ts, "price_level": p, "new_quantity": s}
            for p, s in asks
        ]
        frame = {
            "channel": "l2_data",
            "client_id": "",
            "timestamp": ts,
            "sequence_num": self._seq(client),
            "events": [{"type": SNAPSHOT, "product_id": key.split(":", 1)[1], "updates": updates}],
        }
        return orjson.dumps(frame).decode()

    # ---- frames ----

    def outgoing(self, client: ClientPort, entry: Entry, text: str) -> str:
        # Called for every frame this connection is about to be sent, in order (drop
        # faults come after: a dropped frame leaves a gap in the client's numbers).
        return _SEQUENCE.sub(f'"sequence_num":{self._seq(client)}', text, count=1)

    # ---- event times and ids ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        match = _TIMES.search(text)  # the envelope's timestamp comes first
        return () if match is None else (_epoch_ms(match[2], match[3]),)

    def restamp(self, text: str, offset_ms: int) -> str:
        return _TIMES.sub(lambda m: _shift(m, offset_ms), text)

    def lap_times(self, text: str) -> Iterable[int]:
        return self.event_times_ms(text)

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[1]) for m in _TRADE_ID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = self.restamp(text, dt_ms)
        return _TRADE_ID.sub(lambda m: f'"trade_id":"{int(m[1]) + did}"', text)


class _CoinbaseBuilder(TapeBuilder):
    """Data frames keyed by channel and product; control frames (subscriptions, candles)
    are skipped, heartbeats kept for the clients that subscribe them."""

    def _add(self, frame: RawFrame) -> bool:
        obj = orjson.loads(frame.text)
        channel = obj.get("channel")
        events = obj.get("events") or []
        if channel == "heartbeats":
            self._entry(frame, "heartbeats")
            return True
        if channel == "l2_data":
            (event,) = events
            key = sub_key("level2", event["product_id"])
            entry = self._entry(frame, key)
            entry.book = key
            entry.action = SNAPSHOT if event["type"] == SNAPSHOT else UPDATE
            updates = event["updates"]
            entry.bids = [
                [u["price_level"], u["new_quantity"]] for u in updates if u["side"] == "bid"
            ]
            entry.asks = [
                [u["price_level"], u["new_quantity"]] for u in updates if u["side"] == "offer"
            ]
            entry.ts_text = obj["timestamp"]
            if entry.action == UPDATE:
                self._number(entry)
            return True
        if channel == "market_trades":
            products = {t["product_id"] for e in events for t in e["trades"]}
        elif channel in ("ticker", "ticker_batch"):
            products = {t["product_id"] for e in events for t in e["tickers"]}
        else:
            return False
        if len(products) != 1:
            return False  # one subscription key per frame
        self._entry(frame, sub_key(channel, products.pop()))
        return True
