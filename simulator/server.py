"""The local exchange: replays a capture over WebSocket as the venue would.

The server is venue-neutral: connections, pacing, overlap and resume per
subscription set (:mod:`simulator.positions`), faults, laps, re-stamping and
counters. What the venue's protocol says (paths, subscribe frames, keep-alive,
REST routes, in-band snapshots, checksum and sequence-id edits, time and id
fields) comes from its ``VenueSim`` (:mod:`simulator.venues`): Binance spot and
USD-M, OKX.

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
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator.connection import Connection
from simulator.faults import Faults
from simulator.laps import LapShift
from simulator.positions import Positions
from simulator.restamp import LapStamps
from simulator.stats import SimStats
from simulator.tape import SNAPSHOT, Tape, load_tape
from simulator.venues import venue_sim
from sources.replay import parse_pace

__all__ = ["SimStats", "Simulator"]

_YIELD_EVERY = 32  # at max pace, let the connection's reader run this often


class Simulator:
    """A replaying exchange on ``host:port`` (port 0 picks a free one).

    ``venue_options`` are the venue module's own (its CLI flags); ``okx_seq_ids``
    is one of them, kept as an argument for existing callers."""

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
        venue_options: Mapping[str, object] | None = None,
    ) -> None:
        self.tape = capture if isinstance(capture, Tape) else load_tape(capture, venue, limit)
        if self.tape.venue != venue:
            raise ValueError(f"tape of {self.tape.venue} given to a {venue} simulator")
        self.venue = venue
        options = dict(venue_options or {})
        if okx_seq_ids:
            options["okx_seq_ids"] = True
        self.venue_sim = venue_sim(venue, options)
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
        self.ping_interval = (
            ping_interval if ping_interval is not None else self.venue_sim.ping_interval
        )
        self.stats = SimStats(tape_frames=len(self.tape.entries))
        # loop: at the end of the tape a connection is closed, and the next one of its
        # subscription set starts the tape again with ids and times moved forward.
        # Re-stamped replays start every lap at "now" (a Restamper per lap), so laps
        # shift ids only; with original times, laps move event times forward too.
        self.laps = (
            LapShift(self.tape, shift_times=original_times, venue=self.venue_sim) if loop else None
        )
        self.positions = Positions(
            self.tape, self.venue_sim, self.stats, overlap=overlap, loop=loop
        )
        self._fired: set[int] = set()  # tape indexes whose one-shot fault happened
        self._stalled = False
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._clients: set[Connection] = set()
        self.original_times = original_times
        self.stamps = LapStamps(self.tape, self.venue_sim, original_times)

    @property
    def okx_seq_ids(self) -> bool:
        return bool(self.venue_sim.options.get("okx_seq_ids"))

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
        return self.stamps.first_offset_ms

    @property
    def ws_url(self) -> str:
        """Base URL for the venue protocol's ``connect_url`` (OKX: the full endpoint)."""
        return f"ws://{self.host}:{self.port}{self.venue_sim.ws_url_path}"

    @property
    def rest_url(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.venue_sim.rest_paths else None

    # ---- HTTP: REST routes and WebSocket paths ----

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        venue = self.venue_sim
        if parts.path in venue.rest_paths:
            reply = venue.rest(parts.path, parse_qs(parts.query), self.positions.market_at)
            body = reply.body
            if reply.status == 200:
                if self.laps is not None:
                    body = self.laps.apply(body, reply.lap)
                self.stats.rest_snapshots += 1
            return _json(connection, reply.status, body)
        if parts.path.rstrip("/") in venue.ws_paths:
            return None  # go on with the WebSocket handshake
        hint = venue.connect_hint
        return connection.respond(404, f"not served by the {self.venue} simulator; use {hint}\n")

    # ---- WebSocket ----

    async def _handle(self, ws: ServerConnection) -> None:
        client = Connection(self, ws, f"sim{next(self._ids)}")
        self.stats.connections += 1
        self._clients.add(client)
        venue = self.venue_sim
        tasks = []
        if self.faults.disconnect_every_s is not None:
            tasks.append(
                asyncio.create_task(client.disconnect_after(self.faults.disconnect_every_s))
            )
        if venue.heartbeat_interval is not None:
            tasks.append(asyncio.create_task(client.heartbeats(venue.heartbeat_interval)))
        try:
            assert ws.request is not None
            target = urlsplit(ws.request.path)
            venue.on_connect(client, target.path.rstrip("/"), parse_qs(target.query))
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await venue.on_text(client, text)
        except ConnectionClosed:
            pass
        finally:
            for task in (client.sender, *tasks):
                if task is not None:
                    task.cancel()
            if ws.latency > 0:
                self.stats.ping_replies += 1
            self._clients.discard(client)

    # ---- replay ----

    def begin(self, client: Connection) -> None:
        """Place a client on the tape (``Positions.place``) and start its lap's clock."""
        self.stamps.start(None, 0)
        self.positions.place(client)
        self.stamps.start(client.session, client.lap)

    async def send_loop(self, client: Connection) -> None:
        entries = self.tape.entries
        faults = self.faults
        stats = self.stats
        venue = self.venue_sim
        positions = self.positions
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
                # From here to the send there is no await: an in-band snapshot built for
                # this client between two frames matches the frames already sent.
                client.cursor += 1
                positions.passed(client, session, entry)
                if entry.key not in client.subs:
                    continue
                text = venue.outgoing(client, entry, entry.text)
                if entry.depth_no and entry.index not in self._fired:
                    if entry.depth_no in faults.drop_depth:
                        self._fired.add(entry.index)
                        stats.dropped += 1
                        continue
                    if entry.depth_no in faults.corrupt_checksum and entry.action != SNAPSHOT:
                        self._fired.add(entry.index)
                        stats.corrupted += 1
                        text = venue.corrupt_checksum(text)
                if self.laps is not None:
                    text = self.laps.apply(text, client.lap)
                text = self.stamps.edit(text, session, client.lap)
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

    async def _after_send(self, client: Connection, text: str) -> bool:
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


def _json(connection: ServerConnection, status: int, text: str) -> Response:
    response = connection.respond(status, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json;charset=UTF-8"
    return response
