"""Kraken spot WebSocket: frame parser (v2, and v1 for the bundled capture) and live protocol (v2).

v2 (``wss://ws.kraken.com/v2``, the live protocol) sends objects
``{"channel","type","data":[..]}`` and method replies ``{"method",..}``. Its prices and
quantities are JSON *numbers* written at the pair's precision (``0.000022900``), and
the book checksum is computed over that text, trailing zeros included. A float
decoder (orjson, msgspec into ``float``) loses it, so:

- the careful path decodes v2 with the standard library's ``json`` and
  ``parse_float``/``parse_int`` hooks that keep each number's exact text (as
  :class:`_WireNumber`, a ``str`` subclass, so a number sent as a JSON string is told
  apart and refused);
- the typed path decodes into structs whose numbers are :class:`msgspec.Raw` (the
  bytes of the number as sent) and declines any that is not a bare number.

v1 (``wss://ws.kraken.com``, frozen; the only real Kraken recording is v1) sends data
as arrays ``[channelID, payload.., channelName, pair]`` with prices as strings, and
events ``{"event":..}``. The parser reads both, told apart by the first character.

Book depth: Kraken sends no delete for levels pushed beyond the subscribed depth,
so a client must truncate after every update. ``DepthMsg.first_id`` carries that
depth for kraken (v1: from the channel name ``book-1000``; v2: :data:`BOOK_DEPTH`,
what the live protocol subscribes with). The checksum (top 10) is in
``DepthMsg.checksum``: v2 sends it on snapshots and updates, v1 on updates only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import orjson

from candlewax.schema import make_bbo, make_status, make_trade
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg, Levels
from sources.frames import RawFrame
from sources.numbers import check_levels, check_positive
from sources.typed import (
    Decline,
    KeyedItem,
    TypedParser,
    WireInt,
    WireStruct,
    key_items,
)
from sources.venue import FRAME_FAULTS, FrameError, Item, frame_error

VENUE = "kraken"
# v2 book depth the live protocol subscribes with (and the simulator serves): the depth
# of the only real capture; deep enough for any configured top-N.
BOOK_DEPTH = 1000
_SUBSCRIBE_CHANNEL = {"trades": "trade", "book": "book", "bbo": "ticker"}
_V1_SIDES = {"b": "buy", "s": "sell"}
_V2_SIDES = frozenset({"buy", "sell"})
_INT64 = 2**63
_CRC32 = 2**32


class _WireNumber(str):
    """A JSON number's exact text, as the careful v2 decoder keeps it."""

    __slots__ = ()


def _v2_loads(text: str) -> Any:
    return json.loads(text, parse_float=_WireNumber, parse_int=_WireNumber)


def _number(value: Any, field: str) -> str:
    """The exact text of a v2 JSON number (FrameError for anything else)."""
    if value.__class__ is not _WireNumber:
        raise FrameError(f"kraken {field} must be a JSON number, got {value!r}")
    return str(value)


def _opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if value.__class__ is _WireNumber and value.isdigit() and int(value) < _INT64:
        return int(value)
    raise FrameError(f"kraken {field} must be a non-negative integer, got {value!r}")


def _rfc3339_micros(text: Any, field: str) -> int:
    """v2 timestamps: RFC3339 with up to 9 fraction digits, UTC (``...Z``)."""
    if text.__class__ is not str or not text.endswith("Z") or len(text) < 20:
        raise FrameError(f"kraken {field} must be an RFC3339 UTC timestamp, got {text!r}")
    head, _, frac = text[:-1].partition(".")
    if frac and not frac.isdigit():
        raise FrameError(f"kraken {field} must be an RFC3339 UTC timestamp, got {text!r}")
    try:
        whole = datetime.fromisoformat(head + "+00:00")
    except ValueError:
        raise FrameError(f"kraken {field} must be an RFC3339 UTC timestamp, got {text!r}") from None
    micros = int((frac + "000000")[:6]) if frac else 0
    return int(whole.timestamp()) * 1_000_000 + micros


