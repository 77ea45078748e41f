"""Hyperliquid as the simulator serves it.

``/ws`` with one ``{"method":"subscribe","subscription":{"type","coin"}}`` per coin and
type, acked on ``subscriptionResponse``; ``{"method":"ping"}`` answered by
``{"channel":"pong"}``; an ``l2Book`` subscription gets the current book at once (built
from the books as of the client's position, as the venue sends one on subscribing).
Every ``l2Book`` push is a full snapshot, so a dropped one (``--drop-depth K`` counts
``l2Book`` pushes) leaves no trace a client could detect, and there is no checksum.

The session (the subscription set whose tape position a reconnect resumes) starts once
the client's burst of subscribe frames has ended (:data:`SETTLE_S` without a new one),
because Hyperliquid subscribes one frame per coin and type.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Iterable
from typing import Any

import orjson

from simulator.books import BookState
from simulator.tape_types import SNAPSHOT, Entry, TapeBuilder
from simulator.venues.base import ClientPort, VenueSim, shifted_time, time_as_ms
from sources.frames import RawFrame

PATH = "/ws"
SETTLE_S = 0.1  # quiet time after a subscribe frame before the client is placed on the tape
MAX_LEVELS = 10_000  # per side of a book sent on subscribing (the venue sends 20)
_TYPES = frozenset({"trades", "l2Book", "bbo"})
_DATA_CHANNELS = frozenset({"trades", "l2Book", "bbo"})
# Event times (epoch ms integers) of trades, l2Book and bbo; trade ids.
_TIME = re.compile(r'"time":([0-9]{12,})')
_TID = re.compile(r'"tid":([0-9]+)')


def sub_key(kind: str, coin: str) -> str:
    return f"{kind}:{coin}"


class HyperliquidSim(VenueSim):
    names = ("hyperliquid",)
    ws_paths = (PATH,)
    ws_url_path = PATH
    connect_hint = PATH
    snapshot_counter = "hyperliquid_snapshots"

    def __init__(self, venue: str, options: Any = None) -> None:
        super().__init__(venue, options)
        self._settling: weakref.WeakKeyDictionary[Any, asyncio.TimerHandle] = (
            weakref.WeakKeyDictionary()
        )
        self._started: weakref.WeakSet[Any] = weakref.WeakSet()
        self._starting: set[asyncio.Task[None]] = set()  # the loop keeps weak references only

    def tape_builder(self) -> TapeBuilder:
        return _HyperliquidBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        assert entry.book is not None
        book = books[entry.book] = BookState()  # every push is the whole book
        book.replace(entry.bids, entry.asks)
        book.counts = {level[0]: level[2] for level in (*entry.bids, *entry.asks)}
        book.ts_text = entry.ts_text

    # ---- connections ----

    async def on_text(self, client: ClientPort, text: str) -> None:
        try:
            request = orjson.loads(text)
            method = request["method"]
            if method == "ping":
                client.stats.app_pings += 1
                await client.send('{"channel":"pong"}')
                return
            subscription = request["subscription"]
            kind, coin = subscription["type"], subscription["coin"]
            if method not in ("subscribe", "unsubscribe") or kind not in _TYPES:
                raise ValueError(method)
            if coin.__class__ is not str:
                raise TypeError(coin)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            await client.send(orjson.dumps({"channel": "error", "data": text[:200]}).decode())
            return
        client.stats.subscribe_requests += 1
        key = sub_key(kind, coin)
        if method == "subscribe":
            client.subs[key] = subscription
        else:
            client.subs.pop(key, None)
        ack = {"method": method, "subscription": subscription}
        await client.send(orjson.dumps({"channel": "subscriptionResponse", "data": ack}).decode())
        if method != "subscribe":
            return
        pending = self._settling.get(client)
        if pending is not None:
            pending.cancel()
            del self._settling[client]
        if client in self._started:
            if kind == "l2Book":
                await self._send_book(client, key)
            return
        loop = asyncio.get_running_loop()
        self._settling[client] = loop.call_later(SETTLE_S, self._start_task, client)

    def _start_task(self, client: ClientPort) -> None:
        task = asyncio.ensure_future(self._start(client))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start(self, client: ClientPort) -> None:
        """The subscribe burst is over: place the client, send its books, stream."""
        self._settling.pop(client, None)
        self._started.add(client)
        client.begin()
        for key in list(client.subs):
            if key.startswith("l2Book:"):
                await self._send_book(client, key)
        client.stream()

    async def _send_book(self, client: ClientPort, key: str) -> None:
        book = client.market().books.get(key)
        if book is None:
            return  # nothing of this book passed yet: its first push is a full book anyway
        bids, asks = book.book.top(MAX_LEVELS)
        counts = book.counts

        def levels(side: list[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"n": int(counts.get(p, "1")), "px": p, "sz": s} for p, s in side]

        data = {
            "coin": key.partition(":")[2],
            "levels": [levels(bids), levels(asks)],
            "time": int(book.ts_text),
        }
        await client.send_snapshot(orjson.dumps({"channel": "l2Book", "data": data}).decode())

    # ---- event times and ids ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        return (time_as_ms(m[1]) for m in _TIME.finditer(text))

    def restamp(self, text: str, offset_ms: int) -> str:
        return _TIME.sub(lambda m: f'"time":{shifted_time(m[1], offset_ms)}', text)

    def lap_times(self, text: str) -> Iterable[int]:
        return (int(m[1]) for m in _TIME.finditer(text))

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[1]) for m in _TID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = _TIME.sub(lambda m: f'"time":{int(m[1]) + dt_ms}', text)
        return _TID.sub(lambda m: f'"tid":{int(m[1]) + did}', text)


class _HyperliquidBuilder(TapeBuilder):
    """trades, l2Book and bbo pushes keyed ``<type>:<coin>``; every l2Book push is a
    book snapshot, numbered so ``--drop-depth`` can drop it."""

    def _add(self, frame: RawFrame) -> bool:
        obj = orjson.loads(frame.text)
        channel = obj.get("channel")
        if channel not in _DATA_CHANNELS:
            return False  # acks, pongs, errors
        data = obj["data"]
        coin = data[0]["coin"] if channel == "trades" else data["coin"]
        key = sub_key(channel, coin)
        entry = self._entry(frame, key)
        if channel == "l2Book":
            bids, asks = data["levels"]
            entry.book = key
            entry.action = SNAPSHOT
            entry.bids = [[lvl["px"], lvl["sz"], str(lvl["n"])] for lvl in bids]
            entry.asks = [[lvl["px"], lvl["sz"], str(lvl["n"])] for lvl in asks]
            entry.ts_text = str(data["time"])
            self._number(entry)
        return True
