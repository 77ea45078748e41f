"""Bybit v5 public streams (spot and linear): frame parser and live protocol.

Pushes look like ``{"topic":"<channel>.<..>.<SYMBOL>","type":"snapshot"|"delta","ts",
"data":..}``; replies to our requests like ``{"success","ret_msg","op",..}``. Prices and
sizes stay the exact strings Bybit sent.

Spot and linear use the same native names (``BTCUSDT``), so the market comes from the
connection's endpoint (``/v5/public/spot`` or ``/v5/public/linear``), read from the
frame's ``conn_id`` (:func:`market_of`): replay tags it with the connect record's URL,
and a connection id without a market is read as the only market the parser was
configured with, else linear (Bybit's public history dumps, e.g. ``ob500``, are linear).

``typed`` is the hot path (``sources/typed.py``); ``parse`` the careful path behind it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson

from candlewax.schema import make_bbo, make_status, make_trade
from candlewax.symbols import BYBIT_LINEAR, SymbolMap, split_unified, to_native
from operators.events import DepthMsg, Levels
from sources.frames import RawFrame
from sources.numbers import check_levels, check_positive, malformed_level, number_checks
from sources.typed import Decline, KeyedItem, Markets, WireInt, WireStruct, decoder, native_symbols
from sources.venue import FRAME_FAULTS, FrameError, Item, NativeSymbols, frame_error

VENUE = "bybit"
SPOT, LINEAR = "spot", "linear"
MARKETS = (SPOT, LINEAR)
_MARKET_IN = re.compile(r"(?<![a-z])(spot|linear)(?![a-z])")
_SIDES = {"Buy": "buy", "Sell": "sell"}
_BOOK_KINDS = {"snapshot": "snapshot", "delta": "update"}
# Topics we read but do not carry (venue candles, liquidations: other issues).
_IGNORED_CHANNELS = frozenset({"kline", "allLiquidation", "liquidation"})
_TICKER_FIELDS = ("bybit tickers bid1Price", "bybit tickers bid1Size")
_ASK_FIELDS = ("bybit tickers ask1Price", "bybit tickers ask1Size")
_EMPTY = ("", "0")
_TOP_OF_BOOK = "orderbook.1."  # level-1 books: BBO records, not depth


def market_of(conn_id: str, default: str = LINEAR) -> str:
    """The market a connection streams, from the last ``spot``/``linear`` word in its id."""
    found = _MARKET_IN.findall(conn_id.lower())
    return found[-1] if found else default


def market_of_symbol(symbol: str) -> str:
    """``BTC/USDT`` -> spot, ``BTC/USDT:USDT`` -> linear."""
    return LINEAR if split_unified(symbol)[2] else SPOT


_Text = str | None


class _Trade(WireStruct):
    T: WireInt
    s: str
    S: str
    v: str
    p: str
    i: str
    L: _Text = None
    BT: bool | None = None
    RPI: bool | None = None
    seq: WireInt | None = None


class _Data(WireStruct):
    """``data`` of ``orderbook.*`` and ``tickers.*``, one superset (fields keep the
    wire names)."""

    # orderbook
    s: _Text = None
    b: list[tuple[str, str]] | None = None
    a: list[tuple[str, str]] | None = None
    u: WireInt | None = None
    seq: WireInt | None = None
    # tickers
    symbol: _Text = None
    bid1Price: _Text = None
    bid1Size: _Text = None
    ask1Price: _Text = None
    ask1Size: _Text = None
    lastPrice: _Text = None
    tickDirection: _Text = None
    price24hPcnt: _Text = None
    prevPrice24h: _Text = None
    highPrice24h: _Text = None
    lowPrice24h: _Text = None
    prevPrice1h: _Text = None
    markPrice: _Text = None
    indexPrice: _Text = None
    usdIndexPrice: _Text = None
    openInterest: _Text = None
    openInterestValue: _Text = None
    singleOpenInterest: _Text = None
    singleOpenInterestValue: _Text = None
    turnover24h: _Text = None
    volume24h: _Text = None
    fundingIntervalHour: _Text = None
    fundingCap: _Text = None
    nextFundingTime: _Text = None
    fundingRate: _Text = None
    preOpenPrice: _Text = None
    preQty: _Text = None
    curPreListingPhase: _Text = None


class _Push(WireStruct):
    topic: str
    type: str
    ts: WireInt
    data: list[_Trade] | _Data
    cts: WireInt | None = None
    cs: WireInt | None = None


def _levels(raw: Any, side: str, deletes: bool) -> Levels:
    """[[px, sz], ..] exact pairs of decimal strings; sz 0 (a delete) only where ``deletes``."""
    if raw.__class__ is not list:
        raise FrameError(f"{side}: levels must be a list")
    levels = [
        (lvl[0], lvl[1])
        for lvl in raw
        if lvl.__class__ is list
        and len(lvl) == 2
        and lvl[0].__class__ is str
        and lvl[1].__class__ is str
    ]
    if len(levels) != len(raw):
        raise malformed_level(raw, side, exact_pair=True)
    check_levels(levels, side, deletes)
    return levels


def _int(value: Any, field: str) -> int:
    if value.__class__ is not int:
        raise FrameError(f"bybit: {field} must be an integer, got {value!r}")
    result: int = value
    return result


def _ticker_side(price: Any, size: Any, fields: tuple[str, str]) -> tuple[Any, ...] | None:
    """None: unchanged (absent); ``()``: empty side; else the (price, size) pair."""
    if price is None and size is None:
        return None
    if price == "" and size in _EMPTY:
        return ()
    check_positive((price, size), fields)
    return (price, size)


class BybitParser:
    venue = VENUE

    def __init__(self, symbols: SymbolMap) -> None:
        configured = symbols.configured
        by_market = {m: [s for s in configured if market_of_symbol(s) == m] for m in MARKETS}
        self._default = SPOT if by_market[SPOT] and not by_market[LINEAR] else LINEAR
        self._symbols: dict[str, NativeSymbols] = {}
        self._markets: dict[str, Markets] = {}
        for market, venue in ((SPOT, VENUE), (LINEAR, BYBIT_LINEAR)):
            careful, typed = native_symbols(SymbolMap(venue, by_market[market]), VENUE, "s")
            self._symbols[market], self._markets[market] = careful, typed
        self._conn_market: dict[str, str] = {}
        # Linear tickers deltas carry only what changed: the last (bid, ask) per
        # (market, native); () is an empty side.
        self._tops: dict[tuple[str, str], list[tuple[Any, ...] | None]] = {}
        self._decode = decoder(_Push)
        checks = number_checks()
        self._positive_ok = checks.positive_ok
        self._level_pairs = checks.level_pairs

    def market(self, conn_id: str) -> str:
        found = self._conn_market.get(conn_id)
        if found is None:
            found = self._conn_market[conn_id] = market_of(conn_id, self._default)
        return found

    # ---- the fast path ----

    def typed(self, frame: RawFrame) -> list[KeyedItem]:
        push = self._decode(frame.text)
        channel = push.topic.partition(".")[0]
        data = push.data
        market = self.market(frame.conn_id)
        if channel == "publicTrade":
            if data.__class__ is not list:
                raise Decline
            trades = [self._typed_trade(t) for t in data]
            markets = self._markets[market]
            out: list[KeyedItem] = []
            for trade, native in trades:
                _, key, template, _ = markets[native]
                record = template.copy()
                (
                    record["ts_exchange"],
                    record["trade_id"],
                    record["price"],
                    record["size"],
                    record["side"],
                ) = trade
                record["ts_ingest"] = frame.ts_ingest
                out.append((key, record))
            return out
        if data.__class__ is not _Data:
            raise Decline
        d: _Data = data
        if channel == "orderbook":
            kind = _BOOK_KINDS.get(push.type)
            if kind is None or d.u is None or d.s is None:
                raise Decline
            bids = self._level_pairs(d.b, kind == "update")
            asks = self._level_pairs(d.a, kind == "update")
            if bids is None or asks is None:
                raise Decline
            if push.topic.startswith(_TOP_OF_BOOK):
                if kind != "snapshot":
                    raise Decline
                _, key, _, template = self._markets[market][d.s]
                record = template.copy()
                record["ts_exchange"] = push.ts * 1000
                record["ts_ingest"] = frame.ts_ingest
                if bids:
                    record["bid_price"], record["bid_size"] = bids[0]
                if asks:
                    record["ask_price"], record["ask_size"] = asks[0]
                record["sequence"] = d.u
                return [(key, record)]
            symbol, key, _, _ = self._markets[market][d.s]
            msg = DepthMsg(
                VENUE,
                symbol,
                kind,
                bids,
                asks,
                None,
                d.u,
                None,
                None,
                push.ts * 1000,
                frame.ts_ingest,
                frame.conn_id,
            )
            return [(key, msg)]
        if channel == "tickers":
            if d.symbol is None or (push.type != "snapshot" and push.type != "delta"):
                raise Decline
            bid = self._typed_side(d.bid1Price, d.bid1Size)
            ask = self._typed_side(d.ask1Price, d.ask1Size)
            market_info = self._markets[market][d.symbol]
            if market == SPOT:
                return []  # spot tickers carry no bid/ask: spot BBO comes from the book
            top = self._merge_top(market, d.symbol, bid, ask)
            if top is None:
                return []
            record = market_info[3].copy()
            (
                record["ts_exchange"],
                record["bid_price"],
                record["bid_size"],
                record["ask_price"],
                record["ask_size"],
            ) = (push.ts * 1000, *top)
            record["ts_ingest"] = frame.ts_ingest
            return [(market_info[1], record)]
        raise Decline

    def _typed_trade(self, t: _Trade) -> tuple[tuple[Any, ...], str]:
        side = _SIDES.get(t.S)
        if side is None or not self._positive_ok(t.p, t.v):
            raise Decline
        return (t.T * 1000, t.i, t.p, t.v, side), t.s

    def _typed_side(self, price: Any, size: Any) -> tuple[Any, ...] | None:
        if price is None and size is None:
            return None
        if not self._positive_ok(price, size):
            raise Decline  # an empty side or a bad number: the careful path decides
        return (price, size)

    def _merge_top(
        self, market: str, native: str, bid: tuple[Any, ...] | None, ask: tuple[Any, ...] | None
    ) -> tuple[Any, Any, Any, Any] | None:
        """The (bid px, bid sz, ask px, ask sz) after this ticker, None when nothing
        changed or a side was never seen; empty sides as None."""
        top = self._tops.setdefault((market, native), [None, None])
        if bid is None and ask is None:
            return None
        if bid is not None:
            top[0] = bid
        if ask is not None:
            top[1] = ask
        b, a = top
        if b is None or a is None:
            return None
        return (b[0] if b else None, b[1] if b else None, a[0] if a else None, a[1] if a else None)

    # ---- the careful path ----

    def parse(self, frame: RawFrame) -> list[Item]:
        try:
            obj = orjson.loads(frame.text)
            if obj.__class__ is not dict:
                raise FrameError("bybit: not a JSON object")
            if "topic" not in obj:
                return self._reply(obj, frame.ts_ingest)
            return self._push(obj, frame)
        except FRAME_FAULTS as exc:
            raise frame_error(self.venue, exc) from None

    def _push(self, obj: Any, frame: RawFrame) -> list[Item]:
        topic = obj["topic"]
        if topic.__class__ is not str:
            raise FrameError(f"bybit: topic must be a string, got {topic!r}")
        channel = topic.partition(".")[0]
        if channel in _IGNORED_CHANNELS:
            return []
        market = self.market(frame.conn_id)
        symbols = self._symbols[market]
        data = obj["data"]
        kind = obj["type"]
        ts = _int(obj["ts"], "ts") * 1000
        if channel == "publicTrade":
            if data.__class__ is not list:
                raise FrameError("bybit publicTrade: data must be a list")
            trades = [self._trade(t) for t in data]
            return [
                make_trade(VENUE, symbols(native), ts_exchange, frame.ts_ingest, *rest)
                for (ts_exchange, *rest), native in trades
            ]
        if data.__class__ is not dict:
            raise FrameError(f"bybit {channel}: data must be an object")
        if channel == "orderbook":
            book_kind = _BOOK_KINDS.get(kind)
            if book_kind is None:
                raise FrameError(f"bybit orderbook: unknown type {kind!r}")
            if topic.startswith(_TOP_OF_BOOK):
                return [self._top_of_book(data, kind, symbols, ts, frame.ts_ingest)]
            deletes = book_kind == "update"
            bids = _levels(data["b"], f"bybit orderbook {kind} b", deletes)
            asks = _levels(data["a"], f"bybit orderbook {kind} a", deletes)
            u = _int(data["u"], "u")
            symbol = symbols(data["s"])
            return [
                DepthMsg(
                    VENUE,
                    symbol,
                    book_kind,
                    bids,
                    asks,
                    None,
                    u,
                    None,
                    None,
                    ts,
                    frame.ts_ingest,
                    frame.conn_id,
                )
            ]
        if channel == "tickers":
            if kind != "snapshot" and kind != "delta":
                raise FrameError(f"bybit tickers: unknown type {kind!r}")
            bid = _ticker_side(data.get("bid1Price"), data.get("bid1Size"), _TICKER_FIELDS)
            ask = _ticker_side(data.get("ask1Price"), data.get("ask1Size"), _ASK_FIELDS)
            native = data["symbol"]
            symbol = symbols(native)
            if market == SPOT:
                return []  # spot tickers carry no bid/ask: spot BBO comes from the book
            top = self._merge_top(market, native, bid, ask)
            if top is None:
                return []
            bp, bs, ap, as_ = top
            return [
                make_bbo(
                    VENUE,
                    symbol,
                    ts,
                    frame.ts_ingest,
                    None if bp is None else (bp, bs),
                    None if ap is None else (ap, as_),
                    None,
                    "ticker",
                )
            ]
        raise FrameError(f"bybit: unknown topic {topic!r}")

    def _top_of_book(
        self, data: Any, kind: str, symbols: NativeSymbols, ts: int, ts_ingest: int
    ) -> dict[str, Any]:
        """``orderbook.1``: a snapshot of the best level each side, read as a BBO (the
        venue's own top of book: spot's only BBO stream, tickers lack bid/ask there)."""
        if kind != "snapshot":
            raise FrameError(f"bybit orderbook.1: a level-1 book is snapshots only, got {kind!r}")
        bids = _levels(data["b"], "bybit orderbook.1 b", False)
        asks = _levels(data["a"], "bybit orderbook.1 a", False)
        u = _int(data["u"], "u")
        return make_bbo(
            VENUE,
            symbols(data["s"]),
            ts,
            ts_ingest,
            bids[0] if bids else None,
            asks[0] if asks else None,
            u,
            "ticker",
        )

    def _trade(self, t: Any) -> tuple[tuple[Any, ...], Any]:
        price, size, taker = t["p"], t["v"], t["S"]
        check_positive((price, size), ("bybit publicTrade p", "bybit publicTrade v"))
        side = _SIDES.get(taker) if taker.__class__ is str else None
        if side is None:
            raise FrameError(f"bybit publicTrade: S must be Buy or Sell, got {taker!r}")
        tid = t["i"]
        if tid.__class__ is not str:
            raise FrameError(f"bybit publicTrade: i must be a string, got {tid!r}")
        return (_int(t["T"], "T") * 1000, tid, price, size, side), t["s"]

    def _reply(self, obj: Any, ts_ingest: int) -> list[Item]:
        op = obj.get("op")
        if op is None:
            raise FrameError("bybit: neither a push (topic) nor a reply (op)")
        if obj.get("success") is False:
            detail = f"{op} failed: {obj.get('ret_msg')}"
            return [make_status(VENUE, None, "error", ts_ingest, detail)]
        return []  # subscribe/unsubscribe acks, pongs

    def symbol_of(self, frame: RawFrame) -> str | None:
        try:
            topic = orjson.loads(frame.text)["topic"]
            native = topic.rpartition(".")[2]
            return self._symbols[self.market(frame.conn_id)](native)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


PARSER = BybitParser


# Live: what each configured channel subscribes to, per market. Spot tickers carry no
# bid/ask in v5, so spot ``bbo`` is the level-1 book (orderbook.1, pushed every 10 ms).
BOOK_DEPTH = 200  # orderbook.200: 100 ms pushes on both markets, the captures' depth
_TOPICS = {
    LINEAR: {"trades": "publicTrade", "book": f"orderbook.{BOOK_DEPTH}", "bbo": "tickers"},
    SPOT: {"trades": "publicTrade", "book": f"orderbook.{BOOK_DEPTH}", "bbo": "orderbook.1"},
}
ARGS_PER_REQUEST = 10  # spot's limit per subscribe request; used on linear too
_ENDPOINT = re.compile(r"/v5/public/(spot|linear)/?$")


def market_url(ws_url: str, market: str) -> str:
    """The ``market`` endpoint on the host of ``ws_url`` (which may name either market
    or none): ``wss://stream.bybit.com/v5/public/linear`` -> ``.../v5/public/spot``."""
    return f"{_ENDPOINT.sub('', ws_url.rstrip('/'))}/v5/public/{market}"


