"""OKX (API v5, public channel): frame parser and live protocol.

Pushes look like ``{"arg":{"channel","instId"},"action"?,"data":[..]}``;
events (acks, errors, notices) like ``{"event":..}``; the keep-alive reply is
the bare text ``pong``. Prices and sizes stay the exact strings OKX sent.
``typed`` is the hot path (``sources/typed.py``): one msgspec decode of a push into
:class:`_Push`; ``parse`` is the careful path behind it (``orjson.loads``, hand
checks, the dead-letter reasons), which also serves events and ``pong``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from candlewax.schema import make_bbo, make_status, make_trade
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg, Levels
from sources.frames import RawFrame
from sources.numbers import (
    check_levels,
    check_positive,
    check_ticker,
    malformed_level,
)
from sources.typed import (
    Decline,
    KeyedItem,
    Market,
    TypedParser,
    WireInt,
    WireStruct,
)
from sources.venue import FRAME_FAULTS, FrameError, Item, frame_error

VENUE = "okx"
# Channels carrying snapshot + update books with seqId/checksum (the simulator reuses it).
BOOK_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt"})
_SUBSCRIBE_CHANNEL = {"trades": "trades", "book": "books", "bbo": "bbo-tbt"}
_SIDES = frozenset({"buy", "sell"})
# Level-list names in dead-letter reasons, by action (zero sizes delete only in updates).
_BOOK_SIDES = {
    "snapshot": ("okx snapshot bids", "okx snapshot asks"),
    "update": ("okx update bids", "okx update asks"),
}
_TICKER_FIELDS = (
    "okx tickers bidPx",
    "okx tickers bidSz",
    "okx tickers askPx",
    "okx tickers askSz",
)


_Text = str | None
_IntOrText = WireInt | str | None


class _Arg(WireStruct):
    channel: str
    inst_id: str = msgspec.field(name="instId")


class _Data(WireStruct):
    """One element of a push's ``data``: every field of ``trades``, ``books*``,
    ``bbo-tbt`` and ``tickers``, one superset. Levels are
    ``[price, size, "0", orders]``."""

    ts: _Text = None
    # trades
    inst_id: _Text = msgspec.field(default=None, name="instId")
    trade_id: _Text = msgspec.field(default=None, name="tradeId")
    px: _Text = None
    sz: _Text = None
    side: _Text = None
    count: _Text = None
    # books, books5, bbo-tbt
    asks: list[tuple[str, ...]] | None = None
    bids: list[tuple[str, ...]] | None = None
    checksum: _IntOrText = None
    seq_id: _IntOrText = msgspec.field(default=None, name="seqId")
    prev_seq_id: _IntOrText = msgspec.field(default=None, name="prevSeqId")
    # tickers
    inst_type: _Text = msgspec.field(default=None, name="instType")
    bid_px: _Text = msgspec.field(default=None, name="bidPx")
    bid_sz: _Text = msgspec.field(default=None, name="bidSz")
    ask_px: _Text = msgspec.field(default=None, name="askPx")
    ask_sz: _Text = msgspec.field(default=None, name="askSz")
    last: _Text = None
    last_sz: _Text = msgspec.field(default=None, name="lastSz")
    open24h: _Text = None
    high24h: _Text = None
    low24h: _Text = None
    vol_ccy24h: _Text = msgspec.field(default=None, name="volCcy24h")
    vol24h: _Text = None
    sod_utc0: _Text = msgspec.field(default=None, name="sodUtc0")
    sod_utc8: _Text = msgspec.field(default=None, name="sodUtc8")


class _Push(WireStruct):
    arg: _Arg
    data: list[_Data]
    action: _Text = None


def _levels(raw: Any, side: str, deletes: bool) -> Levels:
    """[[px, sz, deprecated, orderCount], ..] -> [(px, sz), ..], decimal strings;
    sz 0 (a deleted level) only where ``deletes``."""
    if raw.__class__ is not list:
        raise FrameError(f"{side}: levels must be a list")
    levels = [
        (lvl[0], lvl[1])
        for lvl in raw
        if lvl.__class__ is list
        and len(lvl) >= 2
        and lvl[0].__class__ is str
        and lvl[1].__class__ is str
    ]
    if len(levels) != len(raw):
        raise malformed_level(raw, side, exact_pair=False)
    check_levels(levels, side, deletes)
    return levels


def _micros(ms: Any) -> int:
    """OKX ``ts``: epoch milliseconds as a decimal string."""
    if ms.__class__ is not str or not ms.isdigit():
        raise FrameError(f"ts must be a string of epoch milliseconds, got {ms!r}")
    return int(ms) * 1000


def _opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if value.__class__ is int:
        result: int = value
        return result
    if value.__class__ is str:
        try:
            return int(value)
        except ValueError:
            pass
    raise FrameError(f"{field} must be an integer, got {value!r}")


class OkxParser(TypedParser[_Push]):
    venue = VENUE

    def __init__(self, symbols: SymbolMap) -> None:
        super().__init__(symbols, "instId", _Push)

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        """The fast path: pushes of the data channels; raises on any other frame
        (the Normalizer then runs :meth:`parse`)."""
        push = self._decode(frame.text)
        channel = push.arg.channel
        if channel in BOOK_CHANNELS:
            kind = push.action
            if kind != "snapshot" and kind != "update":
                raise Decline
            depth = [self._typed_depth(d, kind) for d in push.data]
        elif channel == "books5":
            depth = [self._typed_depth(d, "snapshot") for d in push.data]
        elif channel == "trades":
            trades = [self._typed_trade(d) for d in push.data]
            market = self._markets[push.arg.inst_id]
            return [self._trade_record(market, t, frame.ts_ingest) for t in trades]
        elif channel == "tickers":
            bbos = [self._typed_ticker(d) for d in push.data]
            market = self._markets[push.arg.inst_id]
            return [self._bbo_record(market, b, frame.ts_ingest) for b in bbos]
        elif channel == "bbo-tbt":
            bbos = [self._typed_bbo(d) for d in push.data]
            market = self._markets[push.arg.inst_id]
            return [self._bbo_record(market, b, frame.ts_ingest) for b in bbos]
        else:
            raise Decline
        symbol, key, _, _ = self._markets[push.arg.inst_id]
        return [
            (
                key,
                DepthMsg(
                    VENUE,
                    symbol,
                    kind,
                    bids,
                    asks,
                    None,
                    seq_id,
                    prev_seq_id,
                    checksum,
                    ts,
                    frame.ts_ingest,
                    frame.conn_id,
                ),
            )
            for kind, bids, asks, seq_id, prev_seq_id, checksum, ts in depth
        ]

    def _typed_depth(self, d: _Data, kind: str) -> tuple[Any, ...]:
        deletes = kind == "update"
        bids = self._level_pairs(d.bids, deletes)
        asks = self._level_pairs(d.asks, deletes)
        if bids is None or asks is None:
            raise Decline
        checksum = _opt_int(d.checksum, "checksum")
        seq_id = _opt_int(d.seq_id, "seqId")
        prev_seq_id = _opt_int(d.prev_seq_id, "prevSeqId")
        return (kind, bids, asks, seq_id, prev_seq_id, checksum or None, _micros(d.ts))

    def _typed_trade(self, d: _Data) -> tuple[Any, ...]:
        px, sz, side, tid = d.px, d.sz, d.side, d.trade_id
        if tid is None or side not in _SIDES or not self._positive_ok(px, sz):
            raise Decline
        return (_micros(d.ts), tid, px, sz, side)

    def _typed_ticker(self, d: _Data) -> tuple[Any, ...]:
        bid, bid_size, ask, ask_size = d.bid_px, d.bid_sz, d.ask_px, d.ask_sz
        if not self._positive_ok(bid, bid_size, ask, ask_size):
            raise Decline  # an empty side (empty strings), or a bad number
        return (_micros(d.ts), bid, bid_size, ask, ask_size, None)

    def _typed_bbo(self, d: _Data) -> tuple[Any, ...]:
        bids = self._level_pairs(d.bids, False)
        asks = self._level_pairs(d.asks, False)
        if bids is None or asks is None or not bids or not asks:
            raise Decline  # an empty side: the careful path writes None
        seq_id = _opt_int(d.seq_id, "seqId")
        return (_micros(d.ts), *bids[0], *asks[0], seq_id)

    @staticmethod
    def _trade_record(market: Market, trade: tuple[Any, ...], ts_ingest: int) -> KeyedItem:
        _, key, template, _ = market
        record = template.copy()
        (
            record["ts_exchange"],
            record["trade_id"],
            record["price"],
            record["size"],
            record["side"],
        ) = trade
        record["ts_ingest"] = ts_ingest
        return (key, record)

    @staticmethod
    def _bbo_record(market: Market, bbo: tuple[Any, ...], ts_ingest: int) -> KeyedItem:
        _, key, _, template = market
        record = template.copy()
        (
            record["ts_exchange"],
            record["bid_price"],
            record["bid_size"],
            record["ask_price"],
            record["ask_size"],
            record["sequence"],
        ) = bbo
        record["ts_ingest"] = ts_ingest
        return (key, record)

    def parse(self, frame: RawFrame) -> list[Item]:
        if frame.text == "pong":
            return []
        try:
            obj = orjson.loads(frame.text)
            arg = obj.get("arg") if "data" in obj else None
            if arg is None:
                return self._event(obj, frame.ts_ingest)
            return self._push(obj, arg, frame)
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None

    def _push(self, obj: Any, arg: Any, frame: RawFrame) -> list[Item]:
        channel = arg["channel"]
        symbol = self._symbol(arg["instId"])
        data = obj["data"]
        if data.__class__ is not list:
            raise FrameError("okx: data must be a list")
        if channel in BOOK_CHANNELS:
            kind = obj["action"]
            if kind != "snapshot" and kind != "update":
                raise FrameError(f"okx {channel}: unknown action {kind!r}")
            return [self._depth(d, symbol, kind, frame) for d in data]
        ts_ingest = frame.ts_ingest
        if channel == "trades":
            return [self._trade(d, symbol, ts_ingest) for d in data]
        if channel == "bbo-tbt":
            return [self._bbo(d, symbol, ts_ingest) for d in data]
        if channel == "tickers":
            return [self._ticker(d, symbol, ts_ingest) for d in data]
        if channel == "books5":  # a full top-5 snapshot on every push
            return [self._depth(d, symbol, "snapshot", frame) for d in data]
        raise FrameError(f"okx: unknown channel {channel!r}")

    def _trade(self, d: Any, symbol: str, ts_ingest: int) -> dict[str, Any]:
        px, sz, side, tid = d["px"], d["sz"], d["side"], d["tradeId"]
        check_positive((px, sz), ("okx trades px", "okx trades sz"))
        if tid.__class__ is not str:
            raise FrameError(f"okx trades: tradeId must be a string, got {tid!r}")
        if side not in _SIDES:
            raise FrameError(f"okx trades: side must be buy or sell, got {side!r}")
        return make_trade(VENUE, symbol, _micros(d["ts"]), ts_ingest, tid, px, sz, side)

    def _depth(self, d: Any, symbol: str, kind: str, frame: RawFrame) -> DepthMsg:
        checksum = _opt_int(d.get("checksum"), "checksum")
        return DepthMsg(
            VENUE,
            symbol,
            kind,
            _levels(d["bids"], _BOOK_SIDES[kind][0], kind == "update"),
            _levels(d["asks"], _BOOK_SIDES[kind][1], kind == "update"),
            None,
            _opt_int(d.get("seqId"), "seqId"),
            _opt_int(d.get("prevSeqId"), "prevSeqId"),
            checksum or None,  # OKX sends 0 since the checksum was deprecated (2026-06-23)
            _micros(d["ts"]),
            frame.ts_ingest,
            frame.conn_id,
        )

    def _bbo(self, d: Any, symbol: str, ts_ingest: int) -> dict[str, Any]:
        bids = _levels(d["bids"], "okx bbo-tbt bids", False)
        asks = _levels(d["asks"], "okx bbo-tbt asks", False)
        return make_bbo(
            VENUE,
            symbol,
            _micros(d["ts"]),
            ts_ingest,
            bids[0] if bids else None,
            asks[0] if asks else None,
            _opt_int(d.get("seqId"), "seqId"),
            "ticker",
        )

    def _ticker(self, d: Any, symbol: str, ts_ingest: int) -> dict[str, Any]:
        # OKX writes an empty side as empty strings.
        bid, ask = check_ticker((d["bidPx"], d["bidSz"]), (d["askPx"], d["askSz"]), _TICKER_FIELDS)
        return make_bbo(
            VENUE,
            symbol,
            _micros(d["ts"]),
            ts_ingest,
            bid,
            ask,
            None,
            "ticker",
        )

    def _event(self, obj: Any, ts_ingest: int) -> list[Item]:
        event = obj.get("event")
        if event in ("subscribe", "unsubscribe", "channel-conn-count"):
            return []
        if event in ("error", "channel-conn-count-error"):
            detail = f"code {obj.get('code')}: {obj.get('msg')}"
            return [make_status(VENUE, None, "error", ts_ingest, detail)]
        if event == "notice":  # e.g. 64008: connection closes soon for a service upgrade
            detail = f"code {obj.get('code')}: {obj.get('msg')}"
            return [make_status(VENUE, None, "planned_reconnect", ts_ingest, detail)]
        raise FrameError(f"okx: unknown event {event!r}" if event else "okx: not a push or event")

    def symbol_of(self, frame: RawFrame) -> str | None:
        if frame.text == "pong":
            return None
        try:
            inst_id = orjson.loads(frame.text)["arg"]["instId"]
            return self._symbol(inst_id)
        except (ValueError, TypeError, KeyError, AttributeError):  # FrameError is a ValueError
            return None


class OkxProtocol:
    """Live protocol: one subscribe frame, text ``ping`` keep-alive every 25 s."""

    venue = VENUE
    default_ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    default_rest_url: str | None = None
    app_ping_text: str | None = "ping"
    app_ping_interval: float | None = 25.0  # OKX drops a connection silent for 30 s
    max_lifetime: float | None = None

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        return ws_url

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in _SUBSCRIBE_CHANNEL]
        if unknown:
            raise ValueError(f"okx: unknown channels {unknown}; use {list(_SUBSCRIBE_CHANNEL)}")
        args = [{"channel": _SUBSCRIBE_CHANNEL[c], "instId": n} for n in natives for c in channels]
        return [_op("subscribe", args)] if args else []

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return None  # the books channel sends its snapshot in-band

    def resync_messages(self, native: str) -> list[str]:
        args = [{"channel": "books", "instId": native}]
        return [_op("unsubscribe", args), _op("subscribe", args)]

    def is_control(self, text: str) -> bool:
        return text == "pong"

    def is_shutdown_notice(self, text: str) -> bool:
        # {"event":"notice","code":"64008","msg":"The connection will soon be closed ..."}
        return len(text) < 512 and '"notice"' in text and '"event"' in text


def _op(op: str, args: list[dict[str, str]]) -> str:
    return orjson.dumps({"op": op, "args": args}).decode()


PARSER = OkxParser
PROTOCOL = OkxProtocol()
