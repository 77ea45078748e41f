"""Hyperliquid (perpetuals, ``wss://api.hyperliquid.xyz/ws``): frame parser and live protocol.

Every frame is ``{"channel": .., "data": ..}`` (exchange-protocols.md §6):

- ``trades``: ``data`` is a list of ``{coin, side, px, sz, hash, time, tid, users}``.
  ``side`` is the aggressor's side (``B`` buy, ``A`` sell): in the bundled capture every
  ``B`` trade prints at the best ask and every ``A`` trade at the best bid of the book
  before it (tests/test_hyperliquid_parser.py checks this). ``tid`` is the trade id the
  dedupe keys on; the first message after subscribing repeats ~50 s of past trades.
- ``l2Book``: ``data`` is ``{coin, time, levels: [bids, asks]}``, levels ``{px, sz, n}``.
  Every message is a full snapshot (no diffs, no sequence numbers, no checksum), so each
  one becomes a ``snapshot`` DepthMsg that replaces the book; a lost message cannot be
  detected, and costs nothing: the next one is complete again.
- ``bbo``: ``data`` is ``{coin, time, bbo: [bid|null, ask|null]}`` (documented, not in the
  capture).
- ``subscriptionResponse`` (acks) and ``pong`` carry nothing; ``error`` becomes a status.

Coins map to ``<coin>/USDC:USDC`` (``candlewax.symbols``). ``typed`` is the fast path
(``sources/typed.py``), ``parse`` the careful one that writes every dead-letter reason.
"""

from __future__ import annotations

from typing import Annotated, Any

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
)
from sources.venue import FRAME_FAULTS, FrameError, Item, frame_error

VENUE = "hyperliquid"
# config channel -> subscription type
_SUBSCRIPTION_TYPE = {"trades": "trades", "book": "l2Book", "bbo": "bbo"}
_SIDES = {"B": "buy", "A": "sell"}
# The documented budget per connection set (§6): at most 1000 subscriptions.
MAX_SUBSCRIPTIONS = 1000
_CONTROL_CHANNELS = frozenset({"pong", "subscriptionResponse"})

# Epoch milliseconds the typed path accepts: what the careful path accepts (a non-negative
# int) inside int64.
_Ms = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _Level(WireStruct):
    px: str
    sz: str
    n: WireInt


class _Trade(WireStruct):
    coin: str
    side: str
    px: str
    sz: str
    time: _Ms
    tid: WireInt
    hash: str | None = None
    users: list[str] | None = None


class _Data(WireStruct):
    """``data`` of ``l2Book`` and ``bbo``, one superset."""

    coin: str
    time: _Ms
    levels: tuple[list[_Level], list[_Level]] | None = None
    bbo: tuple[_Level | None, _Level | None] | None = None


class _Push(WireStruct):
    channel: str
    data: list[_Trade] | _Data | None = None


def _millis(value: Any, field: str) -> int:
    """Epoch milliseconds (a JSON integer) -> microseconds."""
    if value.__class__ is not int or value < 0:
        raise FrameError(f"hyperliquid {field} must be epoch milliseconds, got {value!r}")
    result: int = value * 1000
    return result


def _level_list(raw: Any, side: str) -> Levels:
    """``[{px, sz, n}, ..]`` -> ``[(px, sz), ..]``, positive decimal strings."""
    if raw.__class__ is not list:
        raise FrameError(f"{side} must be a list of levels, got {raw!r}")
    levels: Levels = []
    for n, level in enumerate(raw):
        if level.__class__ is not dict:
            raise FrameError(f"{side}[{n}] must be an object {{px, sz, n}}, got {level!r}")
        px, sz = level["px"], level["sz"]
        if px.__class__ is not str or sz.__class__ is not str:
            raise FrameError(f"{side}[{n}] px and sz must be decimal strings, got {level!r}")
        levels.append((px, sz))
    check_levels(levels, side, False)
    return levels