class BybitProtocol:
    """Live protocol: subscribe ops in batches of 10 args, ``{"op":"ping"}`` every 20 s,
    resync = unsubscribe + subscribe the symbol's orderbook topic (a new snapshot).
    One connection per market (:meth:`market_specs`); ``connect_url`` keeps the URL."""

    venue = VENUE
    default_ws_url = "wss://stream.bybit.com/v5/public/linear"
    default_rest_url: str | None = None
    app_ping_text: str | None = '{"op":"ping"}'
    app_ping_interval: float | None = 20.0  # Bybit's recommendation
    max_lifetime: float | None = None

    def __init__(self, market: str | None = None) -> None:
        # None: the registry's instance, before market_specs made one per market.
        self.market = market

    def market_specs(self, spec: Any, symbols: list[str]) -> list[Any]:
        """``spec`` (a ``sources.live.ConnectionSpec``) split into one per market: that
        market's symbols, its endpoint, and the market in the connection ids, which is
        how the parser tells ``BTCUSDT`` spot from ``BTCUSDT`` linear."""
        url = spec.ws_url or self.default_ws_url
        specs = []
        for market in MARKETS:
            natives = [to_native(VENUE, s) for s in symbols if market_of_symbol(s) == market]
            if natives:
                specs.append(
                    replace(
                        spec,
                        natives=natives,
                        ws_url=market_url(url, market),
                        conn_prefix=f"{spec.conn_prefix}{market}-",
                        protocol=BybitProtocol(market),
                    )
                )
        return specs

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        return ws_url

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in _TOPICS[LINEAR]]
        if unknown:
            raise ValueError(f"bybit: unknown channels {unknown}; use {list(_TOPICS[LINEAR])}")
        topics = _TOPICS[self.market or LINEAR]
        args = [f"{topics[c]}.{n}" for n in natives for c in channels if c in topics]
        return [
            _op("subscribe", args[i : i + ARGS_PER_REQUEST])
            for i in range(0, len(args), ARGS_PER_REQUEST)
        ]

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        return None  # orderbook snapshots come in-band

    def resync_messages(self, native: str) -> list[str]:
        args = [f"orderbook.{BOOK_DEPTH}.{native}"]
        return [_op("unsubscribe", args), _op("subscribe", args)]

    def is_control(self, text: str) -> bool:
        # {"success":true,"ret_msg":"pong","conn_id":"..","req_id":"","op":"ping"}
        return len(text) < 256 and '"op":"ping"' in text and '"success":true' in text

    def is_shutdown_notice(self, text: str) -> bool:
        return False  # Bybit sends none on public streams


def _op(op: str, args: list[str]) -> str:
    return orjson.dumps({"op": op, "args": args}).decode()


PROTOCOL = BybitProtocol()
