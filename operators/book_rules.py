"""Each venue's book sync rule: how its depth messages chain, one object per venue.

A ``BookKeeper`` handles what every venue shares (snapshots replace the book, nothing
is emitted while unsynced, a gap or checksum mismatch clears the book and asks the live
source to resync) and asks its venue's ``SyncRule`` for the rest:

- ``buffers_before_snapshot``: diffs arrive before the REST snapshot that syncs them
  (Binance), so they are kept until it comes, and an update must carry first/last ids;
  otherwise (in-band snapshots) updates before the first snapshot are ignored;
- ``after_snapshot``: checks once a snapshot is installed (e.g. a checksum);
- ``on_update``: an update of a synced book: ignore a repeat, report a gap
  (``keeper.gap``), or apply it (``keeper.apply_msg``) and check it.

A new venue adds a rule here (or in its own module) and one entry in ``RULES``; venues
without one get ``PLAIN`` (snapshots replace, updates apply once synced). The rules
keep no state: what a book needs between messages lives on the keeper (``last_id``,
``await_first``), so keepers pickle without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from operators.checksum import KRAKEN_DEPTH, OKX_DEPTH, kraken_checksum, okx_checksum
from operators.events import DepthMsg

if TYPE_CHECKING:
    from operators.book import BookKeeper

Out = list[dict[str, Any]]


class SyncRule:
    """Snapshots replace the book; updates apply once a snapshot arrived."""

    name = "plain"
    buffers_before_snapshot = False

    def after_snapshot(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        """Called once a snapshot is installed and the book is synced."""

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        """An update of a synced book."""
        keeper.apply_msg(msg, out)


class BinanceSpot(SyncRule):
    """Buffer diffs until the REST snapshot (lastUpdateId L); ignore diffs with
    u <= book id; a diff with U > book id + 1 is a gap."""

    name = "binance"
    buffers_before_snapshot = True

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        book_id = keeper.last_id
        first, last = msg.first_id, msg.last_id
        assert book_id is not None and first is not None and last is not None
        if last <= book_id:
            keeper.ignored += 1
        elif first > book_id + 1:
            keeper.gap(msg, out, f"U={first} > book id+1={book_id + 1} (u={last})")
        else:
            keeper.apply_msg(msg, out)


class BinanceUsdm(SyncRule):
    """Drop u < L; the first diff must have U <= L <= u; then pu == last u."""

    name = "binance-usdm"
    buffers_before_snapshot = True

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        book_id = keeper.last_id
        first, last = msg.first_id, msg.last_id
        assert book_id is not None and first is not None and last is not None
        if keeper.await_first:
            if last < book_id:
                keeper.ignored += 1
            elif first > book_id:
                keeper.gap(msg, out, f"first diff U={first} > snapshot id={book_id} (u={last})")
            elif keeper.apply_msg(msg, out):
                keeper.await_first = False
        elif last <= book_id:
            # Already applied: the overlap of a planned reconnect repeats diffs.
            keeper.ignored += 1
        elif msg.prev_id != book_id:
            keeper.gap(msg, out, f"pu={msg.prev_id} != last u={book_id} (u={last})")
        else:
            keeper.apply_msg(msg, out)


class Okx(SyncRule):
    """In-band snapshot; each update's prevSeqId == last seqId (keep-alives and
    maintenance resets satisfy it too); CRC32 checksum of the top 25 when sent."""

    name = "okx"

    def after_snapshot(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        self._check(keeper, msg, out)

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        prev, seq = msg.prev_id, msg.last_id
        last = keeper.last_id
        if prev is not None and seq is not None and last is not None and prev <= seq <= last:
            # A repeat of an update already applied (reconnect overlap, duplicate
            # delivery): nothing new. A reset has seq < prev and is not caught here.
            keeper.ignored += 1
            return
        if prev is not None and last is not None and prev != last:
            keeper.gap(msg, out, f"prevSeqId={prev} != last seqId={last} (seqId={seq})")
            return
        if prev is not None and seq is not None and seq < prev:
            keeper.seq_resets += 1  # maintenance reset; chaining continues from seq
        if keeper.apply_msg(msg, out):
            self._check(keeper, msg, out)

    def _check(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        if msg.checksum is None:
            return
        keeper.checksum_checks += 1
        computed = okx_checksum(*keeper.book.top(OKX_DEPTH))
        if computed != msg.checksum:
            keeper.checksum_failures += 1
            detail = f"seqId={msg.last_id} checksum={msg.checksum} computed={computed}"
            keeper.lose_sync(msg, out, "checksum_mismatch", detail)


class Bybit(SyncRule):
    """In-band snapshot (any snapshot, ``u == 1`` after a service restart too, replaces
    the book); each delta's ``u`` is the last ``u`` + 1 (observed contiguous in every
    topic of the captures); a repeat (``u <= last``) is ignored. No checksum."""

    name = "bybit"

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        u, last = msg.last_id, keeper.last_id
        if u is not None and last is not None:
            if u <= last:
                keeper.ignored += 1  # reconnect overlap or duplicate delivery
                return
            if u != last + 1:
                keeper.gap(msg, out, f"u={u} != last u+1={last + 1}")
                return
        keeper.apply_msg(msg, out)


class Kraken(SyncRule):
    """In-band snapshot, no sequence numbers: the CRC32 of the top 10 (v2: on snapshots
    and updates; v1: updates) is the only integrity check. Levels pushed beyond the
    subscribed depth (``msg.first_id``) get no delete, so the book is cut to that depth
    after every message, before the checksum (book-checksum-v2 guide)."""

    name = "kraken"

    def after_snapshot(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        self._truncate_and_check(keeper, msg, out)

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        if keeper.apply_msg(msg, out):
            self._truncate_and_check(keeper, msg, out)

    def _truncate_and_check(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        depth = msg.first_id
        book = keeper.book
        if depth is not None and (len(book.bids) > depth or len(book.asks) > depth):
            # Only the few levels just pushed out are beyond the depth: delete them.
            out_bids = [(price, "0") for price, _ in book.bids.top(len(book.bids))[depth:]]
            out_asks = [(price, "0") for price, _ in book.asks.top(len(book.asks))[depth:]]
            book.apply(out_bids, out_asks)
        if msg.checksum is None:
            return
        keeper.checksum_checks += 1
        computed = kraken_checksum(*book.top(KRAKEN_DEPTH))
        if computed != msg.checksum:
            keeper.checksum_failures += 1
            detail = f"checksum={msg.checksum} computed={computed}"
            keeper.lose_sync(msg, out, "checksum_mismatch", detail)


class Coinbase(SyncRule):
    """Coinbase Advanced Trade: in-band snapshot, no per-product sequence. The parser
    stamps each ``l2_data`` message with the connection's ``sequence_num`` (``last_id``)
    and, when that number skips, sends every book of the connection an empty update
    with ``first_id`` = the first lost number (sources/coinbase.py): a gap. The same
    marker with ``first_id == last_id`` precedes an update of a product that had no
    snapshot on its connection (the book was synced on an earlier connection, or its
    snapshot was lost): a gap too. An update whose number is not above the book's is a
    repeat (a duplicated frame): ignored."""

    name = "coinbase"

    def on_update(self, keeper: BookKeeper, msg: DepthMsg, out: Out) -> None:
        first, seq = msg.first_id, msg.last_id
        if first is not None:
            if first == seq:  # the parser saw no snapshot of it on this connection
                why = f"update sequence_num={seq} before any snapshot on connection"
            else:
                why = f"sequence_num {first}..{(seq or 0) - 1} lost on connection"
            keeper.gap(msg, out, f"{why} {msg.conn_id!r}")
            return
        last = keeper.last_id
        if msg.last_id is not None and last is not None and msg.last_id <= last:
            keeper.ignored += 1
            return
        keeper.apply_msg(msg, out)


PLAIN = SyncRule()
RULES: dict[str, SyncRule] = {
    "binance": BinanceSpot(),
    "binance-usdm": BinanceUsdm(),
    "okx": Okx(),
    "bybit": Bybit(),
    "kraken": Kraken(),
    "coinbase": Coinbase(),
}