def _bbo_side(raw: Any, field: str) -> tuple[str, str] | None:
    if raw is None:
        return None
    if raw.__class__ is not dict:
        raise FrameError(f"{field} must be an object {{px, sz, n}} or null, got {raw!r}")
    pair = (raw["px"], raw["sz"])
    check_positive(pair, (f"{field} px", f"{field} sz"))
    return pair


def _book_msg(symbol: str, bids: Levels, asks: Levels, ts: int, frame: RawFrame) -> DepthMsg:
    """An ``l2Book`` push as a book message, as both paths build it: always the whole book
    (a snapshot), with no sequence numbers or checksum."""
    return DepthMsg(
        VENUE,
        symbol,
        "snapshot",
        bids,
        asks,
        None,
        None,
        None,
        None,
        ts,
        frame.ts_ingest,
        frame.conn_id,
    )


class HyperliquidParser(TypedParser[_Push]):
    venue = VENUE

    def __init__(self, symbols: SymbolMap) -> None:
        super().__init__(symbols, "coin", _Push)

    # ---- the fast path ----

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        push = self._decode(frame.text)
        channel, data = push.channel, push.data
        if channel == "trades" and data.__class__ is list:
            return self._typed_trades(data, frame.ts_ingest)
        if data.__class__ is not _Data:
            raise Decline
        assert isinstance(data, _Data)
        if channel == "l2Book" and data.levels is not None and data.bbo is None:
            bids = self._level_pairs([(lvl.px, lvl.sz) for lvl in data.levels[0]], False)
            asks = self._level_pairs([(lvl.px, lvl.sz) for lvl in data.levels[1]], False)
            if bids is None or asks is None:
                raise Decline
            symbol, key, _, _ = self._markets[data.coin]
            return [(key, _book_msg(symbol, bids, asks, data.time * 1000, frame))]
        if channel == "bbo" and data.bbo is not None and data.levels is None:
            bid, ask = data.bbo
            if bid is None or ask is None or not self._positive_ok(bid.px, bid.sz, ask.px, ask.sz):
                raise Decline  # an empty side: the careful path writes None
            _, key, _, template = self._markets[data.coin]
            record = template.copy()
            record["ts_exchange"] = data.time * 1000
            record["bid_price"], record["bid_size"] = bid.px, bid.sz
            record["ask_price"], record["ask_size"] = ask.px, ask.sz
            record["ts_ingest"] = frame.ts_ingest
            return [(key, record)]
        raise Decline

    def _typed_trades(self, trades: list[_Trade], ts_ingest: int) -> list[KeyedItem]:
        positive_ok = self._positive_ok
        for t in trades:
            if t.side not in _SIDES or not positive_ok(t.px, t.sz):
                raise Decline
        out: list[KeyedItem] = []
        markets = self._markets
        for t in trades:  # symbol lookups only once nothing can decline (rule 3)
            _, key, template, _ = markets[t.coin]
            record = template.copy()
            record["ts_exchange"] = t.time * 1000
            record["trade_id"] = str(t.tid)
            record["price"] = t.px
            record["size"] = t.sz
            record["side"] = _SIDES[t.side]
            record["ts_ingest"] = ts_ingest
            out.append((key, record))
        return out

    # ---- the careful path ----

    def parse(self, frame: RawFrame) -> list[Item]:
        try:
            obj = orjson.loads(frame.text)
            if obj.__class__ is not dict:
                raise FrameError("hyperliquid: frame is not a JSON object")
            channel = obj["channel"]
            if channel in _CONTROL_CHANNELS:
                return []
            if channel == "error":
                return [make_status(VENUE, None, "error", frame.ts_ingest, str(obj.get("data")))]
            data = obj["data"]
            if channel == "trades":
                if data.__class__ is not list:
                    raise FrameError("hyperliquid trades: data must be a list")
                return [self._trade(t, frame.ts_ingest) for t in data]
            if channel == "l2Book":
                return [self._book(data, frame)]
            if channel == "bbo":
                return [self._bbo(data, frame.ts_ingest)]
            raise FrameError(f"hyperliquid: unknown channel {channel!r}")
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None

    def _trade(self, t: Any, ts_ingest: int) -> dict[str, Any]:
        px, sz, side, tid = t["px"], t["sz"], t["side"], t["tid"]
        check_positive((px, sz), ("hyperliquid trades px", "hyperliquid trades sz"))
        if side not in _SIDES:
            raise FrameError(f"hyperliquid trades: side must be B or A, got {side!r}")
        if tid.__class__ is not int:
            raise FrameError(f"hyperliquid trades: tid must be an integer, got {tid!r}")
        ts = _millis(t["time"], "trades time")
        symbol = self._symbol(t["coin"])
        return make_trade(VENUE, symbol, ts, ts_ingest, str(tid), px, sz, _SIDES[side])

    def _book(self, data: Any, frame: RawFrame) -> DepthMsg:
        levels = data["levels"]
        if levels.__class__ is not list or len(levels) != 2:
            raise FrameError(f"hyperliquid l2Book: levels must be [bids, asks], got {levels!r}")
        bids = _level_list(levels[0], "hyperliquid l2Book bids")
        asks = _level_list(levels[1], "hyperliquid l2Book asks")
        ts = _millis(data["time"], "l2Book time")
        return _book_msg(self._symbol(data["coin"]), bids, asks, ts, frame)

    def _bbo(self, data: Any, ts_ingest: int) -> dict[str, Any]:
        sides = data["bbo"]
        if sides.__class__ is not list or len(sides) != 2:
            raise FrameError(f"hyperliquid bbo: bbo must be [bid, ask], got {sides!r}")
        bid = _bbo_side(sides[0], "hyperliquid bbo bid")
        ask = _bbo_side(sides[1], "hyperliquid bbo ask")
        ts = _millis(data["time"], "bbo time")
        symbol = self._symbol(data["coin"])
        return make_bbo(VENUE, symbol, ts, ts_ingest, bid, ask, None, "ticker")

    def symbol_of(self, frame: RawFrame) -> str | None:
        try:
            data = orjson.loads(frame.text)["data"]
            coin = data[0]["coin"] if data.__class__ is list else data["coin"]
            return self._symbol(coin)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return None  # control frames, errors, malformed frames


