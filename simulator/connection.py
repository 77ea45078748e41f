"""One client connection of the simulator: its subscriptions, its place on the tape, and
the ``ClientPort`` a venue's hooks use (send, begin, stream, market, send_snapshot)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from simulator.market import Replica
from simulator.stats import SimStats

if TYPE_CHECKING:
    from simulator.server import Simulator


class Connection:
    """State of one client connection."""

    def __init__(self, sim: Simulator, ws: ServerConnection, conn_id: str) -> None:
        self._sim = sim
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

    # ---- ClientPort ----

    @property
    def stats(self) -> SimStats:
        return self._sim.stats

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    def begin(self) -> None:
        if self.session is None:
            self._sim.begin(self)

    def stream(self) -> None:
        if self.sender is None:
            self.sender = asyncio.create_task(
                self._sim.send_loop(self), name=f"send {self.conn_id}"
            )

    def market(self) -> Replica:
        """The books as of what this client has been sent."""
        if self.replica is None:
            self.replica = Replica(self._sim.tape, self._sim.venue_sim)
        self.replica.advance_to(self.cursor)
        return self.replica

    async def send_snapshot(self, text: str) -> None:
        sim = self._sim
        sim.stats.add(sim.venue_sim.snapshot_counter)
        if sim.laps is not None:
            text = sim.laps.apply(text, self.lap)
        await self.ws.send(sim.stamps.edit(text, self.session, self.lap))

    # ---- timers of the connection ----

    async def disconnect_after(self, seconds: float) -> None:
        """The ``disconnect_every_s`` fault."""
        await asyncio.sleep(seconds)
        self.stats.disconnects += 1
        await self.ws.close(1001, "simulated disconnect")

    async def heartbeats(self, seconds: float) -> None:
        """The venue's ``heartbeat`` text every ``seconds`` (when it has one)."""
        try:
            while True:
                await asyncio.sleep(seconds)
                text = self._sim.venue_sim.heartbeat(self)
                if text is not None:
                    await self.ws.send(text)
        except ConnectionClosed:
            pass
