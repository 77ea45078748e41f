"""Where each subscription set is on the tape: resume with overlap, laps, REST books.

The replay position is kept per subscription set (the streams a connection had
when it started streaming): a connection that comes back with a known set
resumes where that set got to, ``overlap`` of its frames earlier; with ``loop``
a set that reached the end starts the next lap from the top.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from simulator.market import Replica
from simulator.stats import SimStats
from simulator.tape_types import Entry, Tape
from simulator.venues import VenueSim

if TYPE_CHECKING:
    from simulator.connection import Connection


class Positions:
    def __init__(
        self, tape: Tape, venue: VenueSim, stats: SimStats, *, overlap: int, loop: bool
    ) -> None:
        self.tape = tape
        self.venue = venue
        self.stats = stats
        self.overlap = overlap
        self.loop = loop
        # Venues with REST snapshots serve each book as of the client that last passed it.
        self.rest_books = bool(venue.rest_paths)
        self._lap_of: dict[frozenset[str], int] = {}
        self._positions: dict[frozenset[str], int] = {}
        self._last_sender: dict[str, Connection] = {}  # book -> client
        self._base = Replica(tape, venue)  # position 0: the capture's own snapshots

    def lap_of(self, session: frozenset[str]) -> int:
        return self._lap_of.get(session, 0)

    def place(self, client: Connection) -> None:
        """Place a client on the tape: where its subscription set stopped, minus the overlap."""
        session = frozenset(client.subs)
        client.session = session
        resume = self._positions.get(session, 0)
        entries = self.tape.entries
        if self.loop and resume >= len(entries):
            # The previous lap of this set is over: start the next one from the top.
            self._lap_of[session] = self._lap_of.get(session, 0) + 1
            self._positions[session] = resume = 0
            self.stats.laps += 1
        client.lap = self._lap_of.get(session, 0)
        if client.lap and not resume and self.rest_books:
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

    def passed(self, client: Connection, session: frozenset[str], entry: Entry) -> None:
        """``client`` moved past ``entry`` (sent or not: it was not subscribed)."""
        # A connection still finishing the previous lap moves nothing of the new one.
        if client.lap == self._lap_of.get(session, 0):
            self._positions[session] = max(self._positions.get(session, 0), client.cursor)
            if entry.book is not None and self.rest_books:
                self._last_sender[entry.book] = client

    def market_at(self, book: str) -> tuple[Replica, int]:
        """The books as of the client that last passed ``book``'s updates, and its lap."""
        client = self._last_sender.get(book)
        if client is None:
            return self._base, 0
        return client.market(), client.lap