class HyperliquidProtocol:
    """Live protocol: one subscribe frame per coin and channel, JSON ping every 30 s
    (the server closes a connection it has sent nothing to for 60 s)."""

    venue = VENUE
    default_ws_url = "wss://api.hyperliquid.xyz/ws"
    default_rest_url: str | None = None
    app_ping_text: str | None = '{"method":"ping"}'
    app_ping_interval: float | None = 30.0
    max_lifetime: float | None = None

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        return ws_url

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in _SUBSCRIPTION_TYPE]
        if unknown:
            raise ValueError(
                f"hyperliquid: unknown channels {unknown}; use {list(_SUBSCRIPTION_TYPE)}"
            )
        if len(natives) * len(channels) > MAX_SUBSCRIPTIONS:
            raise ValueError(
                f"hyperliquid: {len(natives) * len(channels)} subscriptions exceed the venue's"
                f" {MAX_SUBSCRIPTIONS}; split the symbols over several sources"
            )
        return [
            _subscription("subscribe", _SUBSCRIPTION_TYPE[c], n) for n in natives for c in channels
        ]

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return None  # every l2Book message is a snapshot

    def resync_messages(self, native: str) -> list[str]:
        # Every l2Book push is a full book, but a quiet book may not push for a while:
        # resubscribing makes the server send one at once.
        return [
            _subscription("unsubscribe", "l2Book", native),
            _subscription("subscribe", "l2Book", native),
        ]

    def is_control(self, text: str) -> bool:
        return len(text) < 64 and '"pong"' in text and '"channel"' in text

    def is_shutdown_notice(self, text: str) -> bool:
        return False  # Hyperliquid documents no such notice


def _subscription(method: str, kind: str, coin: str) -> str:
    return orjson.dumps({"method": method, "subscription": {"type": kind, "coin": coin}}).decode()


PARSER = HyperliquidParser
PROTOCOL = HyperliquidProtocol()
