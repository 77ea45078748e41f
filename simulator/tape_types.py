"""What a tape is made of: entries (sendable frames), seeds (books found in the capture),
and the base of the per-venue builders that turn capture frames into entries.

Venue modules (``simulator.venues.*``) build on these; :mod:`simulator.tape` loads a
capture through the venue's builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from sources.frames import RawFrame

UPDATE, SNAPSHOT = "update", "snapshot"


@dataclass(slots=True)
class Entry:
    """One sendable frame; ``book`` is set for order-book messages only."""

    index: int
    ts: int  # recorded receive time, microseconds
    key: str  # subscription key: the client gets the frame when it subscribed this key
    text: str
    book: str | None = None  # the book it changes (Binance: native symbol; OKX: sub key)
    action: str = UPDATE  # SNAPSHOT: replaces the book (in-band snapshot)
    depth_no: int = 0  # 1-based number among the tape's book updates, 0 otherwise
    bids: list[list[str]] = field(default_factory=list)
    asks: list[list[str]] = field(default_factory=list)
    first_id: int | None = None  # first update id it covers (Binance U)
    last_id: int | None = None  # last update id (Binance u / synthesized OKX seqId)
    prev_id: int | None = None  # the id it follows (synthesized OKX prevSeqId)
    ts_text: str = ""  # event time text as sent (OKX data ts), for built snapshots


@dataclass
class Seed:
    """A book snapshot found in the capture (Binance REST depth): where the venue's
    own books start; not sent on the WebSocket."""

    last_update_id: int
    bids: list[list[str]]
    asks: list[list[str]]


@dataclass
class Tape:
    venue: str
    entries: list[Entry]
    seeds: dict[str, Seed]  # book (Binance native symbol) -> first snapshot in the capture
    skipped: int = 0  # control frames and frames the simulator cannot classify

    @property
    def depth_updates(self) -> int:
        return sum(1 for e in self.entries if e.depth_no)

    def keys(self) -> set[str]:
        return {e.key for e in self.entries}


class TapeBuilder:
    """Turns one venue's capture frames into a tape; a venue overrides :meth:`_add`.

    A frame ``_add`` cannot classify (returns False) or cannot parse (raises one of
    the errors caught in :meth:`add`) is counted as skipped, not sent."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.entries: list[Entry] = []
        self.seeds: dict[str, Seed] = {}
        self.skipped = 0
        self.depth_count = 0

    def add(self, frame: RawFrame) -> None:
        try:
            if not self._add(frame):
                self.skipped += 1
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, IndexError):
            self.skipped += 1

    def _add(self, frame: RawFrame) -> bool:
        """Add entries/seeds for ``frame``; False when it is not data (an ack, a pong)."""
        raise NotImplementedError

    def _entry(self, frame: RawFrame, key: str) -> Entry:
        entry = Entry(len(self.entries), frame.ts_ingest, key, frame.text)
        self.entries.append(entry)
        return entry

    def _number(self, entry: Entry) -> None:
        """Count ``entry`` as a book update: the numbers faults (drop, corrupt) name."""
        self.depth_count += 1
        entry.depth_no = self.depth_count

    def finish(self) -> Tape:
        return Tape(self.venue, self.entries, self.seeds, self.skipped)
