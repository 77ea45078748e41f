"""Kraken WebSocket v2 as the simulator serves it, from v2 frames DERIVED from the real v1
capture (``simulator.venues.kraken_v2``: no real v2 recording exists).

``/v2`` with ``subscribe``/``unsubscribe`` methods (one ack per symbol), ``ping`` ->
``pong``, ``{"channel":"heartbeat"}`` once a second, a fresh ``book`` snapshot (top-10
checksum) on every book subscription, and ``--corrupt-checksum`` edits a book update's
checksum. Subscription keys are ``channel:symbol`` (``book:BTC/CHF``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import orjson

from operators.checksum import KRAKEN_DEPTH, kraken_checksum
from simulator.books import BookState
from simulator.tape_types import SNAPSHOT, UPDATE, Entry, TapeBuilder
from simulator.venues.base import ClientPort, VenueSim, apply_in_band
from simulator.venues.kraken_v2 import V2Deriver, book_push
from sources.frames import RawFrame
from sources.kraken import BOOK_DEPTH

PATH = "/v2"
START_AFTER = 0.2  # seconds without a new subscribe before a connection's stream starts
_CHANNELS = ("book", "trade", "ticker")
_CHECKSUM = re.compile(r'"checksum":([0-9]+)')
_TIMESTAMP = re.compile(r'"timestamp":"([0-9-]+T[0-9:]+)\.([0-9]{6})Z"')
_TRADE_ID = re.compile(r'"trade_id":([0-9]+)')


def _ms(stamp: str, micros: str) -> int:
    whole = datetime.fromisoformat(stamp + "+00:00").timestamp()
    return int(whole) * 1000 + int(micros) // 1000


def _stamp(ms_total: int, micros: str) -> str:
    whole = datetime.fromtimestamp(ms_total // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f'"timestamp":"{whole}.{ms_total % 1000:03d}{micros[3:]}Z"'


def shift_times(text: str, offset_ms: int) -> str:
    def shift(m: re.Match[str]) -> str:
        return _stamp(_ms(m[1], m[2]) + offset_ms, m[2])

    return _TIMESTAMP.sub(shift, text)


def corrupt_checksum(text: str) -> str:
    """The same push with its checksum changed (still an unsigned CRC32)."""
    return _CHECKSUM.sub(lambda m: f'"checksum":{(int(m[1]) + 1) % 2**32}', text, count=1)


class KrakenSim(VenueSim):
    names = ("kraken",)
    ws_paths = (PATH,)
    ws_url_path = PATH
    connect_hint = PATH
    snapshot_counter = "kraken_snapshots"
    heartbeat_interval = 1.0

    def __init__(self, venue: str, options: Mapping[str, object] | None = None) -> None:
        super().__init__(venue, options)
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._streaming: set[str] = set()

    def tape_builder(self) -> TapeBuilder:
        return _KrakenBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        apply_in_band(books, entry)

    # ---- connections ----

    async def on_text(self, client: ClientPort, text: str) -> None:
        try:
            request = orjson.loads(text)
            method = request["method"]
            if method == "ping":
                client.stats.app_pings += 1
                await client.send(_reply("pong", request))
                return
            params = request["params"]
            channel, symbols = params["channel"], params["symbol"]
            if method not in ("subscribe", "unsubscribe") or channel not in _CHANNELS:
                raise ValueError(method)
            if not isinstance(symbols, list) or not symbols:
                raise ValueError("symbol")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            error = {"error": f"Invalid request: {text[:200]}", "method": "?", "success": False}
            await client.send(orjson.dumps(error).decode())
            return
        client.stats.subscribe_requests += 1
        keys = [f"{channel}:{symbol}" for symbol in symbols]
        for key, symbol in zip(keys, symbols, strict=True):
            if method == "subscribe":
                client.subs[key] = symbol
            else:
                client.subs.pop(key, None)
            result = {"channel": channel, "symbol": symbol}
            if channel == "book":
                result["depth"] = params.get("depth", 10)
            await client.send(_reply(method, request, result))
        if method != "subscribe":
            return
        if client.conn_id in self._streaming:
            await self._send_snapshots(client, [k for k in keys if k.startswith("book:")])
            return
        # v2 takes one channel per request, so a client subscribes with several frames
        # back to back: the stream starts once they have stopped coming (START_AFTER s),
        # so they join one subscription set and no frame passes before its subscription.
        pending = self._pending.pop(client.conn_id, None)
        if pending is not None:
            pending.cancel()
        self._pending[client.conn_id] = asyncio.create_task(self._start(client))

    async def _start(self, client: ClientPort) -> None:
        await asyncio.sleep(START_AFTER)
        self._pending.pop(client.conn_id, None)
        self._streaming.add(client.conn_id)
        client.begin()
        await self._send_snapshots(client, [k for k in client.subs if k.startswith("book:")])
        client.stream()

    async def _send_snapshots(self, client: ClientPort, keys: list[str]) -> None:
        for key in keys:
            snapshot = self._snapshot(client, key, key.split(":", 1)[1])
            if snapshot is not None:
                await client.send_snapshot(snapshot)

    def _snapshot(self, client: ClientPort, key: str, symbol: str) -> str | None:
        book = client.market().books.get(key)
        if book is None:
            return None
        bids, asks = book.book.top(BOOK_DEPTH)
        checksum = kraken_checksum(bids[:KRAKEN_DEPTH], asks[:KRAKEN_DEPTH])
        return book_push("snapshot", symbol, bids, asks, checksum, None)

    def heartbeat(self, client: ClientPort) -> str | None:
        return '{"channel":"heartbeat"}'

    # ---- frames ----

    def corrupt_checksum(self, text: str) -> str:
        return corrupt_checksum(text)

    def event_times_ms(self, text: str) -> Iterable[int]:
        return (_ms(m[1], m[2]) for m in _TIMESTAMP.finditer(text))

    def restamp(self, text: str, offset_ms: int) -> str:
        return shift_times(text, offset_ms)

    def lap_times(self, text: str) -> Iterable[int]:
        return self.event_times_ms(text)

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[1]) for m in _TRADE_ID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = shift_times(text, dt_ms)
        return _TRADE_ID.sub(lambda m: f'"trade_id":{int(m[1]) + did}', text)


def _reply(method: str, request: dict[str, object], result: object = None) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reply: dict[str, object] = {"method": method, "success": True}
    if result is not None:
        reply["result"] = result
    if "req_id" in request:
        reply["req_id"] = request["req_id"]
    reply["time_in"] = reply["time_out"] = now
    return orjson.dumps(reply).decode()


class _KrakenBuilder(TapeBuilder):
    """The capture's v1 frames, derived into v2 pushes; heartbeats are the server's own."""

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._deriver = V2Deriver()

    def _add(self, frame: RawFrame) -> bool:
        text = self._deriver.text(frame.text)
        if text is None or text == '{"channel":"heartbeat"}':
            return False
        obj = orjson.loads(text)
        data = obj["data"][0]
        key = f"{obj['channel']}:{data['symbol']}"
        entry = self._entry(frame._replace(text=text), key)
        if obj["channel"] == "book":
            entry.book = key
            entry.action = SNAPSHOT if obj["type"] == SNAPSHOT else UPDATE
            # Exact text of each level, as derived (orjson would make the numbers floats).
            entry.bids, entry.asks = _levels_of(text)
            entry.ts_text = str(data.get("timestamp", ""))
            if entry.action == UPDATE:
                self._number(entry)
        return True


_LEVEL = re.compile(r'\{"price":([0-9.]+),"qty":([0-9.]+)\}')


def _levels_of(text: str) -> tuple[list[list[str]], list[list[str]]]:
    bids_at, asks_at = text.index('"bids":'), text.index('"asks":')
    bids = [[m[1], m[2]] for m in _LEVEL.finditer(text, bids_at, asks_at)]
    asks = [[m[1], m[2]] for m in _LEVEL.finditer(text, asks_at)]
    return bids, asks
