"""The simulator's own order books as of a position on the tape.

A ``Replica`` applies the tape's book messages up to a position (lazily, only
when asked) so the simulator can serve what a real venue would: a Binance REST
depth snapshot consistent with the diffs already sent (``lastUpdateId`` = u of
the last diff applied), or an OKX ``books`` snapshot with a correct checksum for
a (re)subscribing client. Dropped or unsent messages still move the market:
a network fault loses frames, not exchange state.
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.book import OrderBook
from operators.checksum import OKX_DEPTH, okx_checksum
from simulator.tape import SNAPSHOT, Entry, Tape

BINANCE_DEFAULT_LIMIT = 100
BINANCE_MAX_LIMIT = 5000
OKX_MAX_DEPTH = 400  # levels per side of a books / books-l2-tbt snapshot


class _Book:
    """An OrderBook plus what the venue needs beyond (price, size)."""

    __slots__ = ("book", "counts", "last_id", "ts_text")

    def __init__(self) -> None:
        self.book = OrderBook()
        self.last_id: int | None = None
        self.counts: dict[str, str] = {}  # OKX price text -> order count text
        self.ts_text = ""

    def replace(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.book.replace([(lv[0], lv[1]) for lv in bids], [(lv[0], lv[1]) for lv in asks])

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.book.apply([(lv[0], lv[1]) for lv in bids], [(lv[0], lv[1]) for lv in asks])


class Replica:
    """Books of every symbol of a tape as of ``position`` (entries before it applied)."""

    def __init__(self, tape: Tape) -> None:
        self.tape = tape
        self.position = 0
        self.books: dict[str, _Book] = {}
        self._okx = tape.venue == "okx"
        for symbol, seed in tape.seeds.items():
            book = _Book()
            book.replace(seed.bids, seed.asks)
            book.last_id = seed.last_update_id
            self.books[symbol] = book

    def advance_to(self, position: int) -> None:
        entries = self.tape.entries
        for i in range(self.position, min(position, len(entries))):
            entry = entries[i]
            if entry.book is not None:
                self._apply(entry)
        self.position = max(self.position, position)

    def _apply(self, entry: Entry) -> None:
        assert entry.book is not None
        if self._okx:
            self._apply_okx(entry)
            return
        book = self.books.get(entry.book)
        if book is None or book.last_id is None:
            return  # no REST snapshot in the capture for this symbol: nothing to serve
        assert entry.last_id is not None
        if entry.last_id > book.last_id:  # diffs the snapshot already contains are skipped
            book.apply(entry.bids, entry.asks)
            book.last_id = entry.last_id

    def _apply_okx(self, entry: Entry) -> None:
        assert entry.book is not None
        book = self.books.get(entry.book)
        if entry.action == SNAPSHOT:
            book = self.books[entry.book] = _Book()
            book.replace(entry.bids, entry.asks)
        elif book is None:
            return  # an update before the first snapshot cannot be placed
        else:
            book.apply(entry.bids, entry.asks)
        counts = book.counts
        for level in (*entry.bids, *entry.asks):
            if len(level) > 3:
                counts[level[0]] = level[3]
        book.last_id = entry.last_id
        book.ts_text = entry.ts_text

    # ---- what the venue serves ----

    def binance_depth(self, symbol: str, limit: int) -> bytes | None:
        """Body of GET /api/v3/depth for ``symbol``, None if the capture has no snapshot."""
        book = self.books.get(symbol.upper())
        if book is None or book.last_id is None:
            return None
        bids, asks = book.book.top(limit)
        body = {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}
        return orjson.dumps(body)

    def okx_snapshot(self, key: str, arg: dict[str, Any], with_seq: bool) -> str | None:
        """A ``books`` snapshot push for a subscribing client, None before the book is known."""
        book = self.books.get(key)
        if book is None:
            return None
        bids, asks = book.book.top(50 if arg.get("channel") == "books50-l2-tbt" else OKX_MAX_DEPTH)
        counts = book.counts
        data: dict[str, Any] = {
            "asks": [[p, s, "0", counts.get(p, "1")] for p, s in asks],
            "bids": [[p, s, "0", counts.get(p, "1")] for p, s in bids],
            "ts": book.ts_text,
            "checksum": okx_checksum(bids[:OKX_DEPTH], asks[:OKX_DEPTH]),
        }
        if with_seq:
            data["prevSeqId"] = -1
            data["seqId"] = book.last_id
        push = {"arg": arg, "action": SNAPSHOT, "data": [data]}
        return orjson.dumps(push).decode()
