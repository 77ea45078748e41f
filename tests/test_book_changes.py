"""One native call per depth diff (operators._book_native.apply_diff) and what it reports
changed, against the pure-Python sides: levels, best-level and top-N flags, the top-N
lists OrderBook keeps between changes, and BookKeeper's output on either path.

CANDLEWAX_REQUIRE_NATIVE=1 makes a missing native build a failure instead of a skip."""

from __future__ import annotations

import os
import pickle
import random
from decimal import Decimal
from typing import Any

import pytest

from operators import book_sides
from operators.book import BookKeeper, OrderBook
from operators.book_side import BookSide, Level
from operators.book_sides import ALL_CHANGED, ASK_BEST, ASK_TOP, BID_BEST, BID_TOP
from operators.events import DepthMsg

NATIVE = getattr(book_sides, "NativeSide", None)
APPLY_DIFF = book_sides.apply_diff


@pytest.fixture(autouse=True)
def _needs_native() -> None:
    if NATIVE is None or APPLY_DIFF is None:
        if os.environ.get("CANDLEWAX_REQUIRE_NATIVE") == "1":
            pytest.fail("operators._book_native was not built (CANDLEWAX_REQUIRE_NATIVE=1)")
        pytest.skip("operators._book_native not built here")


# Prices on a tick grid, some written with extra zeros (the same level as text that
# differs), sizes with zeros that delete; deletes of absent levels come on their own.
PRICES = [f"{p / 100:.2f}" for p in range(9_950, 10_050)]
SAME_VALUE = {p: p + "000" for p in PRICES[::7]}
SIZES = ["1", "0.5", "12.00000000", "0.00100000", "7.25"]
ZEROS = ["0", "0.00000000", "0.0"]


def _levels(rng: random.Random, n: int, low: int, high: int) -> list[Level]:
    out = []
    for _ in range(n):
        price = PRICES[rng.randrange(low, high)]
        if price in SAME_VALUE and rng.random() < 0.5:
            price = SAME_VALUE[price]
        size = rng.choice(ZEROS) if rng.random() < 0.35 else rng.choice(SIZES)
        out.append((price, size))
    return out


def _diff(rng: random.Random) -> tuple[list[Level], list[Level]]:
    """Bids mostly low and asks mostly high, but ranges overlap: crossing updates too."""
    return _levels(rng, rng.randrange(0, 12), 0, 60), _levels(rng, rng.randrange(0, 12), 40, 100)


def _top_flag(side: BookSide, levels: list[Level], n: int, bit: int) -> int:
    """``bit`` when applying ``levels`` in turn sets or removes a level at or better than
    the n-th best of the side before (any level, when it has fewer than n)."""
    book = {Decimal(p): (p, s) for p, s in side.top(10**6)}
    best_first = sorted(book, reverse=side.descending)
    threshold = best_first[n - 1] if len(best_first) >= n else None
    for price, size in levels:
        key = Decimal(price)
        changed = Decimal(size) != 0 or key in book
        if Decimal(size) == 0:
            book.pop(key, None)
        else:
            book[key] = (price, size)
        if changed and (
            threshold is None or (key >= threshold if side.descending else key <= threshold)
        ):
            return bit
    return 0


def _python_book() -> tuple[BookSide, BookSide]:
    return BookSide(descending=True), BookSide(descending=False)


@pytest.mark.parametrize("n", [1, 3, 20])
@pytest.mark.parametrize("seed", range(4))
def test_apply_diff_matches_the_python_sides_and_reports_every_change(seed: int, n: int) -> None:
    rng = random.Random(f"{seed}-{n}")
    assert NATIVE is not None
    bids, asks = NATIVE(True), NATIVE(False)
    py_bids, py_asks = _python_book()
    seen = {"deep only": 0, "top": 0}
    for step in range(1500):
        if step % 300 == 0:  # snapshot replace
            snap_bids, snap_asks = _levels(rng, 40, 0, 60), _levels(rng, 40, 40, 100)
            bids.replace(snap_bids)
            asks.replace(snap_asks)
            py_bids.replace(snap_bids)
            py_asks.replace(snap_asks)
            continue
        diff_bids, diff_asks = _diff(rng)
        if rng.random() < 0.1:  # deletes of levels that are not in the book
            absent = [p for p in PRICES if not any(p == q for q, _ in py_bids.top(10**6))]
            diff_bids = [(rng.choice(absent), "0"), *diff_bids]
        want = _top_flag(py_bids, diff_bids, n, BID_TOP) | _top_flag(py_asks, diff_asks, n, ASK_TOP)
        before = [py_bids.top(n), py_asks.top(n), bids.best(), asks.best()]
        flags = APPLY_DIFF(bids, asks, diff_bids, diff_asks, n)
        py_bids.update(diff_bids)
        py_asks.update(diff_asks)
        after = [py_bids.top(n), py_asks.top(n), bids.best(), asks.best()]
        assert bids.top(10**6) == py_bids.top(10**6)
        assert asks.top(10**6) == py_asks.top(10**6)
        assert flags & (BID_TOP | ASK_TOP) == want, step
        if flags & BID_TOP == 0:
            assert before[0] == after[0]
        if flags & ASK_TOP == 0:
            assert before[1] == after[1]
        # The best may differ exactly when its stored text objects did.
        for bit, i in ((BID_BEST, 2), (ASK_BEST, 3)):
            old, new = before[i], after[i]
            moved = (old is None) != (new is None) or (
                old is not None
                and new is not None
                and (old[0] is not new[0] or old[1] is not new[1])
            )
            assert bool(flags & bit) == moved, (step, old, new)
        if (diff_bids or diff_asks) and not flags & (BID_TOP | ASK_TOP):
            seen["deep only"] += 1
        if flags & (BID_TOP | ASK_TOP):
            seen["top"] += 1
    assert seen["top"] > 100
    if n < 20:
        assert seen["deep only"] > 50


