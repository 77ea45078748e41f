"""Binance spot and USD-M as the simulator serves them.

Combined streams ``/stream?streams=a/b`` and ``SUBSCRIBE``/``UNSUBSCRIBE``/
``LIST_SUBSCRIPTIONS`` method frames, WebSocket ping frames from the server
(every 20 s), and the REST depth snapshot ``GET /api/v3/depth?symbol=X&limit=N``
(``/fapi/v1/depth`` too) on the same port, built from the capture's own REST
snapshot plus the diffs sent so far.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from simulator.books import BookState
from simulator.tape_types import Entry, Seed, TapeBuilder
from simulator.venues.base import (
    ClientPort,
    MarketAt,
    RestReply,
    VenueSim,
    shifted_time,
    time_as_ms,
)
from sources.frames import SNAPSHOT_HINT, RawFrame

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000

# Re-stamping: E (event time), T (trade / transaction / kline close / next funding
# time), a kline's t (open time; a trade's t is its id). 12+ digits: epoch times only.
_TIME_FIELDS = re.compile(r'"([ET])":([0-9]{12,})')
_KLINE_OPEN = re.compile(r'"(t)":([0-9]{12,})')
# Laps: E/T event times (ms); t/a/f/l trade ids; U/u/pu book ids (u also in
# bookTicker), lastUpdateId in REST snapshots. Values are bare integers; the
# array-valued "a" (asks) never matches.
_LAP_TIME = re.compile(r'"(E|T)":(\d+)')
_LAP_ID = re.compile(r'"(t|a|f|l|U|u|pu|lastUpdateId)":(\d+)')


def binance_key(stream: str) -> str:
    """Subscription key of a Binance stream: lowercase, depth speed ignored.

    ``btcusdt@depth@100ms`` and ``btcusdt@depth`` name the same diffs here, so a
    client asking for another update speed still gets the recorded ones."""
    stream = stream.lower()
    parts = stream.split("@")
    if len(parts) == 3 and parts[1] == "depth" and parts[2].endswith("ms"):
        return f"{parts[0]}@depth"
    return stream


class BinanceSim(VenueSim):
    names = ("binance", "binance-usdm")
    ws_paths = ("/stream",)
    connect_hint = "/stream?streams=a/b"
    ping_interval = 20.0  # Binance pings every 20 s
    rest_paths = ("/api/v3/depth", "/fapi/v1/depth")

    def tape_builder(self) -> TapeBuilder:
        return _BinanceBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        assert entry.book is not None and entry.last_id is not None
        book = books.get(entry.book)
        if book is None or book.last_id is None:
            return  # no REST snapshot in the capture for this symbol: nothing to serve
        if entry.last_id > book.last_id:  # diffs the snapshot already contains are skipped
            book.apply(entry.bids, entry.asks)
            book.last_id = entry.last_id

    # ---- connections ----

    def on_connect(self, client: ClientPort, path: str, query: dict[str, list[str]]) -> None:
        streams = query.get("streams", [""])[0]
        for name in filter(None, streams.split("/")):
            client.subs[binance_key(name)] = name
        if client.subs:
            client.begin()
            client.stream()

    async def on_text(self, client: ClientPort, text: str) -> None:
        try:
            request = orjson.loads(text)
            method, params, req_id = request["method"], request.get("params", []), request["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await client.send(_error(None, "Invalid request: not a method frame"))
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await client.send(_error(req_id, "Invalid request: params"))
                return
            client.stats.subscribe_requests += 1
            for name in params:
                if method == "SUBSCRIBE":
                    client.subs[binance_key(name)] = name
                else:
                    client.subs.pop(binance_key(name), None)
            await client.send(orjson.dumps({"result": None, "id": req_id}).decode())
            if client.subs:
                client.begin()
                client.stream()
        elif method == "LIST_SUBSCRIPTIONS":
            names = sorted(client.subs.values())
            await client.send(orjson.dumps({"result": names, "id": req_id}).decode())
        else:
            await client.send(_error(req_id, f"Invalid request: unknown method {method!r}"))

    def rest(self, path: str, query: dict[str, list[str]], market_at: MarketAt) -> RestReply:
        """GET /api/v3/depth: the book as of the last diff sent for that symbol."""
        symbol = query.get("symbol", [""])[0].upper()
        try:
            limit = int(query.get("limit", [str(DEFAULT_LIMIT)])[0])
        except ValueError:
            limit = 0
        if not symbol:
            return _rest_error(-1102, "Mandatory parameter 'symbol'")
        if not 1 <= limit <= MAX_LIMIT:
            return _rest_error(-1100, "Illegal characters in 'limit'")
        market, lap = market_at(symbol)
        book = market.books.get(symbol)
        if book is None or book.last_id is None:
            return _rest_error(-1121, "Invalid symbol.")
        bids, asks = book.book.top(limit)
        body = {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}
        return RestReply(200, orjson.dumps(body).decode(), lap)

    # ---- event times and ids ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        return (time_as_ms(m[2]) for m in _TIME_FIELDS.finditer(text) if m[1] == "E")

    def restamp(self, text: str, offset_ms: int) -> str:
        def shift(match: re.Match[str]) -> str:
            return f'"{match[1]}":{shifted_time(match[2], offset_ms)}'

        text = _TIME_FIELDS.sub(shift, text)
        if '"e":"kline"' in text:
            text = _KLINE_OPEN.sub(shift, text)
        return text

    def lap_times(self, text: str) -> Iterable[int]:
        return (int(m[2]) for m in _LAP_TIME.finditer(text))

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[2]) for m in _LAP_ID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = _LAP_TIME.sub(lambda m: f'"{m[1]}":{int(m[2]) + dt_ms}', text)
        return _LAP_ID.sub(lambda m: f'"{m[1]}":{int(m[2]) + did}', text)


class _BinanceBuilder(TapeBuilder):
    """Combined-stream frames; REST depth snapshots of the capture become seeds."""

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._pending_seed: Seed | None = None  # symbol-less snapshot before any diff
        self._last_symbol: str | None = None

    def _add(self, frame: RawFrame) -> bool:
        obj = orjson.loads(frame.text)
        if frame.hint is not None and frame.hint.startswith(SNAPSHOT_HINT):
            seed = Seed(int(obj["lastUpdateId"]), obj["bids"], obj["asks"])
            symbol = frame.hint[len(SNAPSHOT_HINT) :].upper() or self._last_symbol
            if symbol is None:
                self._pending_seed = seed
            else:
                self.seeds.setdefault(symbol, seed)
            return True
        stream = obj.get("stream")
        data = obj.get("data")
        if not isinstance(stream, str) or not isinstance(data, dict):
            return False  # acks, errors, raw (non-combined) events
        entry = self._entry(frame, binance_key(stream))
        if data.get("e") == "depthUpdate":
            symbol = str(data["s"]).upper()
            entry.book = symbol
            entry.bids, entry.asks = data["b"], data["a"]
            entry.first_id, entry.last_id = int(data["U"]), int(data["u"])
            self._number(entry)
            self._last_symbol = symbol
            if self._pending_seed is not None:
                self.seeds.setdefault(symbol, self._pending_seed)
                self._pending_seed = None
        return True


def _error(req_id: Any, msg: str) -> str:
    return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": req_id}).decode()


def _rest_error(code: int, msg: str) -> RestReply:
    return RestReply(400, orjson.dumps({"code": code, "msg": msg}).decode())
