"""What a venue module tells the simulator: ``VenueSim`` and the ``ClientPort`` it talks to.

The generic server (:mod:`simulator.server`) owns connections, pacing, overlap and
resume per subscription set, faults, laps, re-stamping and counters; it asks the
connection's ``VenueSim`` for everything that differs between venues. A venue
module subclasses ``VenueSim``, fills in the class attributes and overrides the
hooks its protocol needs (see docs/simulator.md, "Adding a venue").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from simulator.books import BookState
from simulator.stats import SimStats
from simulator.tape_types import SNAPSHOT, Entry, TapeBuilder

if TYPE_CHECKING:
    from simulator.market import Replica

MICROS_DIGITS = 15  # 1e14 ms is the year 5138: longer epoch values are microseconds


def shifted_time(digits: str, offset_ms: int) -> int:
    """An epoch time (ms, or µs from 15 digits on) moved by ``offset_ms``."""
    micros = len(digits) >= MICROS_DIGITS
    return int(digits) + (offset_ms * 1000 if micros else offset_ms)


def time_as_ms(digits: str) -> int:
    return int(digits) // 1000 if len(digits) >= MICROS_DIGITS else int(digits)


class ClientPort(Protocol):
    """One client connection, as a venue's hooks see it."""

    @property
    def conn_id(self) -> str: ...

    @property
    def subs(self) -> dict[str, Any]:
        """Subscription key (``Entry.key``) -> what the client named (stream, arg)."""
        ...

    @property
    def stats(self) -> SimStats: ...

    async def send(self, text: str) -> None:
        """Send a reply (ack, pong, error) as is."""
        ...

    def begin(self) -> None:
        """Fix the subscription set and place the client on the tape (where that set
        stopped, minus the overlap); no-op once placed."""
        ...

    def stream(self) -> None:
        """Start sending tape frames (after :meth:`begin`); no-op once started."""
        ...

    def market(self) -> Replica:
        """The venue's books as of what this client has been sent (in-band snapshots)."""
        ...

    async def send_snapshot(self, text: str) -> None:
        """Send a snapshot built from :meth:`market`: ids moved to the client's lap,
        times re-stamped, counted in ``stats`` under ``VenueSim.snapshot_counter``."""
        ...


# REST: symbol -> (books as of the client that last passed that book's updates, its lap)
MarketAt: TypeAlias = "Callable[[str], tuple[Replica, int]]"


@dataclass(frozen=True)
class RestReply:
    status: int
    body: str  # JSON text
    lap: int = 0  # the lap whose ids the body's ids get (``loop``); a 200 only


class VenueSim:
    """Everything venue-specific of the simulator; one instance per simulator (and per
    tape / replica that needs the venue's rules). Defaults suit a venue with in-band
    books, client-side keep-alive and no REST."""

    names: tuple[str, ...] = ()  # venue names (CLI --venue) this module serves
    ws_paths: tuple[str, ...] = ()  # WebSocket paths accepted (no trailing slash)
    ws_url_path: str = ""  # appended to ws://host:port for ``Simulator.ws_url``
    connect_hint: str = ""  # what a 404 tells to connect to
    ping_interval: float | None = None  # default seconds between WebSocket ping frames
    rest_paths: tuple[str, ...] = ()  # HTTP paths answered by :meth:`rest`
    snapshot_counter = "snapshots"  # stats counter of in-band snapshots sent
    heartbeat_interval: float | None = None  # seconds between :meth:`heartbeat` texts

    def __init__(self, venue: str, options: Mapping[str, object] | None = None) -> None:
        if venue not in self.names:
            raise ValueError(f"{type(self).__name__} serves {self.names}, not {venue!r}")
        self.venue = venue
        self.options = dict(options or {})

    # ---- command line: venue flags of ``candlewax simulate`` ----

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this venue's own flags."""

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, object]:
        """Venue options (``Simulator(venue_options=...)``) from this venue's flags."""
        return {}

    # ---- tape and books ----

    def tape_builder(self) -> TapeBuilder:
        raise NotImplementedError

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        """Apply a book entry (``entry.book`` set) to the simulator's books."""
        raise NotImplementedError

    # ---- connections ----

    def on_connect(self, client: ClientPort, path: str, query: dict[str, list[str]]) -> None:
        """A WebSocket opened on ``path``: streams named in the URL, if the venue has that."""

    async def on_text(self, client: ClientPort, text: str) -> None:
        """A text frame from the client: subscribe, unsubscribe, ping, list..."""
        raise NotImplementedError

    def heartbeat(self, client: ClientPort) -> str | None:
        """A text sent every ``heartbeat_interval`` s on each connection (None: skip)."""
        return None

    def rest(self, path: str, query: dict[str, list[str]], market_at: MarketAt) -> RestReply:
        """Answer a GET on one of ``rest_paths``."""
        return RestReply(404, '{"msg":"not found"}')

    # ---- frames: edits and faults ----

    def outgoing(self, client: ClientPort, entry: Entry, text: str) -> str:
        """A tape frame about to be sent (before faults): the venue's own edits."""
        return text

    def corrupt_checksum(self, text: str) -> str:
        """The frame with a wrong checksum (``--corrupt-checksum``); as is without one."""
        return text

    # ---- event times (simulator.restamp) and ids (simulator.laps) ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        """The frame's event times (ms) that the replay's first moment is taken from."""
        raise NotImplementedError

    def restamp(self, text: str, offset_ms: int) -> str:
        """The frame with every event time field moved by ``offset_ms``."""
        raise NotImplementedError

    def lap_times(self, text: str) -> Iterable[int]:
        """Time values that :meth:`lap_shift` moves (their span sets the time stride)."""
        raise NotImplementedError

    def lap_ids(self, text: str) -> Iterable[int]:
        """Id values that :meth:`lap_shift` moves (their span sets the id stride)."""
        raise NotImplementedError

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        """The frame with times + ``dt_ms`` and trade / book ids + ``did`` (``loop``)."""
        raise NotImplementedError


def apply_in_band(books: dict[str, BookState], entry: Entry) -> BookState | None:
    """``VenueSim.apply_book`` of venues with in-band snapshots: a snapshot starts the
    book afresh, an update applies to it; None for an update before the first snapshot
    (it cannot be placed). Keeps the entry's id and time text on the book."""
    assert entry.book is not None
    book = books.get(entry.book)
    if entry.action == SNAPSHOT:
        book = books[entry.book] = BookState()
        book.replace(entry.bids, entry.asks)
    elif book is None:
        return None
    else:
        book.apply(entry.bids, entry.asks)
    book.last_id = entry.last_id
    book.ts_text = entry.ts_text
    return book
