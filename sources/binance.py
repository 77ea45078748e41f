"""Binance spot and USD-M futures: frame parser and live protocol.

Frames are combined-stream envelopes ``{"stream":..,"data":{..}}`` or raw
stream events, plus REST depth snapshots injected by the source with a
``depth_snapshot:<NATIVE>`` hint. Prices and sizes stay the exact strings
Binance sent. ``typed`` is the hot path (``sources/typed.py``): one msgspec decode
of a combined-stream envelope into :class:`_Envelope`, numbers checked in one call,
records built in place; ``parse`` is the careful path behind it (``orjson.loads``,
hand checks, the dead-letter reasons), which also serves raw stream events, REST
snapshots and control frames.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from candlewax.schema import make_bbo, make_status, make_trade
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg, Levels
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.numbers import (
    check_levels,
    check_positive,
    check_ticker,
    malformed_level,
)
from sources.typed import (
    Decline,
    KeyedItem,
    TypedParser,
    WireInt,
    WireStruct,
)
from sources.venue import FRAME_FAULTS, FrameError, Item, frame_error

_HINT_LEN = len(SNAPSHOT_HINT)
MAX_STREAMS = 1024  # per connection, both markets
_STREAM_SUFFIX = {"trades": "@trade", "book": "@depth@100ms", "bbo": "@bookTicker"}
# USD-M futures document no raw trade stream: trades come as aggregate trades
# (ids "agg:<a>", their own namespace).
_USDM_STREAM_SUFFIX = {**_STREAM_SUFFIX, "trades": "@aggTrade"}
# Field names for dead-letter reasons, by trade-id prefix ("" trade, "agg:" aggTrade).
_TRADE_FIELDS = {"": ("trade p", "trade q"), "agg:": ("aggTrade p", "aggTrade q")}
_TICKER_FIELDS = ("bookTicker b", "bookTicker B", "bookTicker a", "bookTicker A")


class _Event(WireStruct):
    """Every market event Binance sends on a combined stream, one superset: spot and
    USD-M ``bookTicker``, ``trade``, ``aggTrade``, ``depthUpdate``. ``b``/``a`` are
    ticker prices, level lists or (``aggTrade``) the aggregate id."""

    kind: str | None = msgspec.field(default=None, name="e")
    event_ms: WireInt | None = msgspec.field(default=None, name="E")
    trade_ms: WireInt | None = msgspec.field(default=None, name="T")
    native: str | None = msgspec.field(default=None, name="s")
    first_id: WireInt | None = msgspec.field(default=None, name="U")
    last_id: WireInt | None = msgspec.field(default=None, name="u")
    prev_id: WireInt | None = msgspec.field(default=None, name="pu")
    bids: str | WireInt | list[tuple[str, str]] | None = msgspec.field(default=None, name="b")
    bid_size: str | None = msgspec.field(default=None, name="B")
    asks: str | WireInt | list[tuple[str, str]] | None = msgspec.field(default=None, name="a")
    ask_size: str | None = msgspec.field(default=None, name="A")
    trade_id: WireInt | None = msgspec.field(default=None, name="t")
    price: str | None = msgspec.field(default=None, name="p")
    size: str | None = msgspec.field(default=None, name="q")
    maker: bool | None = msgspec.field(default=None, name="m")
    best_match: bool | None = msgspec.field(default=None, name="M")
    first_trade: WireInt | None = msgspec.field(default=None, name="f")
    last_trade: WireInt | None = msgspec.field(default=None, name="l")


class _Envelope(WireStruct):
    """``{"stream": "btcusdt@trade", "data": {..}}``; the event says its own kind."""

    stream: msgspec.Raw  # any value, as for the careful path; not converted
    data: _Event


def _levels(raw: Any, side: str, deletes: bool) -> Levels:
    """[[price, qty], ..] -> [(price, qty), ..], both decimal strings; qty 0 (a
    deleted level) only where ``deletes``."""
    if raw.__class__ is not list:
        raise FrameError(f"{side}: levels must be a list")
    levels = [
        (p, q)
        for lvl in raw
        if lvl.__class__ is list
        for p, q in (lvl,)  # unpacking also rejects levels that are not pairs
        if p.__class__ is str and q.__class__ is str
    ]
    if len(levels) != len(raw):
        raise malformed_level(raw, side, exact_pair=True)
    check_levels(levels, side, deletes)
    return levels


def _micros(ms: Any, field: str) -> int:
    if ms.__class__ is not int or ms < 0:
        raise FrameError(f"{field} must be a non-negative integer of ms, got {ms!r}")
    result: int = ms * 1000
    return result


class BinanceParser(TypedParser[_Envelope]):
    """Parser for Binance spot; :class:`BinanceUsdmParser` adds ``pu``."""

    venue: str = "binance"
    _usdm: bool = False

    def __init__(self, symbols: SymbolMap) -> None:
        super().__init__(symbols, "symbol", _Envelope)
        # Depth symbols seen per connection: a symbol-less snapshot belongs to its
        # connection's only symbol (several one-symbol captures may share a parser).
        self._depth_by_conn: dict[str, set[str]] = {}

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        """The fast path: the market events of combined streams; raises on any other
        frame (the Normalizer then runs :meth:`parse`). Hot: one frame in 1.5 µs, so
        the frame and market tuples are unpacked rather than read by name."""
        _, conn_id, ts_ingest, text, hint = frame
        if hint is not None:
            raise Decline
        d = self._decode(text).data
        kind = d.kind
        if kind is None or kind == "bookTicker":  # spot bookTicker has no "e"
            seq, bid, bid_size, ask, ask_size = d.last_id, d.bids, d.bid_size, d.asks, d.ask_size
            if seq is None or not self._positive_ok(bid, bid_size, ask, ask_size):
                raise Decline  # an empty side (zero price and size), or a bad number
            ms = d.trade_ms or d.event_ms
            if ms is None:
                ts = ts_ingest
            elif ms >= 0:
                ts = ms * 1000
            else:
                raise Decline
            _, key, _, record = self._markets[d.native]
            record = record.copy()
            record["ts_exchange"] = ts
            record["ts_ingest"] = ts_ingest
            record["bid_price"] = bid
            record["bid_size"] = bid_size
            record["ask_price"] = ask
            record["ask_size"] = ask_size
            record["sequence"] = seq
            return [(key, record)]
        if kind == "trade":
            trade_id = d.trade_id
            if trade_id is None:
                raise Decline
            tid = f"{trade_id}"
        elif kind == "depthUpdate":
            return self._typed_depth(d, conn_id, ts_ingest)
        elif kind == "aggTrade":
            agg_id = d.asks
            if agg_id.__class__ is not int:
                raise Decline
            tid = f"agg:{agg_id}"  # own namespace, as in the careful path
        else:
            raise Decline
        price, size, maker, ms = d.price, d.size, d.maker, d.trade_ms
        if maker is None or ms is None or ms < 0 or not self._positive_ok(price, size):
            raise Decline
        _, key, record, _ = self._markets[d.native]
        record = record.copy()
        record["ts_exchange"] = ms * 1000
        record["ts_ingest"] = ts_ingest
        record["trade_id"] = tid
        record["price"] = price
        record["size"] = size
        record["side"] = "sell" if maker else "buy"
        return [(key, record)]

    def _typed_depth(self, d: _Event, conn_id: str, ts_ingest: int) -> list[KeyedItem]:
        first, last, prev, ms = d.first_id, d.last_id, d.prev_id, d.event_ms
        if first is None or last is None or ms is None or ms < 0:
            raise Decline
        if self._usdm:
            if prev is None:
                raise Decline
        else:
            prev = None
        bids = self._level_pairs(d.bids, True)
        asks = self._level_pairs(d.asks, True)
        if bids is None or asks is None:
            raise Decline
        symbol, key, _, _ = self._markets[d.native]
        self._depth_seen(conn_id, symbol)
        msg = DepthMsg(
            self.venue,
            symbol,
            "update",
            bids,
            asks,
            first,
            last,
            prev,
            None,
            ms * 1000,
            ts_ingest,
            conn_id,
        )
        return [(key, msg)]

    def parse(self, frame: RawFrame) -> list[Item]:
        try:
            hint = frame.hint
            if hint is not None and hint.startswith(SNAPSHOT_HINT):
                return [self._snapshot(frame)]
            obj = orjson.loads(frame.text)
            data = obj["data"] if "stream" in obj else obj
            e = data.get("e")
            # Most frequent first; spot bookTicker has no "e", nor have acks and errors.
            if e is None:
                if "u" in data and "B" in data:
                    return [self._book_ticker(data, frame.ts_ingest)]
                return self._control(obj, frame.ts_ingest)
            if e == "trade":
                return [self._trade(data, data["t"], "", frame.ts_ingest)]
            if e == "depthUpdate":
                return [self._depth(data, frame)]
            if e == "bookTicker":
                return [self._book_ticker(data, frame.ts_ingest)]
            if e == "aggTrade":
                # Own namespace: aggregate ids would collide with raw trade ids.
                return [self._trade(data, data["a"], "agg:", frame.ts_ingest)]
            if e == "kline":
                return []  # bars are built from trades; the venue's own candles are ignored
            if e == "serverShutdown":
                status = make_status(
                    self.venue, None, "planned_reconnect", frame.ts_ingest, "serverShutdown"
                )
                return [status]
            raise FrameError(f"{self.venue}: unknown event type {e!r}")
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None

    def _trade(self, d: Any, tid: Any, prefix: str, ts_ingest: int) -> dict[str, Any]:
        p = d["p"]
        q = d["q"]
        check_positive((p, q), _TRADE_FIELDS[prefix])
        m = d["m"]
        if m.__class__ is not bool or tid.__class__ is not int:
            raise FrameError(f"{d['e']}: m must be a bool and the id an integer")
        return make_trade(
            self.venue,
            self._symbol(d["s"]),
            _micros(d["T"], "T"),
            ts_ingest,
            f"{prefix}{tid}",
            p,
            q,
            "sell" if m else "buy",
        )

    def _book_ticker(self, d: Any, ts_ingest: int) -> dict[str, Any]:
        u = d["u"]
        if u.__class__ is not int:
            raise FrameError(f"bookTicker: u must be an integer, got {u!r}")
        # Binance writes an empty side as zero price and zero quantity.
        bid, ask = check_ticker((d["b"], d["B"]), (d["a"], d["A"]), _TICKER_FIELDS)
        ms = d.get("T") or d.get("E")  # spot bookTicker carries no event time
        return make_bbo(
            self.venue,
            self._symbol(d["s"]),
            ts_ingest if ms is None else _micros(ms, "T/E"),
            ts_ingest,
            bid,
            ask,
            u,
            "ticker",
        )

    def _depth(self, d: Any, frame: RawFrame) -> DepthMsg:
        first, last = d["U"], d["u"]
        prev = d["pu"] if self._usdm else None
        if (
            first.__class__ is not int
            or last.__class__ is not int
            or (self._usdm and prev.__class__ is not int)
        ):
            raise FrameError("depthUpdate: U, u (and pu on USD-M) must be integers")
        symbol = self._symbol(d["s"])
        self._depth_seen(frame.conn_id, symbol)
        return DepthMsg(
            self.venue,
            symbol,
            "update",
            _levels(d["b"], "depthUpdate b", True),
            _levels(d["a"], "depthUpdate a", True),
            first,
            last,
            prev,
            None,
            _micros(d["E"], "E"),
            frame.ts_ingest,
            frame.conn_id,
        )

    def _depth_seen(self, conn_id: str, symbol: str) -> None:
        seen = self._depth_by_conn.get(conn_id)
        if seen is None:
            if len(self._depth_by_conn) >= 64:  # live runs open a connection per reconnect
                del self._depth_by_conn[next(iter(self._depth_by_conn))]
            seen = self._depth_by_conn[conn_id] = set()
        seen.add(symbol)

    def _snapshot(self, frame: RawFrame) -> DepthMsg:
        body = orjson.loads(frame.text)
        last = body["lastUpdateId"]
        if last.__class__ is not int:
            raise FrameError(f"depth snapshot: lastUpdateId must be an integer, got {last!r}")
        native = frame.hint[_HINT_LEN:] if frame.hint else ""
        symbol = self._symbol(native) if native else self._only_symbol(frame.conn_id)
        ms = body.get("T") or body.get("E")
        return DepthMsg(
            self.venue,
            symbol,
            "snapshot",
            _levels(body["bids"], "depth snapshot bids", False),
            _levels(body["asks"], "depth snapshot asks", False),
            None,
            last,
            None,
            None,
            frame.ts_ingest if ms is None else _micros(ms, "T/E"),
            frame.ts_ingest,
            frame.conn_id,
        )

    def _only_symbol(self, conn_id: str) -> str:
        """Symbol of a snapshot hinted without one: the only symbol whose diffs this
        connection carried (one-symbol captures put it after a few diffs), else the
        only symbol of the stream."""
        on_conn = self._depth_by_conn.get(conn_id)
        if on_conn is not None and len(on_conn) == 1:
            return next(iter(on_conn))
        seen = self._symbol.seen()
        if len(seen) == 1:
            return seen.pop()
        configured = self._symbols.configured
        if not seen and len(configured) == 1:
            return configured[0]
        if not seen:
            raise FrameError("depth snapshot without symbol before any data")
        raise FrameError(f"depth snapshot without symbol on a stream of {len(seen)} symbols")

    def _control(self, obj: Any, ts_ingest: int) -> list[Item]:
        """Top-level non-market frames: subscription acks and errors."""
        if "result" in obj and "id" in obj:
            return []
        err = obj.get("error", obj)
        if isinstance(err, dict) and "code" in err and "msg" in err:
            detail = f"code {err['code']}: {err['msg']}"
            return [make_status(self.venue, None, "error", ts_ingest, detail)]
        raise FrameError(f"{self.venue}: frame is neither a market event nor a control message")

    def symbol_of(self, frame: RawFrame) -> str | None:
        try:
            if frame.hint is not None and frame.hint.startswith(SNAPSHOT_HINT):
                native = frame.hint[_HINT_LEN:]
                return self._symbol(native) if native else self._only_symbol(frame.conn_id)
            obj = orjson.loads(frame.text)
            data = obj.get("data") if "stream" in obj else obj
            native = data.get("s")
            return None if native is None else self._symbol(native)
        except (ValueError, TypeError, AttributeError):  # FrameError is a ValueError
            return None


class BinanceUsdmParser(BinanceParser):
    """USD-M futures: same events; depth diffs chain through ``pu``."""

    venue: str = "binance-usdm"
    _usdm: bool = True


class BinanceProtocol:
    """Live protocol: the combined-stream URL subscribes, Binance pings us."""

    app_ping_text: str | None = None
    app_ping_interval: float | None = None
    max_lifetime: float | None = 24 * 3600.0

    def __init__(
        self,
        venue: str,
        ws_url: str,
        rest_url: str,
        depth_query: str,
        suffixes: dict[str, str] = _STREAM_SUFFIX,
    ) -> None:
        self.venue = venue
        self._suffixes = suffixes
        self.default_ws_url = ws_url
        self.default_rest_url: str | None = rest_url
        self._depth_query = depth_query  # path?query with {native}

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        suffixes = self._suffixes
        unknown = [c for c in channels if c not in suffixes]
        if unknown:
            raise ValueError(f"{self.venue}: unknown channels {unknown}; use {list(suffixes)}")
        streams = [n.lower() + suffixes[c] for n in natives for c in channels]
        if len(streams) > MAX_STREAMS:
            raise ValueError(
                f"{self.venue}: {len(streams)} streams exceed {MAX_STREAMS} per connection"
            )
        return f"{ws_url.rstrip('/')}/stream?streams={'/'.join(streams)}"

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        return []

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return rest_url.rstrip("/") + self._depth_query.format(native=native.upper())

    def resync_messages(self, native: str) -> list[str]:
        return []  # resync = fetch a new REST snapshot

    def is_control(self, text: str) -> bool:
        return False

    def is_shutdown_notice(self, text: str) -> bool:
        # Short-circuit on length: data frames are long, the notice is tiny.
        return len(text) < 256 and '"serverShutdown"' in text


PARSER = BinanceParser
PROTOCOL = BinanceProtocol(
    "binance",
    "wss://stream.binance.com:9443",
    "https://api.binance.com",
    "/api/v3/depth?symbol={native}&limit=5000",
)
USDM_PARSER = BinanceUsdmParser
USDM_PROTOCOL = BinanceProtocol(
    "binance-usdm",
    "wss://fstream.binance.com",
    "https://fapi.binance.com",
    "/fapi/v1/depth?symbol={native}&limit=1000",
    _USDM_STREAM_SUFFIX,
)
