"""One book of the simulator's own market (see :mod:`simulator.market`)."""

from __future__ import annotations

from operators.book import OrderBook


class BookState:
    """An OrderBook plus what a venue needs beyond (price, size) to serve snapshots."""

    __slots__ = ("book", "counts", "last_id", "ts_text")

    def __init__(self) -> None:
        self.book = OrderBook()
        self.last_id: int | None = None  # update id of the last message applied
        self.counts: dict[str, str] = {}  # price text -> order count text, where sent (OKX)
        self.ts_text = ""  # event time text of the last message applied

    def replace(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.book.replace([(lv[0], lv[1]) for lv in bids], [(lv[0], lv[1]) for lv in asks])

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.book.apply([(lv[0], lv[1]) for lv in bids], [(lv[0], lv[1]) for lv in asks])
