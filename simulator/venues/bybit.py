"""Bybit v5 public (spot and linear) as the simulator serves it.

``/v5/public/spot`` and ``/v5/public/linear`` on one server, each serving the frames the
capture received on that market's connection (the connect record's URL, carried in the
frame's ``conn_id``). ``subscribe``/``unsubscribe`` ops acked as Bybit does, ``{"op":"ping"}``
answered with the ``ret_msg":"pong"`` reply, and a fresh ``orderbook`` snapshot (the
book as of the client's place on the tape, its last ``u``) on every book subscription,
so a resubscribe after a gap resyncs that symbol. A dropped delta leaves a ``u`` gap.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import orjson

from simulator.books import BookState
from simulator.tape_types import SNAPSHOT, UPDATE, Entry, TapeBuilder
from simulator.venues.base import ClientPort, VenueSim, apply_in_band, shifted_time, time_as_ms
from sources.bybit import LINEAR, MARKETS, market_of
from sources.frames import RawFrame

PATHS = {f"/v5/public/{m}": m for m in MARKETS}
MAX_DEPTH = 200  # levels per side of a built snapshot (orderbook.200)

# Re-stamping: push ts / cts, trade T, kline start/end/timestamp (integers, ms).
_TIME_FIELDS = re.compile(r'"(ts|cts|T|start|end|timestamp)":([0-9]{12,})')
_TEXT_TIMES = re.compile(r'"(nextFundingTime)":"([0-9]{12,})"')
_LAP_TIME = re.compile(r'"(ts|cts|T)":([0-9]{12,})')
# Laps: book u and cross seq (integers), trade ids (numeric on spot, UUIDs on linear).
_LAP_ID = re.compile(r'"(u|seq)":([0-9]+)|"i":"([0-9]+)"')
_UUID_ID = re.compile(r'"i":"([0-9a-f-]{36})"')


def sub_key(market: str, topic: str) -> str:
    """Subscription key: the market and the exact topic (``linear|orderbook.200.BTCUSDT``)."""
    return f"{market}|{topic}"


SETTLE_S = 0.1  # quiet time after a subscribe request before the client's stream starts


class BybitSim(VenueSim):
    names = ("bybit",)
    ws_paths = tuple(PATHS)
    ws_url_path = f"/v5/public/{LINEAR}"
    connect_hint = " or ".join(PATHS)
    snapshot_counter = "bybit_snapshots"

    def __init__(self, venue: str, options: dict[str, object] | None = None) -> None:
        super().__init__(venue, options)
        self._markets: dict[str, str] = {}  # client conn_id -> market of its path
        # A client subscribes in batches of 10 args, back to back: its stream starts once
        # they stop coming (SETTLE_S), so no topic of the burst is joined late (which would
        # make its book a snapshot built mid-tape instead of the capture's own).
        self._settling: dict[str, asyncio.TimerHandle] = {}
        self._started: set[str] = set()
        self._starting: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly

    def tape_builder(self) -> TapeBuilder:
        return _BybitBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        apply_in_band(books, entry)

    # ---- connections ----

    def on_connect(self, client: ClientPort, path: str, query: dict[str, list[str]]) -> None:
        self._markets[client.conn_id] = PATHS[path.rstrip("/")]

    async def on_text(self, client: ClientPort, text: str) -> None:
        market = self._markets.get(client.conn_id, LINEAR)
        try:
            request = orjson.loads(text)
            op = request["op"]
            req_id = request.get("req_id", "")
            if op == "ping":
                client.stats.app_pings += 1
                pong = {"success": True, "ret_msg": "pong", "conn_id": client.conn_id}
                await client.send(orjson.dumps({**pong, "req_id": req_id, "op": op}).decode())
                return
            args = request["args"]
            if op not in ("subscribe", "unsubscribe") or not args:
                raise ValueError(op)
            if not all(isinstance(a, str) for a in args):
                raise TypeError(args)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            error = {"success": False, "ret_msg": f"Invalid request: {text[:200]}"}
            await client.send(orjson.dumps({**error, "conn_id": client.conn_id}).decode())
            return
        client.stats.subscribe_requests += 1
        for topic in args:
            if op == "subscribe":
                client.subs[sub_key(market, topic)] = topic
            else:
                client.subs.pop(sub_key(market, topic), None)
        ack = {"success": True, "ret_msg": "", "conn_id": client.conn_id, "req_id": req_id}
        await client.send(orjson.dumps({**ack, "op": op}).decode())
        if op != "subscribe":
            return
        if client.conn_id in self._started:  # a resubscribe: its books at once
            await self._send_snapshots(client, market, args)
            return
        pending = self._settling.pop(client.conn_id, None)
        if pending is not None:
            pending.cancel()
        loop = asyncio.get_running_loop()
        self._settling[client.conn_id] = loop.call_later(SETTLE_S, self._start_task, client)

    def _start_task(self, client: ClientPort) -> None:
        task = asyncio.ensure_future(self._start(client))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start(self, client: ClientPort) -> None:
        """The subscribe burst is over: place the client, send its books, stream."""
        self._settling.pop(client.conn_id, None)
        self._started.add(client.conn_id)
        client.begin()
        market = self._markets.get(client.conn_id, LINEAR)
        await self._send_snapshots(client, market, list(client.subs.values()))
        client.stream()

    async def _send_snapshots(self, client: ClientPort, market: str, topics: list[str]) -> None:
        for topic in topics:
            if topic.startswith("orderbook."):
                snapshot = self._snapshot(client, market, topic)
                if snapshot is not None:
                    await client.send_snapshot(snapshot)

    def _snapshot(self, client: ClientPort, market: str, topic: str) -> str | None:
        """An orderbook snapshot push for a subscribing client, None before the book is known."""
        book = client.market().books.get(sub_key(market, topic))
        if book is None or book.last_id is None:
            return None
        bids, asks = book.book.top(MAX_DEPTH)
        native = topic.rpartition(".")[2]
        data = {"s": native, "b": bids, "a": asks, "u": book.last_id, "seq": 0}
        ts = int(book.ts_text)
        push = {"topic": topic, "type": SNAPSHOT, "ts": ts, "data": data, "cts": ts}
        return orjson.dumps(push).decode()

    # ---- event times and ids ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        return (time_as_ms(m[2]) for m in _TIME_FIELDS.finditer(text) if m[1] == "ts")

    def restamp(self, text: str, offset_ms: int) -> str:
        text = _TIME_FIELDS.sub(lambda m: f'"{m[1]}":{shifted_time(m[2], offset_ms)}', text)
        return _TEXT_TIMES.sub(lambda m: f'"{m[1]}":"{shifted_time(m[2], offset_ms)}"', text)

    def lap_times(self, text: str) -> Iterable[int]:
        return (int(m[2]) for m in _LAP_TIME.finditer(text))

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[2] or m[3]) for m in _LAP_ID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = _LAP_TIME.sub(lambda m: f'"{m[1]}":{int(m[2]) + dt_ms}', text)

        def shift_id(m: re.Match[str]) -> str:
            if m[1] is not None:
                return f'"{m[1]}":{int(m[2]) + did}'
            return f'"i":"{int(m[3]) + did}"'

        # A UUID trade id cannot be added to: the lap number makes it new.
        text = _UUID_ID.sub(lambda m: f'"i":"{m[1]}+{did}"', text)
        return _LAP_ID.sub(shift_id, text)


class _BybitBuilder(TapeBuilder):
    """Pushes keyed by (market, topic); orderbook pushes change the book of that key."""

    def _add(self, frame: RawFrame) -> bool:
        obj = orjson.loads(frame.text)
        topic = obj.get("topic") if isinstance(obj, dict) else None
        if not isinstance(topic, str):
            return False  # acks, pongs
        key = sub_key(market_of(frame.conn_id), topic)
        entry = self._entry(frame, key)
        if topic.startswith("orderbook."):
            data = obj["data"]
            entry.book = key
            entry.action = SNAPSHOT if obj["type"] == SNAPSHOT else UPDATE
            entry.bids, entry.asks = data["b"], data["a"]
            entry.last_id = int(data["u"])
            entry.ts_text = str(obj["ts"])
            if entry.action == UPDATE:
                self._number(entry)
        return True
