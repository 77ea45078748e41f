"""Coinbase Advanced Trade (``advanced-trade-ws``): frame parser and live protocol.

Every frame is ``{"channel","timestamp","sequence_num","events":[..]}``. Channels read
here: ``market_trades`` (trades), ``l2_data`` (the ``level2`` subscription: one full
snapshot per product, then updates with absolute sizes, ``"0"`` removes), ``ticker`` /
``ticker_batch`` (the venue's BBO), ``heartbeats`` and ``subscriptions`` (control).

Book continuity: the book has no per-product sequence. ``sequence_num`` counts every
frame of the *connection*, all channels together (observed contiguous 0..1029 in the
bundled capture). So the parser keeps, per connection, the last ``sequence_num`` and the
products whose ``l2_data`` it has seen; a jump means a frame was lost and no book of that
connection can be trusted. The parser then puts, before the frame's own items, one empty
``update`` per such product with ``first_id`` set (the first lost number): the
``coinbase`` sync rule (``operators/book_rules.py``) turns it into ``gap_detected`` +
a resync (the live source resubscribes ``level2`` for that product only). Normal
``l2_data`` messages carry ``first_id=None, last_id=sequence_num``; a repeat
(``sequence_num`` not above the book's) is ignored.

Trade side: Coinbase's ``side`` is the side of the *resting (maker)* order, checked on
the capture (a ``SELL`` trade printed at the best ask 49 times of 50 with a ticker
before it, ``BUY`` at the best bid 26 of 26): the aggressor is the other side, so
``SELL`` -> ``buy`` and ``BUY`` -> ``sell`` (docs/sources.md, Coinbase).

``typed`` is the hot path (``sources/typed.py``); ``parse`` the careful path.
"""

from __future__ import annotations

from calendar import timegm
from time import strptime
from typing import Any

import orjson

from candlewax.schema import make_bbo, make_status, make_trade
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg, Levels
from sources.frames import RawFrame
from sources.numbers import check_levels, check_positive, check_ticker
from sources.typed import (
    Decline,
    KeyedItem,
    TypedParser,
    WireInt,
    WireStruct,
)
from sources.venue import FRAME_FAULTS, FrameError, Item, frame_error

VENUE = "coinbase"
_SUBSCRIBE_CHANNEL = {"trades": "market_trades", "book": "level2", "bbo": "ticker"}
# Coinbase's side is the maker's; the schema's is the aggressor's.
_AGGRESSOR = {"BUY": "sell", "SELL": "buy"}
_BOOK_KINDS = frozenset({"snapshot", "update"})
_TICKER_CHANNELS = frozenset({"ticker", "ticker_batch"})
_CONTROL_CHANNELS = frozenset({"heartbeats", "subscriptions", "candles", "status"})
_TICKER_FIELDS = (
    "coinbase ticker best_bid",
    "coinbase ticker best_bid_quantity",
    "coinbase ticker best_ask",
    "coinbase ticker best_ask_quantity",
)
_KEPT_CONNECTIONS = 8  # per-connection sequence state kept (older connections are gone)
_Text = str | None


class _Trade(WireStruct):
    product_id: str
    trade_id: str
    price: str
    size: str
    time: str
    side: str


class _Level(WireStruct):
    side: str
    price_level: str
    new_quantity: str
    event_time: _Text = None


class _Ticker(WireStruct):
    type: _Text = None
    product_id: _Text = None
    price: _Text = None
    volume_24_h: _Text = None
    low_24_h: _Text = None
    high_24_h: _Text = None
    low_52_w: _Text = None
    high_52_w: _Text = None
    price_percent_chg_24_h: _Text = None
    best_bid: _Text = None
    best_ask: _Text = None
    best_bid_quantity: _Text = None
    best_ask_quantity: _Text = None


class _Event(WireStruct):
    type: _Text = None
    product_id: _Text = None
    updates: list[_Level] | None = None
    trades: list[_Trade] | None = None
    tickers: list[_Ticker] | None = None


class _Frame(WireStruct):
    channel: str
    timestamp: str
    sequence_num: WireInt
    events: list[_Event]


_seconds_cache: dict[str, int] = {}