def _epoch_micros(text: Any, field: str) -> int:
    """v1 timestamps: epoch seconds as decimal text ``"1618678142.557535"``."""
    if text.__class__ is str:
        whole, _, frac = text.partition(".")
        if whole.isdigit() and (not frac or frac.isdigit()):
            return int(whole) * 1_000_000 + int((frac + "000000")[:6])
    raise FrameError(f"kraken {field} must be epoch seconds as a decimal string, got {text!r}")


# ---- typed path (v2 structs; numbers kept as raw wire text) ----


# msgspec cannot decode ``Raw | None``: an absent number is the empty Raw.
_ABSENT = msgspec.Raw()


class _Level(WireStruct):
    price: msgspec.Raw
    qty: msgspec.Raw


class _Data(WireStruct):
    """One element of a v2 push's ``data``: the fields of trade, book and ticker."""

    symbol: str
    timestamp: str | None = None
    # trade
    side: str | None = None
    price: msgspec.Raw = _ABSENT
    qty: msgspec.Raw = _ABSENT
    ord_type: str | None = None
    trade_id: WireInt | None = None
    # book
    bids: list[_Level] | None = None
    asks: list[_Level] | None = None
    checksum: WireInt | None = None
    # ticker
    bid: msgspec.Raw = _ABSENT
    bid_qty: msgspec.Raw = _ABSENT
    ask: msgspec.Raw = _ABSENT
    ask_qty: msgspec.Raw = _ABSENT
    last: msgspec.Raw = _ABSENT
    volume: msgspec.Raw = _ABSENT
    vwap: msgspec.Raw = _ABSENT
    low: msgspec.Raw = _ABSENT
    high: msgspec.Raw = _ABSENT
    change: msgspec.Raw = _ABSENT
    change_pct: msgspec.Raw = _ABSENT


class _Push(WireStruct):
    channel: str
    type: str
    data: list[_Data]


def _raw_text(raw: msgspec.Raw) -> str:
    """A raw JSON number's text; Decline for an absent field, a string, null or anything else."""
    text = bytes(raw).decode()
    if not text or text[0] not in "0123456789-":
        raise Decline
    return text


def _raw_levels(levels: list[_Level] | None) -> Levels:
    if levels is None:
        raise Decline
    return [(_raw_text(lvl.price), _raw_text(lvl.qty)) for lvl in levels]


def _depth_msg(
    symbol: str,
    kind: str,
    bids: Levels,
    asks: Levels,
    depth: int,
    checksum: int | None,
    ts: int,
    frame: RawFrame,
) -> DepthMsg:
    """A book message as every path builds it (v2 typed and careful, v1): no sequence
    numbers; the subscribed ``depth`` rides in ``first_id`` (the Kraken rule cuts the book
    to it before the checksum)."""
    return DepthMsg(
        VENUE,
        symbol,
        kind,
        bids,
        asks,
        depth,
        None,
        None,
        checksum,
        ts,
        frame.ts_ingest,
        frame.conn_id,
    )