def test_a_change_deeper_than_the_top_n_reports_nothing_and_keeps_the_top_lists() -> None:
    book = OrderBook(depth=2)
    book.replace([("100", "1"), ("99", "1"), ("98", "1")], [("101", "1"), ("102", "1")])
    first = book.top(2)
    kept = book._top_bids, book._top_asks
    # deeper than the top 2: a size change, an insert, a delete, a delete of an absent level
    assert book.apply([("98", "5"), ("97", "1"), ("98", "0"), ("50", "0")], [("103", "1")]) == 0
    assert (book._top_bids, book._top_asks) == kept and book._top_bids is kept[0]
    assert book.top(2) == first
    assert book.top(2)[0] is not book.top(2)[0]  # each record owns its lists
    assert book.bids.top(10) == [("100", "1"), ("99", "1"), ("97", "1")]


def test_a_size_change_at_the_top_is_reported_and_shows() -> None:
    book = OrderBook(depth=2)
    book.replace([("100", "1"), ("99", "1"), ("98", "1")], [("101", "1"), ("102", "1")])
    book.top(2)
    assert book.apply([("99", "2")], []) == BID_TOP  # second level: top, not best
    assert book.top(2)[0] == [("100", "1"), ("99", "2")]
    assert book.apply([], [("101", "3")]) == ASK_TOP | ASK_BEST
    assert book.top(2)[1] == [("101", "3"), ("102", "1")]
    # the same value written otherwise is new text at the top: reported, and shown
    assert book.apply([("100.0", "1")], []) & BID_TOP
    assert book.top(2)[0] == [("100.0", "1"), ("99", "2")]
    # a crossing bid above every ask is just a level to the book
    assert book.apply([("105", "1")], []) == BID_TOP | BID_BEST
    assert book.best_bid() == ("105", "1")


def test_apply_diff_refuses_before_changing_either_side() -> None:
    assert NATIVE is not None
    bids, asks = NATIVE(True), NATIVE(False)
    bids.replace([("1.5", "1")])
    asks.replace([("2", "1")])
    for bad_bids, bad_asks in [
        ([("1.6", "1")], [("2.1", "1"), ("1e3", "1")]),
        ([("1.6", "1"), ("1", "-1")], []),
        ([("1.6", "1")], (level for level in [("2.1", "1")])),  # not a list
        ([("0.1000000000000000001", "1")], []),
    ]:
        with pytest.raises(book_sides.NotRepresentable):
            APPLY_DIFF(bids, asks, bad_bids, bad_asks, 5)
        assert bids.top(5) == [("1.5", "1")] and asks.top(5) == [("2", "1")]


def test_apply_diff_takes_the_level_forms_update_takes() -> None:
    class Text(str):
        pass

    assert NATIVE is not None
    bids, asks = NATIVE(True), NATIVE(False)
    plain_bids, plain_asks = NATIVE(True), NATIVE(False)
    levels: list[Any] = [(Text("1.4"), "2"), ("1.3", Text("3"))]
    APPLY_DIFF(bids, asks, levels, [("2", "1")], 5)
    plain_bids.update(levels)
    plain_asks.update([("2", "1")])
    assert bids.top(5) == plain_bids.top(5) and asks.top(5) == plain_asks.top(5)


def test_order_book_falls_back_side_by_side_and_then_reports_everything() -> None:
    book = OrderBook(depth=5)
    book.replace([("1.5", "1")], [("2", "1")])
    assert book.apply([("1.4", "1E+0")], [("2.5", "1")]) == ALL_CHANGED
    assert not book_sides.is_native(book.bids) and book_sides.is_native(book.asks)
    assert book.top(5) == ([("1.5", "1"), ("1.4", "1E+0")], [("2", "1"), ("2.5", "1")])
    assert book.apply([], [("3", "1")]) == ALL_CHANGED  # one side is Python: it cannot tell
    book.replace([("1.5", "1")], [("2", "1")])  # a snapshot goes native again
    assert book.apply([], [("3", "1")]) == ASK_TOP  # fewer than 5 levels: in the top 5


def _msg(kind: str, bids: list[Level], asks: list[Level], seq: int) -> DepthMsg:
    return DepthMsg("kraken", "BTC/USD", kind, bids, asks, None, seq, None, None, seq, seq)


def _keeper_outputs(depth: int, interval: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    keeper = BookKeeper("kraken", "BTC/USD", depth=depth, emit_interval_us=interval)
    out: list[dict[str, Any]] = []
    for seq in range(1, 1200):
        if seq % 400 == 1:
            out += keeper.on_msg(
                _msg("snapshot", _levels(rng, 40, 0, 60), _levels(rng, 40, 40, 100), seq)
            )
        else:
            out += keeper.on_msg(_msg("update", *_diff(rng), seq))
        if seq == 600:
            keeper = pickle.loads(pickle.dumps(keeper))
        out += keeper.on_tick(seq)
    return out + keeper.flush()


@pytest.mark.parametrize(("depth", "interval"), [(1, 0), (3, 0), (3, 5), (20, 0)])
def test_book_keeper_output_is_the_same_on_the_native_and_python_paths(
    depth: int, interval: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = _keeper_outputs(depth, interval, seed=depth * 100 + interval)
    monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", "0")
    python = _keeper_outputs(depth, interval, seed=depth * 100 + interval)
    assert native == python
    kinds = {r["type"] for r in native}
    assert {"book", "bbo"} <= kinds
    assert sum(r["type"] == "bbo" for r in native) > 100