def _micros(text: Any, field: str) -> int:
    """RFC 3339 UTC time (``2026-08-09T21:05:48.228568804Z``, 0-9 fraction digits)
    -> epoch microseconds, the fraction cut (not rounded) to 6 digits."""
    if text.__class__ is not str or len(text) < 20 or text[-1] != "Z" or not text.isascii():
        raise FrameError(f"{field} must be an RFC 3339 UTC time, got {text!r}")
    head = text[:19]
    seconds = _seconds_cache.get(head)
    if seconds is None:
        try:
            seconds = timegm(strptime(head, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise FrameError(f"{field} must be an RFC 3339 UTC time, got {text!r}") from None
        if len(_seconds_cache) > 4096:
            _seconds_cache.clear()
        _seconds_cache[head] = seconds
    fraction = text[20:-1]
    if len(text) > 20 and (
        text[19] != "." or not fraction.isascii() or not fraction.isdigit() or len(fraction) > 9
    ):
        raise FrameError(f"{field} must be an RFC 3339 UTC time, got {text!r}")
    return seconds * 1_000_000 + int((fraction + "000000")[:6])


class _Connection:
    """Sequence state of one connection: the last ``sequence_num`` and the products
    whose ``l2_data`` snapshot came on it (the books a lost frame makes untrusted)."""

    __slots__ = ("books", "last")

    def __init__(self) -> None:
        self.last: int | None = None
        self.books: dict[str, str] = {}  # native -> unified symbol, in first-seen order


def _depth_msg(
    symbol: str, kind: str, bids: Levels, asks: Levels, seq: int, ts: int, frame: RawFrame
) -> DepthMsg:
    """An ``l2_data`` event as a book message, as both paths build it (``last_id`` is the
    connection's sequence number)."""
    return DepthMsg(
        VENUE, symbol, kind, bids, asks, None, seq, None, None, ts, frame.ts_ingest, frame.conn_id
    )


class CoinbaseParser(TypedParser[_Frame]):
    venue = VENUE

    def __init__(self, symbols: SymbolMap) -> None:
        super().__init__(symbols, "product_id", _Frame)
        self._connections: dict[str, _Connection] = {}

    # ---- per-connection sequence ----

    def _connection(self, conn_id: str) -> _Connection:
        found = self._connections.get(conn_id)
        if found is None:
            if len(self._connections) >= _KEPT_CONNECTIONS:
                del self._connections[next(iter(self._connections))]
            found = self._connections[conn_id] = _Connection()
        return found

    def _advance(self, conn: _Connection, seq: int, snapshots: dict[str, str]) -> None:
        """After a frame parsed: its number and the products it had snapshots of."""
        if conn.last is None or seq > conn.last:
            conn.last = seq
        if snapshots:
            conn.books.update(snapshots)

    def _gap_markers(self, conn: _Connection, seq: int, frame: RawFrame) -> list[Item]:
        """One empty update per book of the connection when ``seq`` skips numbers."""
        last = conn.last
        if last is None or seq <= last + 1:
            return []
        ts = frame.ts_ingest
        return [
            DepthMsg(VENUE, s, "update", [], [], last + 1, seq, None, None, ts, ts, frame.conn_id)
            for s in conn.books.values()
        ]

    # ---- fast path ----

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        """Trades, books and tickers of a frame that continues its connection's
        sequence; raises on anything else (the careful path then decides)."""
        msg = self._decode(frame.text)
        seq = msg.sequence_num
        conn = self._connections.get(frame.conn_id)
        if conn is not None and conn.last is not None and seq > conn.last + 1:
            raise Decline  # a gap: the careful path writes the markers
        channel = msg.channel
        markets = self._markets
        out: list[KeyedItem] = []
        snapshots: dict[str, str] = {}
        if channel == "market_trades":
            rows = []
            for event in msg.events:
                if event.trades is None or event.updates is not None or event.tickers is not None:
                    raise Decline
                for t in reversed(event.trades):  # newest first on the wire
                    side = _AGGRESSOR.get(t.side)
                    if side is None or not self._positive_ok(t.price, t.size):
                        raise Decline
                    rows.append((t, side, _micros(t.time, "time")))
            for t, side, ts in rows:
                _, key, template, _ = markets[t.product_id]
                record = template.copy()
                record["ts_exchange"] = ts
                record["trade_id"] = t.trade_id
                record["price"] = t.price
                record["size"] = t.size
                record["side"] = side
                record["ts_ingest"] = frame.ts_ingest
                out.append((key, record))
        elif channel == "l2_data":
            ts = _micros(msg.timestamp, "timestamp")
            depth = []
            for event in msg.events:
                kind = event.type
                updates = event.updates
                if kind not in _BOOK_KINDS or updates is None or event.product_id is None:
                    raise Decline
                if event.trades is not None or event.tickers is not None:
                    raise Decline
                if kind == "update" and (conn is None or event.product_id not in conn.books):
                    raise Decline  # no snapshot of it on this connection yet
                bids: Levels = []
                asks: Levels = []
                for u in updates:
                    side = u.side
                    if side == "bid":
                        bids.append((u.price_level, u.new_quantity))
                    elif side == "offer":
                        asks.append((u.price_level, u.new_quantity))
                    else:
                        raise Decline
                deletes = kind == "update"
                if self._level_pairs(bids, deletes) is None:
                    raise Decline
                if self._level_pairs(asks, deletes) is None:
                    raise Decline
                depth.append((event.product_id, kind, bids, asks))
            for native, kind, bids, asks in depth:
                symbol, key, _, _ = markets[native]
                out.append((key, _depth_msg(symbol, kind, bids, asks, seq, ts, frame)))
                if kind == "snapshot":
                    snapshots[native] = symbol
        elif channel in _TICKER_CHANNELS:
            ts = _micros(msg.timestamp, "timestamp")
            tickers: list[_Ticker] = []
            for event in msg.events:
                if event.tickers is None or event.trades is not None or event.updates is not None:
                    raise Decline
                for tk in event.tickers:
                    if tk.product_id is None or not self._positive_ok(
                        tk.best_bid, tk.best_bid_quantity, tk.best_ask, tk.best_ask_quantity
                    ):
                        raise Decline  # an empty side: the careful path writes None
                    tickers.append(tk)
            for tk in tickers:
                _, key, _, template = markets[tk.product_id]
                record = template.copy()
                record["ts_exchange"] = ts
                record["bid_price"] = tk.best_bid
                record["bid_size"] = tk.best_bid_quantity
                record["ask_price"] = tk.best_ask
                record["ask_size"] = tk.best_ask_quantity
                record["ts_ingest"] = frame.ts_ingest
                out.append((key, record))
        else:
            raise Decline
        self._advance(conn or self._connection(frame.conn_id), seq, snapshots)
        return out

    # ---- careful path ----

    def parse(self, frame: RawFrame) -> list[Item]:
        try:
            obj = orjson.loads(frame.text)
            if obj.get("type") == "error":  # {"type":"error","message":..}: no envelope
                return [make_status(VENUE, None, "error", frame.ts_ingest, str(obj.get("message")))]
            seq = obj["sequence_num"]
            if seq.__class__ is not int:
                raise FrameError(f"coinbase: sequence_num must be an integer, got {seq!r}")
            channel = obj["channel"]
            events = obj["events"]
            if events.__class__ is not list:
                raise FrameError("coinbase: events must be a list")
            conn = self._connection(frame.conn_id)
            markers = self._gap_markers(conn, seq, frame)
            items = self._channel(channel, obj, events, seq, frame)
            snapshots: dict[str, str] = {}
            if channel == "l2_data":
                items = self._unsnapped(conn, events, items, snapshots, frame)
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None
        self._advance(conn, seq, snapshots)
        return markers + items if markers else items

    def _unsnapped(
        self,
        conn: _Connection,
        events: list[Any],
        items: list[Item],
        snapshots: dict[str, str],
        frame: RawFrame,
    ) -> list[Item]:
        """The book items of an ``l2_data`` frame (one per event), each update of a
        product without a snapshot on this connection preceded by a marker: its book
        (synced on an earlier connection, or its snapshot lost) cannot be trusted.
        Fills ``snapshots`` (native -> symbol)."""
        out: list[Item] = []
        for event, item in zip(events, items, strict=True):
            assert isinstance(item, DepthMsg)
            native = event["product_id"]
            if item.kind == "snapshot":
                snapshots[native] = item.symbol
            elif native not in conn.books and native not in snapshots:
                seq, ts = item.last_id, frame.ts_ingest
                out.append(
                    DepthMsg(
                        VENUE,
                        item.symbol,
                        "update",
                        [],
                        [],
                        seq,
                        seq,
                        None,
                        None,
                        ts,
                        ts,
                        frame.conn_id,
                    )
                )
            out.append(item)
        return out

    def _channel(
        self, channel: Any, obj: Any, events: list[Any], seq: int, frame: RawFrame
    ) -> list[Item]:
        if channel == "market_trades":
            # Coinbase lists an event's trades newest first (all 14 multi-trade events of
            # the capture): emitted oldest first, so bars do not see them as late.
            return [
                self._trade(t, frame.ts_ingest)
                for e in events
                for t in reversed(_list(e, "trades"))
            ]
        if channel == "l2_data":
            ts = _micros(obj["timestamp"], "timestamp")
            return [self._depth(e, seq, ts, frame) for e in events]
        if channel in _TICKER_CHANNELS:
            ts = _micros(obj["timestamp"], "timestamp")
            return [
                self._ticker(t, ts, frame.ts_ingest) for e in events for t in _list(e, "tickers")
            ]
        if channel in _CONTROL_CHANNELS:
            return []
        raise FrameError(f"coinbase: unknown channel {channel!r}")

    def _trade(self, t: Any, ts_ingest: int) -> dict[str, Any]:
        price, size, tid = t["price"], t["size"], t["trade_id"]
        check_positive(
            (price, size), ("coinbase market_trades price", "coinbase market_trades size")
        )
        if tid.__class__ is not str:
            raise FrameError(f"coinbase market_trades: trade_id must be a string, got {tid!r}")
        side = _AGGRESSOR.get(t["side"]) if t["side"].__class__ is str else None
        if side is None:
            raise FrameError(f"coinbase market_trades: side must be BUY or SELL, got {t['side']!r}")
        ts = _micros(t["time"], "time")
        return make_trade(
            VENUE, self._symbol(t["product_id"]), ts, ts_ingest, tid, price, size, side
        )

    def _depth(self, e: Any, seq: int, ts: int, frame: RawFrame) -> DepthMsg:
        kind = e["type"]
        if kind not in _BOOK_KINDS:
            raise FrameError(f"coinbase l2_data: unknown event type {kind!r}")
        bids: Levels = []
        asks: Levels = []
        for u in _list(e, "updates"):
            level = (u["price_level"], u["new_quantity"])
            if u["side"] == "bid":
                bids.append(level)
            elif u["side"] == "offer":
                asks.append(level)
            else:
                raise FrameError(f"coinbase l2_data: side must be bid or offer, got {u['side']!r}")
        deletes = kind == "update"
        check_levels(bids, f"coinbase l2_data {kind} bids", deletes)
        check_levels(asks, f"coinbase l2_data {kind} offers", deletes)
        return _depth_msg(self._symbol(e["product_id"]), kind, bids, asks, seq, ts, frame)

    def _ticker(self, t: Any, ts: int, ts_ingest: int) -> dict[str, Any]:
        bid, ask = check_ticker(
            (t["best_bid"], t["best_bid_quantity"]),
            (t["best_ask"], t["best_ask_quantity"]),
            _TICKER_FIELDS,
        )
        symbol = self._symbol(t["product_id"])
        return make_bbo(VENUE, symbol, ts, ts_ingest, bid, ask, None, "ticker")

    def symbol_of(self, frame: RawFrame) -> str | None:
        try:
            event = orjson.loads(frame.text)["events"][0]
            if "product_id" in event:
                return self._symbol(event["product_id"])
            for name in ("trades", "tickers"):
                if name in event:
                    return self._symbol(event[name][0]["product_id"])
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            pass
        return None


def _list(event: Any, name: str) -> list[Any]:
    found = event[name]
    if found.__class__ is not list:
        raise FrameError(f"coinbase: {name} must be a list")
    result: list[Any] = found
    return result


class CoinbaseProtocol:
    """Live protocol: one subscribe frame per channel (Coinbase takes one channel per
    message), ``heartbeats`` always (channels close after 60-90 s without updates);
    no application ping."""

    venue = VENUE
    default_ws_url = "wss://advanced-trade-ws.coinbase.com"
    default_rest_url: str | None = None
    app_ping_text: str | None = None
    app_ping_interval: float | None = None
    max_lifetime: float | None = None

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        return ws_url

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in _SUBSCRIBE_CHANNEL]
        if unknown:
            raise ValueError(
                f"coinbase: unknown channels {unknown}; use {list(_SUBSCRIBE_CHANNEL)}"
            )
        if not natives:
            return []
        names = [_SUBSCRIBE_CHANNEL[c] for c in channels] + ["heartbeats"]
        return [_subscription("subscribe", natives, name) for name in names]

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return None  # level2 sends its snapshot in-band

    def resync_messages(self, native: str) -> list[str]:
        # A new level2 subscription starts with a full snapshot of that product.
        return [
            _subscription("unsubscribe", [native], "level2"),
            _subscription("subscribe", [native], "level2"),
        ]

    def is_control(self, text: str) -> bool:
        return False

    def is_shutdown_notice(self, text: str) -> bool:
        return False


def _subscription(kind: str, natives: list[str], channel: str) -> str:
    return orjson.dumps({"type": kind, "product_ids": natives, "channel": channel}).decode()


PARSER = CoinbaseParser
PROTOCOL = CoinbaseProtocol()