class KrakenParser(TypedParser[_Push]):
    venue = VENUE

    def __init__(self, symbols: SymbolMap) -> None:
        super().__init__(symbols, "symbol", _Push)

    # -- typed (v2 pushes of trade/book/ticker; everything else declines) --

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        text = frame.text
        if text[:1] == "[":
            # v1 (frozen, replay of the bundled capture only): the careful reader, keyed.
            # Same decoder and checks as ``parse``, so the same items and no other effect.
            return key_items(VENUE, self._v1_data(orjson.loads(text), frame))
        push = self._decode(text)
        channel, kind = push.channel, push.type
        if kind != "snapshot" and kind != "update":
            raise Decline
        if channel == "book":
            depth = [self._typed_depth(d, kind) for d in push.data]
            out: list[KeyedItem] = []
            for native, bids, asks, checksum, ts in depth:
                symbol, key, _, _ = self._markets[native]
                ts_exchange = frame.ts_ingest if ts is None else ts
                msg = _depth_msg(symbol, kind, bids, asks, BOOK_DEPTH, checksum, ts_exchange, frame)
                out.append((key, msg))
            return out
        if channel == "trade":
            trades = [self._typed_trade(d) for d in push.data]
            return [self._record(native, 2, t, frame.ts_ingest) for native, t in trades]
        if channel == "ticker":
            bbos = [self._typed_ticker(d, frame.ts_ingest) for d in push.data]
            return [self._record(native, 3, b, frame.ts_ingest) for native, b in bbos]
        raise Decline

    def _typed_depth(self, d: _Data, kind: str) -> tuple[Any, ...]:
        deletes = kind == "update"
        bids = self._level_pairs(_raw_levels(d.bids), deletes)
        asks = self._level_pairs(_raw_levels(d.asks), deletes)
        checksum = d.checksum
        if bids is None or asks is None or checksum is None or not 0 <= checksum < _CRC32:
            raise Decline
        if d.side is not None or d.price or d.bid:
            raise Decline
        ts = None if d.timestamp is None else _rfc3339_micros(d.timestamp, "book timestamp")
        return (d.symbol, bids, asks, checksum, ts)

    def _typed_trade(self, d: _Data) -> tuple[str, tuple[Any, ...]]:
        price, qty = _raw_text(d.price), _raw_text(d.qty)
        if d.side not in _V2_SIDES or d.trade_id is None or d.trade_id < 0:
            raise Decline
        if not self._positive_ok(price, qty) or d.bids is not None or d.bid:
            raise Decline
        ts = _rfc3339_micros(d.timestamp, "trade timestamp")
        return d.symbol, (ts, str(d.trade_id), price, qty, d.side)

    def _typed_ticker(self, d: _Data, ts_ingest: int) -> tuple[str, tuple[Any, ...]]:
        bid, bid_qty = _raw_text(d.bid), _raw_text(d.bid_qty)
        ask, ask_qty = _raw_text(d.ask), _raw_text(d.ask_qty)
        if not self._positive_ok(bid, bid_qty, ask, ask_qty) or d.bids is not None:
            raise Decline
        if d.price or d.side is not None:
            raise Decline
        ts = ts_ingest if d.timestamp is None else _rfc3339_micros(d.timestamp, "ticker timestamp")
        return d.symbol, (ts, bid, bid_qty, ask, ask_qty, None)

    def _record(self, native: str, which: int, values: tuple[Any, ...], ts: int) -> KeyedItem:
        market = self._markets[native]
        template: dict[str, Any] = market[which]  # type: ignore[assignment]
        record = template.copy()
        if which == 2:
            (
                record["ts_exchange"],
                record["trade_id"],
                record["price"],
                record["size"],
                record["side"],
            ) = values
        else:
            (
                record["ts_exchange"],
                record["bid_price"],
                record["bid_size"],
                record["ask_price"],
                record["ask_size"],
                record["sequence"],
            ) = values
        record["ts_ingest"] = ts
        return (market[1], record)

    # -- careful (the authority for dead letters) --

    def parse(self, frame: RawFrame) -> list[Item]:
        text = frame.text
        try:
            if text[:1] == "[":
                return self._v1_data(orjson.loads(text), frame)
            obj = _v2_loads(text)
            if obj.__class__ is not dict:
                raise FrameError("kraken: not an object or array")
            if "event" in obj:
                return self._v1_event(obj, frame.ts_ingest)
            if "method" in obj:
                return self._v2_method(obj, frame.ts_ingest)
            return self._v2_push(obj, frame)
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None

    # v2

    def _v2_method(self, obj: Any, ts_ingest: int) -> list[Item]:
        method = obj["method"]
        if method not in ("subscribe", "unsubscribe", "pong"):
            raise FrameError(f"kraken: unknown method reply {method!r}")
        if obj.get("success", True) is False:
            return [make_status(VENUE, None, "error", ts_ingest, f"{method}: {obj.get('error')}")]
        return []

    def _v2_push(self, obj: Any, frame: RawFrame) -> list[Item]:
        channel = obj["channel"]
        if channel in ("heartbeat", "status"):
            return []
        kind = obj["type"]
        if kind != "snapshot" and kind != "update":
            raise FrameError(f"kraken {channel}: unknown type {kind!r}")
        data = obj["data"]
        if data.__class__ is not list:
            raise FrameError("kraken: data must be a list")
        if channel == "book":
            return [self._v2_depth(d, kind, frame) for d in data]
        if channel == "trade":
            return [self._v2_trade(d, frame.ts_ingest) for d in data]
        if channel == "ticker":
            return [self._v2_ticker(d, frame.ts_ingest) for d in data]
        if channel == "ohlc":
            raise FrameError("kraken ohlc: venue candles are not passed through yet")
        raise FrameError(f"kraken: unknown channel {channel!r}")

    def _v2_levels(self, raw: Any, side: str, deletes: bool) -> Levels:
        if raw.__class__ is not list:
            raise FrameError(f"{side}: levels must be a list")
        levels = []
        for n, lvl in enumerate(raw):
            if lvl.__class__ is not dict or len(lvl) != 2:
                raise FrameError(f"{side}[{n}] must be an object {{price, qty}}, got {lvl!r}")
            levels.append(
                (
                    _number(lvl["price"], f"{side}[{n}] price"),
                    _number(lvl["qty"], f"{side}[{n}] qty"),
                )
            )
        check_levels(levels, side, deletes)
        return levels

    def _v2_depth(self, d: Any, kind: str, frame: RawFrame) -> DepthMsg:
        symbol = self._symbol(d["symbol"])
        deletes = kind == "update"
        bids = self._v2_levels(d["bids"], f"kraken book {kind} bids", deletes)
        asks = self._v2_levels(d["asks"], f"kraken book {kind} asks", deletes)
        checksum = _opt_int(d["checksum"], "book checksum")
        if checksum is None or checksum >= _CRC32:
            raise FrameError(f"kraken book checksum must be an unsigned CRC32, got {checksum!r}")
        stamp = d.get("timestamp")
        ts = frame.ts_ingest if stamp is None else _rfc3339_micros(stamp, "book timestamp")
        return _depth_msg(symbol, kind, bids, asks, BOOK_DEPTH, checksum, ts, frame)

    def _v2_trade(self, d: Any, ts_ingest: int) -> dict[str, Any]:
        symbol = self._symbol(d["symbol"])
        price = _number(d["price"], "trade price")
        qty = _number(d["qty"], "trade qty")
        check_positive((price, qty), ("kraken trade price", "kraken trade qty"))
        side = d["side"]
        if side not in _V2_SIDES:
            raise FrameError(f"kraken trade: side must be buy or sell, got {side!r}")
        trade_id = _opt_int(d["trade_id"], "trade trade_id")
        ts = _rfc3339_micros(d["timestamp"], "trade timestamp")
        return make_trade(VENUE, symbol, ts, ts_ingest, str(trade_id), price, qty, side)

    def _v2_ticker(self, d: Any, ts_ingest: int) -> dict[str, Any]:
        symbol = self._symbol(d["symbol"])
        bid, bid_qty = _number(d["bid"], "ticker bid"), _number(d["bid_qty"], "ticker bid_qty")
        ask, ask_qty = _number(d["ask"], "ticker ask"), _number(d["ask_qty"], "ticker ask_qty")
        check_positive(
            (bid, bid_qty, ask, ask_qty),
            (
                "kraken ticker bid",
                "kraken ticker bid_qty",
                "kraken ticker ask",
                "kraken ticker ask_qty",
            ),
        )
        stamp = d.get("timestamp")
        ts = ts_ingest if stamp is None else _rfc3339_micros(stamp, "ticker timestamp")
        return make_bbo(
            VENUE, symbol, ts, ts_ingest, (bid, bid_qty), (ask, ask_qty), None, "ticker"
        )

    # v1

    def _v1_event(self, obj: Any, ts_ingest: int) -> list[Item]:
        event = obj["event"]
        if event in ("heartbeat", "systemStatus", "pong"):
            return []
        if event == "subscriptionStatus":
            if obj.get("status") == "error":
                detail = f"subscribe {obj.get('pair')}: {obj.get('errorMessage')}"
                return [make_status(VENUE, None, "error", ts_ingest, detail)]
            return []
        raise FrameError(f"kraken: unknown event {event!r}")

    def _v1_data(self, arr: Any, frame: RawFrame) -> list[Item]:
        if arr.__class__ is not list or len(arr) < 4:
            raise FrameError("kraken v1: data must be [channelID, payload.., channelName, pair]")
        channel, pair = arr[-2], arr[-1]
        if channel.__class__ is not str:
            raise FrameError(f"kraken v1: channel name must be a string, got {channel!r}")
        symbol = self._symbol(pair)
        payloads = arr[1:-2]
        if channel == "trade" and len(payloads) == 1:
            return [self._v1_trade(t, symbol, frame.ts_ingest) for t in _list(payloads[0], "trade")]
        if channel == "ticker" and len(payloads) == 1:
            return [self._v1_ticker(payloads[0], symbol, frame.ts_ingest)]
        if channel.startswith("book-") and channel[5:].isdigit():
            return [self._v1_depth(payloads, symbol, int(channel[5:]), frame)]
        raise FrameError(f"kraken v1: unknown channel {channel!r}")

    def _v1_trade(self, t: Any, symbol: str, ts_ingest: int) -> dict[str, Any]:
        if t.__class__ is not list or len(t) < 4:
            raise FrameError(f"kraken v1 trade must be [price, volume, time, side, ..], got {t!r}")
        price, volume, stamp, side_code = t[0], t[1], t[2], t[3]
        check_positive((price, volume), ("kraken v1 trade price", "kraken v1 trade volume"))
        side = _V1_SIDES.get(side_code) if side_code.__class__ is str else None
        if side is None:
            raise FrameError(f"kraken v1 trade: side must be 'b' or 's', got {side_code!r}")
        ts = _epoch_micros(stamp, "v1 trade time")
        # v1 trades carry no id: the id is made of what identifies the fill, so the same
        # trade seen twice (reconnect overlap) gets the same id and dedupe removes it.
        trade_id = f"{stamp}:{price}:{volume}:{side_code}"
        return make_trade(VENUE, symbol, ts, ts_ingest, trade_id, price, volume, side)

    def _v1_ticker(self, p: Any, symbol: str, ts_ingest: int) -> dict[str, Any]:
        # a/b = [price, wholeLotVolume, lotVolume]; v1 tickers carry no timestamp.
        ask, bid = p["a"], p["b"]
        if ask.__class__ is not list or bid.__class__ is not list or len(ask) < 3 or len(bid) < 3:
            raise FrameError("kraken v1 ticker: a and b must be [price, wholeLotVolume, lotVolume]")
        values = (bid[0], bid[2], ask[0], ask[2])
        check_positive(
            values,
            (
                "kraken v1 ticker b price",
                "kraken v1 ticker b volume",
                "kraken v1 ticker a price",
                "kraken v1 ticker a volume",
            ),
        )
        return make_bbo(
            VENUE, symbol, ts_ingest, ts_ingest, (bid[0], bid[2]), (ask[0], ask[2]), None, "ticker"
        )

    def _v1_depth(self, payloads: list[Any], symbol: str, depth: int, frame: RawFrame) -> DepthMsg:
        bids: Levels = []
        asks: Levels = []
        checksum: int | None = None
        snapshot = False
        newest = 0
        for payload in payloads:
            if payload.__class__ is not dict:
                raise FrameError("kraken v1 book: payloads must be objects")
            for key, value in payload.items():
                if key in ("as", "bs"):
                    snapshot = True
                    target = asks if key == "as" else bids
                elif key in ("a", "b"):
                    target = asks if key == "a" else bids
                elif key == "c":
                    if value.__class__ is not str or not value.isdigit() or int(value) >= 2**32:
                        raise FrameError(f"kraken v1 book: c must be a CRC32 string, got {value!r}")
                    checksum = int(value)
                    continue
                else:
                    raise FrameError(f"kraken v1 book: unknown key {key!r}")
                for n, lvl in enumerate(_list(value, f"book {key}")):
                    if lvl.__class__ is not list or len(lvl) < 3:
                        raise FrameError(
                            f"kraken v1 book {key}[{n}] must be [price, volume, time, ..], "
                            f"got {lvl!r}"
                        )
                    target.append((lvl[0], lvl[1]))
                    newest = max(newest, _epoch_micros(lvl[2], f"v1 book {key}[{n}] time"))
        kind = "snapshot" if snapshot else "update"
        deletes = not snapshot
        check_levels(bids, f"kraken v1 book {kind} bids", deletes)
        check_levels(asks, f"kraken v1 book {kind} asks", deletes)
        return _depth_msg(
            symbol, kind, bids, asks, depth, checksum, newest or frame.ts_ingest, frame
        )

    def symbol_of(self, frame: RawFrame) -> str | None:
        text = frame.text
        try:
            if text[:1] == "[":
                return self._symbol(orjson.loads(text)[-1])
            data = orjson.loads(text).get("data")
            return self._symbol(data[0]["symbol"]) if data else None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return None


