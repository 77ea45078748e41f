"""Order books rebuilt from venue depth messages, with each venue's sync rules.

``OrderBook`` holds the levels; ``BookKeeper`` owns one (venue, symbol) book,
enforces the venue's snapshot/sequence/checksum rules and turns the book into
output dicts: ``book`` (top N), ``bbo`` (origin "book") and ``status``.

Each venue's sequence and checksum rule (from its "how to manage a local order
book" page) is a ``SyncRule`` in ``operators.book_rules``; venues without one:
snapshots replace the book, updates apply once one arrived.
A gap, checksum mismatch or malformed level clears the book and asks the live
source to resync (candlewax.resync); nothing is emitted until a snapshot syncs.

Engine-free and cheap to pickle (Bytewax snapshots the keeper as state).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import InvalidOperation
from typing import Any

from candlewax import resync
from candlewax.schema import make_bbo, make_book, make_status
from candlewax.symbols import to_native
from operators.book_rules import PLAIN, RULES, SyncRule
from operators.book_side import BookSide, Level, is_zero_size, reusable
from operators.book_sides import (
    ALL_CHANGED,
    ASK_BEST,
    ASK_TOP,
    BID_BEST,
    BID_TOP,
    NotRepresentable,
    Side,
    apply_diff,
    is_native,
    new_side,
    to_python,
)
from operators.events import DepthMsg

__all__ = ["BookError", "BookKeeper", "BookSide", "Level", "OrderBook", "is_zero_size"]


class BookError(ValueError):
    """A depth message the book cannot use (the caller dead-letters it)."""


class OrderBook:
    """Bids (high -> low) and asks (low -> high) with the exact text received.

    Sides are native where built (operators.book_sides); a level the native side
    cannot hold exactly moves that side to the pure-Python one before anything
    is applied.

    ``depth`` is the top-N its owner emits: ``apply`` reports whether a diff changed
    a side's best level or its top ``depth`` (book_sides flags), and ``top(depth)``
    hands out copies of lists kept until a change reaches the top ``depth``."""

    __slots__ = ("_native", "_top_asks", "_top_bids", "asks", "bids", "depth")

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.bids: Side = new_side(descending=True)
        self.asks: Side = new_side(descending=False)
        self._sides_changed()

    def _sides_changed(self) -> None:
        self._native = apply_diff is not None and is_native(self.bids) and is_native(self.asks)
        self._top_bids: list[Level] | None = None  # top(depth) of each side, while valid
        self._top_asks: list[Level] | None = None

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> int:
        """Apply one diff (absolute sizes, bids then asks); returns the book_sides flags
        of what changed (ALL_CHANGED where the sides cannot tell)."""
        if self._native:
            try:
                changed: int = apply_diff(self.bids, self.asks, bids, asks, self.depth)  # type: ignore[arg-type]
            except NotRepresentable:  # nothing was applied: side by side, with fallbacks
                return self._apply_sides(bids, asks)
            if changed & BID_TOP:
                self._top_bids = None
            if changed & ASK_TOP:
                self._top_asks = None
            return changed
        return self._apply_sides(bids, asks)

    def _apply_sides(self, bids: Iterable[Level], asks: Iterable[Level]) -> int:
        bids, asks = reusable(bids), reusable(asks)  # a fallback goes over them again
        self._top_bids = self._top_asks = None
        try:
            self.bids.update(bids)
        except NotRepresentable:
            self.bids = to_python(self.bids)
            self._sides_changed()
            self.bids.update(bids)
        try:
            self.asks.update(asks)
        except NotRepresentable:
            self.asks = to_python(self.asks)
            self._sides_changed()
            self.asks.update(asks)
        return ALL_CHANGED

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        # A snapshot starts afresh: a side that fell back may go native again.
        bids, asks = reusable(bids), reusable(asks)
        self.bids = new_side(descending=True)
        self.asks = new_side(descending=False)
        self._sides_changed()
        try:
            self.bids.replace(bids)
        except NotRepresentable:
            self.bids = BookSide(descending=True)
            self._sides_changed()
            self.bids.replace(bids)
        try:
            self.asks.replace(asks)
        except NotRepresentable:
            self.asks = BookSide(descending=False)
            self._sides_changed()
            self.asks.replace(asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._top_bids = self._top_asks = None

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        if n != self.depth or n <= 0:
            return self.bids.top(n), self.asks.top(n)
        bids, asks = self._top_bids, self._top_asks
        if bids is None:
            bids = self._top_bids = self.bids.top(n)
        if asks is None:
            asks = self._top_asks = self.asks.top(n)
        return list(bids), list(asks)  # copies: the records own their lists

    def best_bid(self) -> Level | None:
        return self.bids.best()

    def best_ask(self) -> Level | None:
        return self.asks.best()

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    # Pickle as plain text lists, best first (a native side is rebuilt on restore);
    # the owner sets ``depth`` again (BookKeeper.__setstate__).
    def __getstate__(self) -> tuple[list[Level], list[Level]]:
        return self.bids.top(len(self.bids)), self.asks.top(len(self.asks))

    def __setstate__(self, state: tuple[list[Level], list[Level]]) -> None:
        self.depth = 0
        self.replace(*state)


class BookKeeper:
    """The rebuilt book of one (venue, symbol) and its output.

    ``on_msg`` applies one DepthMsg and returns output dicts; ``on_tick`` flushes
    a pending top-N when ``emit_interval_us`` has passed (``now_us`` on the
    ``ts_ingest`` clock). No book/bbo is emitted while the book is not synced.
    """

    def __init__(
        self,
        venue: str,
        symbol: str,
        depth: int = 10,
        emit_interval_us: int = 0,
        emit_bbo: bool = True,
        max_buffer: int = 10_000,
    ) -> None:
        if depth < 1:
            raise ValueError(f"book depth must be >= 1, got {depth}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        if emit_interval_us < 0:
            raise ValueError(f"emit_interval_us must be >= 0, got {emit_interval_us}")
        self.venue = venue
        self.symbol = symbol
        self.native = to_native(venue, symbol)
        self.depth = depth
        self.emit_interval_us = emit_interval_us
        self.emit_bbo = emit_bbo
        self.sync_rule: SyncRule = RULES.get(venue, PLAIN)
        self.rule = self.sync_rule.name
        self.book = OrderBook(depth)
        self.synced = False
        self.last_id: int | None = None  # venue id of the last applied message / snapshot
        self.await_first = False  # binance-usdm: first diff after a snapshot pending
        self._resync_pending = False
        self._buffer: deque[DepthMsg] = deque(maxlen=max_buffer)
        self._ts = (0, 0)  # (ts_exchange, ts_ingest) of the last applied message
        self._dirty = False  # book changed since the last top-N emission
        self._last_emit_us: int | None = None
        self._last_bbo: tuple[Level | None, Level | None] | None = None
        self._bbo_check = True  # a best level may differ from _last_bbo: compare
        # Plain int counters for metrics.
        self.messages = 0
        self.applied = 0
        self.ignored = 0  # stale diffs, diffs before any snapshot (okx/plain), old snapshots
        self.buffer_dropped = 0
        self.gaps = 0
        self.seq_resets = 0
        self.checksum_checks = 0
        self.checksum_failures = 0
        self.malformed = 0
        self.resync_requests = 0
        self.resyncs = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickles of older versions lack the BBO flag; the book learns its depth again.
        # The rule object is looked up again (pickles keep its name only).
        state = dict(state)
        state.pop("sync_rule", None)
        if "_await_first" in state:
            state["await_first"] = state.pop("_await_first")
        self.__dict__.update(state)
        self.sync_rule = RULES.get(self.venue, PLAIN)
        self._bbo_check = True
        self.book.depth = self.depth

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["sync_rule"]
        return state

    def counters(self) -> dict[str, int]:
        names = (
            "messages applied ignored buffer_dropped gaps seq_resets checksum_checks "
            "checksum_failures malformed resync_requests resyncs"
        )
        return {name: getattr(self, name) for name in names.split()}

    # ---- input ----

    def on_msg(self, msg: DepthMsg) -> list[dict[str, Any]]:
        """Output of one message; BookError (book untouched) for a message it cannot use."""
        if msg.venue != self.venue or msg.symbol != self.symbol:
            raise BookError(
                f"depth message for {msg.venue}:{msg.symbol} sent to the book of "
                f"{self.venue}:{self.symbol}"
            )
        # _check_numbers, inlined for the valid message (it raises the error otherwise).
        first, last, prev, checksum = msg.first_id, msg.last_id, msg.prev_id, msg.checksum
        if not (
            type(msg.ts_exchange) is int
            and type(msg.ts_ingest) is int
            and (first is None or type(first) is int)
            and (last is None or type(last) is int)
            and (prev is None or type(prev) is int)
            and (checksum is None or type(checksum) is int)
        ):
            _check_numbers(msg)
        self.messages += 1
        out: list[dict[str, Any]] = []
        if msg.kind == "snapshot":
            self._on_snapshot(msg, out)
        elif msg.kind == "update":
            self._on_update(msg, out)
        else:
            raise BookError(f"unknown depth message kind {msg.kind!r}")
        if self.synced:
            self._emit(out)
        return out

    def flush(self) -> list[dict[str, Any]]:
        """A pending top-N now, whatever the interval (end of a run)."""
        out: list[dict[str, Any]] = []
        if self.synced and self._dirty:
            self._emit_top(out, self._ts[1])
        return out

    def next_emit(self) -> int | None:
        """``ts_ingest``-clock time at which a pending top-N is due, or None."""
        if not (self.synced and self._dirty) or self._last_emit_us is None:
            return None
        return self._last_emit_us + self.emit_interval_us

    def on_tick(self, now_us: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.synced and self._dirty and self._interval_passed(now_us):
            self._emit_top(out, now_us)
        return out

    def _on_snapshot(self, msg: DepthMsg, out: list[dict[str, Any]]) -> None:
        snap_id = msg.last_id
        rule = self.sync_rule
        buffering = rule.buffers_before_snapshot
        if buffering and snap_id is None:
            raise BookError(f"{self.venue} depth snapshot without lastUpdateId")
        if (
            buffering
            and self.synced
            and self.last_id is not None
            and snap_id is not None
            and snap_id <= self.last_id
        ):
            self.ignored += 1  # the live book is already newer than this snapshot
            return
        if not self.apply_msg(msg, out, replace=True):
            return
        self.synced = True
        self.await_first = True
        rule.after_snapshot(self, msg, out)
        if buffering:
            pending = list(self._buffer)
            self._buffer.clear()
            for buffered in pending:
                self._on_update(buffered, out)  # replays or re-buffers after a gap
        if self.synced and self._resync_pending:
            self._resync_pending = False
            self.resyncs += 1
            out.append(self._status("resynced", msg, f"snapshot id={snap_id}"))

    def _on_update(self, msg: DepthMsg, out: list[dict[str, Any]]) -> None:
        rule = self.sync_rule
        if rule.buffers_before_snapshot:
            if msg.first_id is None or msg.last_id is None:
                raise BookError(f"{self.venue} depth diff without U/u")
            if not self.synced:
                if len(self._buffer) == self._buffer.maxlen:
                    self.buffer_dropped += 1
                self._buffer.append(msg)
                return
        elif not self.synced:
            self.ignored += 1  # in-band snapshot venues: wait for the snapshot
            return
        rule.on_update(self, msg, out)

    # ---- state changes ----

    def apply_msg(self, msg: DepthMsg, out: list[dict[str, Any]], replace: bool = False) -> bool:
        """Apply (or, with ``replace``, install) the message's levels; False when they were
        malformed (the book then lost its sync and asked for a resync)."""
        try:
            if replace:
                self.book.replace(msg.bids, msg.asks)
                changed = ALL_CHANGED
            else:
                changed = self.book.apply(msg.bids, msg.asks)
        except (InvalidOperation, ValueError, TypeError, AttributeError) as exc:
            # The book may be half-updated: treat it like a gap.
            self.malformed += 1
            self.lose_sync(msg, out, "error", f"malformed depth levels: {exc!r}"[:300])
            return False
        self.applied += 1
        if msg.last_id is not None:
            self.last_id = msg.last_id
        self._ts = (msg.ts_exchange, msg.ts_ingest)
        if changed & _BEST:
            self._bbo_check = True
        if replace or msg.bids or msg.asks:
            self._dirty = True  # (even when the change is deeper than the top N)
        return True

    def gap(self, msg: DepthMsg, out: list[dict[str, Any]], detail: str) -> None:
        """A sequence gap before ``msg``: clear the book and ask for a resync."""
        self.gaps += 1
        self.lose_sync(msg, out, "gap_detected", detail)
        if self.sync_rule.buffers_before_snapshot:
            self._buffer.append(msg)  # newer than the book: may follow the next snapshot

    def desync(self, msg: DepthMsg, detail: str) -> list[dict[str, Any]]:
        """Clear the book and ask for a resync (the caller hit an unforeseen failure and
        the book may be half-updated): status records to emit."""
        out: list[dict[str, Any]] = []
        self.malformed += 1
        self.lose_sync(msg, out, "error", detail)
        return out

    def lose_sync(self, msg: DepthMsg, out: list[dict[str, Any]], event: str, detail: str) -> None:
        """Report ``event``, clear the book and ask the live source to resync it."""
        out.append(self._status(event, msg, detail))
        self.book.clear()
        self.synced = False
        self.last_id = None
        self._dirty = False
        self._last_bbo = None
        self._bbo_check = True
        self._resync_pending = True
        self.resync_requests += 1
        heard = resync.request(self.venue, self.native, f"{event}: {detail}")
        note = "" if heard else " (no live source listening; waiting for a snapshot)"
        out.append(self._status("resync_requested", msg, f"{event}{note}"))

    def _status(self, event: str, msg: DepthMsg, detail: str) -> dict[str, Any]:
        return make_status(self.venue, self.symbol, event, msg.ts_ingest, detail)

    # ---- output ----

    def _emit(self, out: list[dict[str, Any]]) -> None:
        if self.emit_bbo and self._bbo_check:
            self._bbo_check = False
            book = self.book
            bbo = (book.bids.best(), book.asks.best())
            if bbo != self._last_bbo:
                self._last_bbo = bbo
                ts_exchange, ts_ingest = self._ts
                out.append(
                    make_bbo(
                        self.venue,
                        self.symbol,
                        ts_exchange,
                        ts_ingest,
                        bbo[0],
                        bbo[1],
                        self.last_id,
                        "book",
                    )
                )
        if self._dirty:
            now = self._ts[1]
            last = self._last_emit_us
            interval = self.emit_interval_us
            if interval == 0 or last is None or now - last >= interval:  # _interval_passed
                self._emit_top(out, now)

    def _interval_passed(self, now_us: int) -> bool:
        last = self._last_emit_us
        interval = self.emit_interval_us
        return interval == 0 or last is None or now_us - last >= interval

    def _emit_top(self, out: list[dict[str, Any]], now_us: int) -> None:
        bids, asks = self.book.top(self.depth)
        ts_exchange, ts_ingest = self._ts
        out.append(
            make_book(
                self.venue,
                self.symbol,
                ts_exchange,
                ts_ingest,
                self.depth,
                bids,
                asks,
                self.last_id,
            )
        )
        self._dirty = False
        self._last_emit_us = now_us


_BEST = BID_BEST | ASK_BEST


_NUMBER_FIELDS = ("first_id", "last_id", "prev_id", "checksum")


def _check_numbers(msg: DepthMsg) -> None:
    """Sequence ids, checksum and times must be ints (ids may be None): anything else would
    raise only later, e.g. when a buffered diff is replayed after the snapshot, half way
    through the replay."""
    for name in _NUMBER_FIELDS:
        value = getattr(msg, name)
        if value is not None and type(value) is not int:
            raise BookError(f"{name} {value!r} is not an integer")
    for name in ("ts_exchange", "ts_ingest"):
        value = getattr(msg, name)
        if type(value) is not int:
            raise BookError(f"{name} {value!r} is not an integer")
