"""Bounded trade de-duplication, one `Deduper` per "venue:symbol" key."""

from __future__ import annotations

from collections import deque
from typing import Any

DEFAULT_CAPACITY = 100_000


class Deduper:
    """Drops trades whose ``trade_id`` was already seen for this key.

    Catches what exchanges really send twice: the tail of trades re-sent after a
    reconnect, and a replayed stretch of a capture. Memory is bounded: it remembers
    the last ``capacity`` distinct ids in arrival order and forgets the oldest first.

    Trade-off: an id older than that window is not recognised, so a duplicate that
    arrives more than ``capacity`` distinct trades after the original passes through.
    Size ``capacity`` above the number of trades one reconnect or replay can repeat.
    """

    __slots__ = ("_order", "_seen", "capacity", "dropped", "unkeyed")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"dedupe capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0  # duplicates filtered out so far
        self.unkeyed = 0  # records passed on without a string trade_id
        # A set answers membership; the deque remembers which id to forget next.
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def seen(self, trade_id: str) -> bool:
        """True (and counted) if ``trade_id`` is a duplicate; otherwise remember it."""
        seen = self._seen
        if trade_id in seen:
            self.dropped += 1
            return True
        order = self._order
        if len(order) >= self.capacity:
            seen.discard(order.popleft())
        order.append(trade_id)
        seen.add(trade_id)
        return False

    def filter(self, trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The trades not seen before (duplicates inside the batch included), in order.

        A record without a string ``trade_id`` cannot be judged: it passes on unremembered
        (counted in ``unkeyed``) rather than being lost or stopping the batch; the OHLCV
        step turns such a trade into a dead letter."""
        kept: list[dict[str, Any]] = []
        keep = kept.append
        # seen(), inlined: this runs once per trade.
        seen = self._seen
        order = self._order
        capacity = self.capacity
        for trade in trades:
            trade_id = trade.get("trade_id") if isinstance(trade, dict) else None
            if type(trade_id) is not str:
                self.unkeyed += 1
                keep(trade)
            elif trade_id in seen:
                self.dropped += 1
            else:
                if len(order) >= capacity:
                    seen.discard(order.popleft())
                order.append(trade_id)
                seen.add(trade_id)
                keep(trade)
        return kept

    # Snapshots store the ids once, in order; the set is rebuilt on restore.
    def __getstate__(self) -> tuple[int, int, list[str]]:
        return self.capacity, self.dropped, list(self._order)

    def __setstate__(self, state: tuple[int, int, list[str]]) -> None:
        self.capacity, self.dropped, ids = state
        self.unkeyed = 0
        self._order = deque(ids)
        self._seen = set(ids)