def _list(value: Any, what: str) -> list[Any]:
    if value.__class__ is not list:
        raise FrameError(f"kraken v1 {what} must be a list, got {value!r}")
    result: list[Any] = value
    return result


class KrakenProtocol:
    """Live protocol (v2): one subscribe frame per channel with every symbol; JSON ping
    every 30 s (Kraken also sends a heartbeat about once a second)."""

    venue = VENUE
    default_ws_url = "wss://ws.kraken.com/v2"
    default_rest_url: str | None = None
    app_ping_text: str | None = '{"method":"ping"}'
    app_ping_interval: float | None = 30.0
    max_lifetime: float | None = None

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        return ws_url

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in _SUBSCRIBE_CHANNEL]
        if unknown:
            raise ValueError(f"kraken: unknown channels {unknown}; use {list(_SUBSCRIBE_CHANNEL)}")
        if not natives:
            return []
        return [_subscribe("subscribe", _SUBSCRIBE_CHANNEL[c], natives) for c in channels]

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return None  # the book channel sends its snapshot in-band

    def resync_messages(self, native: str) -> list[str]:
        return [
            _subscribe("unsubscribe", "book", [native]),
            _subscribe("subscribe", "book", [native]),
        ]

    def is_control(self, text: str) -> bool:
        return len(text) < 200 and ('"pong"' in text or '"heartbeat"' in text)

    def is_shutdown_notice(self, text: str) -> bool:
        # v2 announces maintenance on its status channel ("system": "maintenance").
        return len(text) < 512 and '"status"' in text and '"maintenance"' in text


def _subscribe(method: str, channel: str, natives: list[str]) -> str:
    params: dict[str, Any] = {"channel": channel, "symbol": natives}
    if channel == "book":
        params["depth"] = BOOK_DEPTH
    elif channel == "ticker":
        params["event_trigger"] = "bbo"
    return orjson.dumps({"method": method, "params": params}).decode()


PARSER = KrakenParser
PROTOCOL = KrakenProtocol()
