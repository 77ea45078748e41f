"""The simulator's own order books as of a position on the tape.

A ``Replica`` applies the tape's book messages up to a position (lazily, only
when asked) so the simulator can serve what a real venue would: a Binance REST
depth snapshot consistent with the diffs already sent (``lastUpdateId`` = u of
the last diff applied), or an OKX ``books`` snapshot with a correct checksum for
a (re)subscribing client. How a message changes a book is the venue's rule
(``VenueSim.apply_book``). Dropped or unsent messages still move the market:
a network fault loses frames, not exchange state.
"""

from __future__ import annotations

from simulator.books import BookState
from simulator.tape_types import Tape
from simulator.venues import VenueSim, venue_sim


class Replica:
    """Books of every symbol of a tape as of ``position`` (entries before it applied)."""

    def __init__(self, tape: Tape, venue: VenueSim | None = None) -> None:
        self.tape = tape
        self.position = 0
        self.books: dict[str, BookState] = {}
        self._venue = venue if venue is not None else venue_sim(tape.venue)
        for symbol, seed in tape.seeds.items():
            book = BookState()
            book.replace(seed.bids, seed.asks)
            book.last_id = seed.last_update_id
            self.books[symbol] = book

    def advance_to(self, position: int) -> None:
        entries = self.tape.entries
        apply_book = self._venue.apply_book
        for i in range(self.position, min(position, len(entries))):
            entry = entries[i]
            if entry.book is not None:
                apply_book(self.books, entry)
        self.position = max(self.position, position)
