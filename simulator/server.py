"""The local exchange: replays a capture over WebSocket as Binance or OKX would.

Binance (spot and USD-M): combined streams ``/stream?streams=a/b`` and
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` method frames, WebSocket
ping frames from the server, and the REST depth snapshot
``GET /api/v3/depth?symbol=X&limit=N`` (``/fapi/v1/depth`` too) on the same port.
OKX: ``/ws/v5/public`` with subscribe/unsubscribe ops, text ``ping``/``pong``,
a fresh ``books`` snapshot (correct checksum) on every book subscription, and
optionally synthesized ``seqId``/``prevSeqId``.

Event times are shifted to the present by default (one constant offset, fixed
when the replay starts: :mod:`simulator.restamp`); ``original_times=True``
sends them as recorded.

Each client gets only the streams it subscribed. Replay positions are kept per
subscription set: a client that comes back with the same set resumes where the
last one stopped, ``overlap`` frames earlier (see docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator.faults import Faults, add_okx_seq, corrupt_checksum
from simulator.laps import LapShift
from simulator.market import BINANCE_DEFAULT_LIMIT, BINANCE_MAX_LIMIT, Replica
from simulator.restamp import Restamper, first_event_ms, offset_to
from simulator.tape import (
    BINANCE_VENUES,
    OKX_BOOK_CHANNELS,
    SNAPSHOT,
    Tape,
    binance_key,
    load_tape,
    okx_key,
)
from sources.replay import parse_pace

OKX_PATH = "/ws/v5/public"
BINANCE_WS_PATH = "/stream"
BINANCE_DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth")
_YIELD_EVERY = 32  # at max pace, let the connection's reader run this often


@dataclass
class SimStats:
    """Counters (read them from any thread; they only grow)."""

    tape_frames: int = 0
    connections: int = 0
    resumed: int = 0  # connections that resumed a known subscription set
    frames_sent: int = 0  # data frames written, duplicates included
    duplicated: int = 0
    dropped: int = 0
    corrupted: int = 0
    disconnects: int = 0  # injected
    stalls: int = 0
    finished: int = 0  # connections that reached the end of the tape
    laps: int = 0  # laps started after the first (``loop``), over all subscription sets
    rest_snapshots: int = 0
    okx_snapshots: int = 0
    subscribe_requests: int = 0
    app_pings: int = 0  # OKX text pings answered
    ping_replies: int = 0  # connections on which the client answered our ping frames


class _Client:
    """State of one client connection."""

    def __init__(self, ws: ServerConnection, conn_id: str) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.subs: dict[str, Any] = {}  # subscription key -> stream name / OKX arg
        self.session: frozenset[str] | None = None  # subscription set at start
        self.cursor = 0  # next tape index
        self.lap = 0  # ``loop``: which pass over the tape this connection serves
        self.sent = 0
        self.anchor_ts = 0
        self.anchor_clock = 0.0
        self.replica: Replica | None = None
        self.sender: asyncio.Task[None] | None = None

    def market(self, tape: Tape) -> Replica:
        """The books as of what this client has been sent."""
        if self.replica is None:
            self.replica = Replica(tape)
        self.replica.advance_to(self.cursor)
        return self.replica


class Simulator:
    """A replaying exchange on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        venue: str,
        capture: str | Path | Tape,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pace: str = "max",
        limit: int | None = None,
        overlap: int = 5,
        faults: Faults | None = None,
        okx_seq_ids: bool = False,
        ping_interval: float | None = None,
        original_times: bool = False,
        loop: bool = False,
    ) -> None:
        self.tape = capture if isinstance(capture, Tape) else load_tape(capture, venue, limit)
        if self.tape.venue != venue:
            raise ValueError(f"tape of {self.tape.venue} given to a {venue} simulator")
        self.venue = venue
        self.binance = venue in BINANCE_VENUES
        self.host = host
        self.port = port
        self.speed = parse_pace(pace)
        self.faults = faults or Faults()
        if overlap < 0:
            raise ValueError("overlap must be >= 0")
        every = self.faults.disconnect_every_msgs
        if every is not None and every <= overlap:
            raise ValueError(
                f"disconnect every {every} messages must exceed the overlap ({overlap}), "
                "or a resuming client would never get past the re-sent frames"
            )
        self.overlap = overlap
        self.okx_seq_ids = okx_seq_ids
        # Binance pings every 20 s; OKX expects the client to ping instead.
        self.ping_interval = (
            ping_interval if ping_interval is not None else (20.0 if self.binance else None)
        )
        self.stats = SimStats(tape_frames=len(self.tape.entries))
        # loop: at the end of the tape a connection is closed, and the next one of its
        # subscription set starts the tape again with ids and times moved forward.
        # Re-stamped replays start every lap at "now" (a Restamper per lap), so laps
        # shift ids only; with original times, laps move event times forward too.
        self.laps = LapShift(self.tape, shift_times=original_times) if loop else None
        self._lap_of: dict[frozenset[str], int] = {}
        self._positions: dict[frozenset[str], int] = {}
        self._last_sender: dict[str, _Client] = {}  # Binance symbol -> client
        self._base = Replica(self.tape)  # position 0: the capture's own snapshots
        self._fired: set[int] = set()  # tape indexes whose one-shot fault happened
        self._stalled = False
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self.original_times = original_times
        self._first_event_ms = None if original_times else first_event_ms(self.tape)
        # Lap 0: one offset, fixed when the first client starts. Later laps (``loop``):
        # one per subscription set and lap, fixed when that lap starts; a few kept.
        self._restamps: dict[tuple[frozenset[str] | None, int], Restamper] = {}

    # ---- lifecycle ----

    async def start(self) -> tuple[str, int]:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            max_size=1 << 20,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.host, self.port = host, port
        return host, port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def ping_replies(self) -> int:
        """Connections (open or closed) on which the client answered our ping frames."""
        return self.stats.ping_replies + sum(c.ws.latency > 0 for c in self._clients)

    @property
    def time_offset_ms(self) -> int | None:
        """What is added to every event time (ms); None until the first client streams,
        and always with ``original_times``."""
        first = self._restamps.get((None, 0))
        return None if first is None else first.offset_ms

    def _edit_times(self, text: str, client: _Client) -> str:
        key = (None, 0) if client.lap == 0 else (client.session, client.lap)
        restamp = self._restamps.get(key)
        return text if restamp is None else restamp(text)

    def _restamp_from_now(self, session: frozenset[str] | None, lap: int) -> None:
        """Event times of this lap start now (when its first client starts streaming, not
        when the server started: a paced replay then stamps frames about when sent)."""
        key = (None, 0) if lap == 0 else (session, lap)
        if self._first_event_ms is None or key in self._restamps:
            return
        offset = offset_to(time.time_ns() // 1_000_000, self._first_event_ms)
        self._restamps[key] = Restamper(self.venue, offset)
        if len(self._restamps) > 64:  # bounded over a long soak: the oldest laps go
            for old in sorted(self._restamps, key=lambda k: k[1])[: len(self._restamps) - 64]:
                if old != (None, 0):
                    del self._restamps[old]

    @property
    def ws_url(self) -> str:
        """Base URL for the venue protocol's ``connect_url`` (OKX: the full endpoint)."""
        base = f"ws://{self.host}:{self.port}"
        return base if self.binance else base + OKX_PATH

    @property
    def rest_url(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.binance else None

    # ---- HTTP: REST depth and routing ----

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if self.binance and parts.path in BINANCE_DEPTH_PATHS:
            return self._depth_response(connection, parse_qs(parts.query))
        if parts.path.rstrip("/") == (BINANCE_WS_PATH if self.binance else OKX_PATH):
            return None  # go on with the WebSocket handshake
        hint = "/stream?streams=a/b" if self.binance else OKX_PATH
        return connection.respond(404, f"not served by the {self.venue} simulator; use {hint}\n")

    def _depth_response(
        self, connection: ServerConnection, query: dict[str, list[str]]
    ) -> Response:
        symbol = query.get("symbol", [""])[0].upper()
        try:
            limit = int(query.get("limit", [str(BINANCE_DEFAULT_LIMIT)])[0])
        except ValueError:
            limit = 0
        if not symbol:
            return _json(connection, 400, {"code": -1102, "msg": "Mandatory parameter 'symbol'"})
        if not 1 <= limit <= BINANCE_MAX_LIMIT:
            return _json(connection, 400, {"code": -1100, "msg": "Illegal characters in 'limit'"})
        client = self._last_sender.get(symbol)
        market = client.market(self.tape) if client is not None else self._base
        body = market.binance_depth(symbol, limit)
        if body is None:
            return _json(connection, 400, {"code": -1121, "msg": "Invalid symbol."})
        if self.laps is not None and client is not None:
            body = self.laps.apply(body.decode(), client.lap).encode()
        self.stats.rest_snapshots += 1
        return _json(connection, 200, body)

    # ---- WebSocket ----

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws, f"sim{next(self._ids)}")
        self.stats.connections += 1
        self._clients.add(client)
        timer = None
        if self.faults.disconnect_every_s is not None:
            timer = asyncio.create_task(self._disconnect_later(ws, self.faults.disconnect_every_s))
        try:
            assert ws.request is not None
            if self.binance:
                streams = parse_qs(urlsplit(ws.request.path).query).get("streams", [""])[0]
                for name in filter(None, streams.split("/")):
                    client.subs[binance_key(name)] = name
                if client.subs:
                    self._begin(client)
                    self._start_sender(client)
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                if self.binance:
                    await self._binance_message(client, text)
                else:
                    await self._okx_message(client, text)
        except ConnectionClosed:
            pass
        finally:
            for task in (client.sender, timer):
                if task is not None:
                    task.cancel()
            if ws.latency > 0:
                self.stats.ping_replies += 1
            self._clients.discard(client)

    async def _disconnect_later(self, ws: ServerConnection, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stats.disconnects += 1
        await ws.close(1001, "simulated disconnect")

    async def _binance_message(self, client: _Client, text: str) -> None:
        try:
            request = orjson.loads(text)
            method, params, req_id = request["method"], request.get("params", []), request["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await client.ws.send(_binance_error(None, "Invalid request: not a method frame"))
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await client.ws.send(_binance_error(req_id, "Invalid request: params"))
                return
            self.stats.subscribe_requests += 1
            for name in params:
                if method == "SUBSCRIBE":
                    client.subs[binance_key(name)] = name
                else:
                    client.subs.pop(binance_key(name), None)
            await client.ws.send(orjson.dumps({"result": None, "id": req_id}).decode())
            if client.session is None and client.subs:
                self._begin(client)
                self._start_sender(client)
        elif method == "LIST_SUBSCRIPTIONS":
            names = sorted(client.subs.values())
            await client.ws.send(orjson.dumps({"result": names, "id": req_id}).decode())
        else:
            await client.ws.send(
                _binance_error(req_id, f"Invalid request: unknown method {method!r}")
            )

    async def _okx_message(self, client: _Client, text: str) -> None:
        if text == "ping":
            self.stats.app_pings += 1
            await client.ws.send("pong")
            return
        try:
            request = orjson.loads(text)
            op, args = request["op"], request["args"]
            if op not in ("subscribe", "unsubscribe") or not args:
                raise ValueError(op)
            keys = [okx_key(arg) for arg in args]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            error = {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}"}
            await client.ws.send(orjson.dumps({**error, "connId": client.conn_id}).decode())
            return
        self.stats.subscribe_requests += 1
        for key, arg in zip(keys, args, strict=True):
            if op == "subscribe":
                client.subs[key] = arg
            else:
                client.subs.pop(key, None)
        for arg in args:
            ack = {"event": op, "arg": arg, "connId": client.conn_id}
            await client.ws.send(orjson.dumps(ack).decode())
        if op != "subscribe":
            return
        if client.session is None:
            self._begin(client)
        # Built from the books as of the client's position, sent before any later frame.
        snapshots = [
            client.market(self.tape).okx_snapshot(key, arg, self.okx_seq_ids)
            for key, arg in zip(keys, args, strict=True)
            if arg.get("channel") in OKX_BOOK_CHANNELS
        ]
        for snapshot in filter(None, snapshots):
            self.stats.okx_snapshots += 1
            if self.laps is not None:
                snapshot = self.laps.apply(snapshot, client.lap)
            await client.ws.send(self._edit_times(snapshot, client))
        if client.sender is None:
            self._start_sender(client)

    # ---- replay ----

    def _begin(self, client: _Client) -> None:
        """Place a client on the tape: where its subscription set stopped, minus the overlap."""
        session = frozenset(client.subs)
        client.session = session
        self._restamp_from_now(None, 0)
        resume = self._positions.get(session, 0)
        entries = self.tape.entries
        if self.laps is not None and resume >= len(entries):
            # The previous lap of this set is over: start the next one from the top.
            self._lap_of[session] = self._lap_of.get(session, 0) + 1
            self._positions[session] = resume = 0
            self.stats.laps += 1
        client.lap = self._lap_of.get(session, 0)
        self._restamp_from_now(session, client.lap)
        if client.lap and not resume and self.binance:
            # REST snapshots of this set's books now come from this lap (the seed).
            for entry in entries:
                if entry.book is not None and entry.key in session:
                    self._last_sender[entry.book] = client
        if resume:
            self.stats.resumed += 1
        start, back = resume, self.overlap
        while start > 0 and back > 0:
            start -= 1
            if entries[start].key in session:
                back -= 1
        client.cursor = start
        # Re-sent frames go at once; pacing resumes from the resume point.
        client.anchor_ts = entries[resume].ts if resume < len(entries) else 0
        client.anchor_clock = asyncio.get_running_loop().time()

    def _start_sender(self, client: _Client) -> None:
        client.sender = asyncio.create_task(self._send_loop(client), name=f"send {client.conn_id}")

    async def _send_loop(self, client: _Client) -> None:
        entries = self.tape.entries
        faults = self.faults
        stats = self.stats
        loop = asyncio.get_running_loop()
        ws = client.ws
        session = client.session
        assert session is not None
        since_yield = 0
        try:
            while client.cursor < len(entries):
                entry = entries[client.cursor]
                stall_after = faults.stall_after
                if (
                    stall_after is not None
                    and not self._stalled
                    and stats.frames_sent >= stall_after
                ):
                    self._stalled = True
                    stats.stalls += 1
                    await asyncio.sleep(faults.stall_seconds)
                    client.anchor_clock += faults.stall_seconds
                if self.speed is not None:
                    due = client.anchor_clock + (entry.ts - client.anchor_ts) / 1e6 / self.speed
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        since_yield = 0
                # From here to the send there is no await: an OKX snapshot built for
                # this client between two frames matches the frames already sent.
                client.cursor += 1
                # A connection still finishing the previous lap moves nothing of the new one.
                if client.lap == self._lap_of.get(session, 0):
                    self._positions[session] = max(self._positions.get(session, 0), client.cursor)
                    if entry.book is not None and self.binance:
                        self._last_sender[entry.book] = client
                if entry.key not in client.subs:
                    continue
                text = entry.text
                if entry.book is not None and not self.binance and self.okx_seq_ids:
                    assert entry.prev_id is not None and entry.last_id is not None
                    text = add_okx_seq(text, entry.prev_id, entry.last_id)
                if entry.depth_no and entry.index not in self._fired:
                    if entry.depth_no in faults.drop_depth:
                        self._fired.add(entry.index)
                        stats.dropped += 1
                        continue
                    if entry.depth_no in faults.corrupt_checksum and entry.action != SNAPSHOT:
                        self._fired.add(entry.index)
                        stats.corrupted += 1
                        text = corrupt_checksum(text)
                if self.laps is not None:
                    text = self.laps.apply(text, client.lap)
                text = self._edit_times(text, client)
                await ws.send(text)
                if await self._after_send(client, text):
                    return
                since_yield += 1
                if since_yield >= _YIELD_EVERY:
                    since_yield = 0
                    await asyncio.sleep(0)
            stats.finished += 1
            if self.laps is not None:
                await ws.close(1001, "end of capture lap: reconnect for the next one")
        except ConnectionClosed:
            pass

    async def _after_send(self, client: _Client, text: str) -> bool:
        """Count, duplicate, maybe disconnect; True when the connection was closed."""
        faults = self.faults
        stats = self.stats
        client.sent += 1
        stats.frames_sent += 1
        every = faults.duplicate_every
        if every is not None and client.sent % every == 0:
            await client.ws.send(text)
            stats.duplicated += 1
            stats.frames_sent += 1
        limit = faults.disconnect_every_msgs
        if limit is not None and client.sent >= limit:
            stats.disconnects += 1
            await client.ws.close(1001, "simulated disconnect")
            return True
        return False


def _json(connection: ServerConnection, status: int, body: bytes | dict[str, Any]) -> Response:
    text = (body if isinstance(body, bytes) else orjson.dumps(body)).decode()
    response = connection.respond(status, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json;charset=UTF-8"
    return response


def _binance_error(req_id: Any, msg: str) -> str:
    return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": req_id}).decode()
