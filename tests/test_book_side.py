"""Book sides against a plain Decimal reference: the pure-Python BookSide (float keys,
exact by collision checks) and the native side (operators._book_native) where built.

CANDLEWAX_REQUIRE_NATIVE=1 (scripts/test.sh sets it where cargo exists) makes a
missing native build a failure instead of a skip, so a broken build cannot hide
behind the fallback."""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from operators import book_sides
from operators.book import OrderBook
from operators.book_side import BookSide, Level
from operators.book_sides import Side

NATIVE = getattr(book_sides, "NativeSide", None)
REQUIRE_NATIVE = os.environ.get("CANDLEWAX_REQUIRE_NATIVE") == "1"


def _native(descending: bool) -> Side:
    if NATIVE is None:
        if REQUIRE_NATIVE:
            pytest.fail("operators._book_native was not built (CANDLEWAX_REQUIRE_NATIVE=1)")
        pytest.skip("operators._book_native not built here")
    side: Side = NATIVE(descending)
    return side


def _through_order_book(descending: bool) -> Any:
    """The side as OrderBook drives it: native first, Python after a fallback."""
    return _BookDriven(descending)


class _BookDriven:
    def __init__(self, descending: bool) -> None:
        self.book = OrderBook()
        self.descending = descending

    def _side(self) -> Side:
        return self.book.bids if self.descending else self.book.asks

    def update(self, levels: list[Level]) -> None:
        if self.descending:
            self.book.apply(levels, [])
        else:
            self.book.apply([], levels)

    def replace(self, levels: list[Level]) -> None:
        if self.descending:
            self.book.replace(levels, [])
        else:
            self.book.replace([], levels)

    def top(self, n: int) -> list[Level]:
        return self._side().top(n)

    def best(self) -> Level | None:
        return self._side().best()

    def __len__(self) -> int:
        return len(self._side())


SIDES: dict[str, Callable[[bool], Any]] = {
    "python": BookSide,
    "native": _native,
    "order_book": _through_order_book,
}


class ReferenceSide:
    """The obviously right model: Decimal value -> exact text, sorted on demand."""

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.levels: dict[Decimal, Level] = {}

    def update(self, levels: list[Level]) -> None:
        for price, size in levels:
            key = Decimal(price)
            if Decimal(size) == 0:
                self.levels.pop(key, None)
            else:
                self.levels[key] = (price, size)

    def replace(self, levels: list[Level]) -> None:
        # A snapshot lists the levels it has: zero sizes are skipped, not applied in turn.
        self.levels = {Decimal(p): (p, s) for p, s in levels if Decimal(s) != 0}

    def top(self, n: int) -> list[Level]:
        keys = sorted(self.levels, reverse=self.descending)[:n]
        return [self.levels[k] for k in keys]


# Prices that meet at one float key although they differ as decimals, prices that are
# equal as decimals with different text, and ordinary ones.
COLLIDING = ["0.1", "0.1000000000000000001", "0.09999999999999999999", "0.10000000000000000002"]
SAME_VALUE = ["2.5", "2.50", "2.500", "02.5"]
ORDINARY = [f"{p / 100:.2f}" for p in range(100, 140)]
SIZES = ["1", "0.5", "12.00000000", "0.00100000", "3E+2"]
ZEROS = ["0", "0.00000000", "0.0", "0E-8", "0.000"]


PLAIN_SIZES = [s for s in SIZES if "E" not in s]
PLAIN_ZEROS = [z for z in ZEROS if "E" not in z]


def _random_levels(
    rng: random.Random, pool: list[str], n: int, plain_only: bool = False
) -> list[Level]:
    zeros, sizes = (PLAIN_ZEROS, PLAIN_SIZES) if plain_only else (ZEROS, SIZES)
    out = []
    for _ in range(n):
        size = rng.choice(zeros) if rng.random() < 0.35 else rng.choice(sizes)
        out.append((rng.choice(pool), size))
    return out


@pytest.mark.parametrize("impl", list(SIDES))
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("pool_name", ["ordinary", "same_value", "colliding", "mixed"])
def test_random_operations_match_the_decimal_reference(
    impl: str, descending: bool, pool_name: str
) -> None:
    pools = {
        "ordinary": ORDINARY,
        "same_value": SAME_VALUE + ORDINARY[:5],
        "colliding": COLLIDING + ORDINARY[:5],
        "mixed": COLLIDING + SAME_VALUE + ORDINARY,
    }
    pool = pools[pool_name]
    rng = random.Random(f"{pool_name}-{descending}")
    plain_only = impl == "native"
    if plain_only:
        # The bare native side refuses what it cannot hold exactly (19 fractional
        # digits, exponents): OrderBook then falls back, tested as "order_book".
        pool = [p for p in pool if p not in COLLIDING[1:]]
    side, ref = SIDES[impl](descending), ReferenceSide(descending)
    for step in range(400):
        if step % 50 == 0:
            levels = _random_levels(rng, pool, 20, plain_only)
            side.replace(levels)
            ref.replace(levels)
        else:
            levels = _random_levels(rng, pool, rng.randint(0, 6), plain_only)
            side.update(levels)
            ref.update(levels)
        assert side.top(10**6) == ref.top(10**6), f"step {step}"
        assert side.top(3) == ref.top(3)
        assert side.best() == (ref.top(1)[0] if ref.levels else None)
        assert len(side) == len(ref.levels)
    if impl == "python" and pool_name in ("colliding", "mixed"):
        assert side.exact_keys  # the collisions were seen and handled exactly


def test_a_float_collision_switches_to_exact_keys_without_losing_levels() -> None:
    side = BookSide(descending=True)
    side.replace([("0.1", "1"), ("0.2", "2")])
    assert not side.exact_keys
    side.update([("0.1000000000000000001", "5")])  # float(...) == 0.1
    assert side.exact_keys
    assert side.top(5) == [("0.2", "2"), ("0.1000000000000000001", "5"), ("0.1", "1")]
    side.update([("0.1", "0")])
    assert side.top(5) == [("0.2", "2"), ("0.1000000000000000001", "5")]
    assert side.remove("0.1000000000000000001")
    assert side.top(5) == [("0.2", "2")]


def test_a_collision_inside_one_update_applies_the_whole_update_exactly() -> None:
    side = BookSide(descending=False)
    side.replace([("0.1", "1")])
    side.update([("0.3", "3"), ("0.1000000000000000001", "4"), ("0.2", "2"), ("0.3", "0")])
    assert side.top(10) == [("0.1", "1"), ("0.1000000000000000001", "4"), ("0.2", "2")]


def test_equal_values_are_one_level_and_keep_the_latest_text() -> None:
    side = BookSide(descending=False)
    side.update([("2.5", "1"), ("2.50", "2")])
    assert side.top(5) == [("2.50", "2")]
    assert not side.exact_keys
    assert side.remove("2.500")
    assert len(side) == 0


@pytest.mark.parametrize("price", ["NaN", "inf", "-Infinity", "1e400", "-5", "-0.1"])
def test_non_finite_or_negative_prices_are_refused(price: str) -> None:
    side = BookSide(descending=True)
    with pytest.raises(ValueError, match="not a finite, non-negative number"):
        side.update([(price, "1")])
    with pytest.raises(ValueError, match="not a finite, non-negative number"):
        side.replace([(price, "1")])


@pytest.mark.parametrize(
    "level", [("-5", "1"), ("NaN", "1"), ("1", ""), ("1", "."), ("1", "-1"), ("1", "NaN")]
)
def test_order_book_refuses_bad_levels_on_every_path(
    level: Level, monkeypatch: pytest.MonkeyPatch
) -> None:
    for native in ("1", "0"):
        monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", native)
        book = OrderBook()
        book.replace([("1.5", "1")], [])
        with pytest.raises(ValueError):
            book.apply([level], [])
        with pytest.raises(ValueError):
            OrderBook().replace([level], [])


def test_a_book_pickles_to_its_exact_levels_and_back() -> None:
    book = OrderBook()
    book.replace([("100.10", "1"), ("100.2", "2")], [("100.30", "3")])
    book.apply([("0.1000000000000000001", "1"), ("0.1", "1")], [])
    restored = pickle.loads(pickle.dumps(book))
    assert restored.top(10) == book.top(10)
    assert len(restored.top(10)[0]) == 4


def test_the_native_side_refuses_what_it_cannot_hold_exactly_before_changing() -> None:
    side = _native(descending=True)
    side.replace([("1.5", "1")])
    for level in [("0.1000000000000000001", "1"), ("1e3", "1"), ("1", "0E-8"), ("+1", "1")]:
        with pytest.raises(book_sides.NotRepresentable):
            side.update([("2", "1"), level])  # the first level must not be applied either
        assert side.top(5) == [("1.5", "1")]


@pytest.mark.parametrize(
    "level",
    [("0.1000000000000000001", "1"), ("1E+2", "1"), ("1", "1E-8"), ("1", "0E-8")],
)
def test_order_book_falls_back_to_python_for_such_levels_and_stays_exact(level: Level) -> None:
    book = OrderBook()
    book.replace([("1.5", "1"), ("0.5", "1")], [("2", "1")])
    book.apply([level, ("1.5", "0")], [])
    ref = ReferenceSide(descending=True)
    ref.replace([("1.5", "1"), ("0.5", "1")])
    ref.update([level, ("1.5", "0")])
    assert book.bids.top(10) == ref.top(10)
    assert book.asks.top(10) == [("2", "1")]
    if NATIVE is not None:
        assert not book_sides.is_native(book.bids) and book_sides.is_native(book.asks)


def test_python_only_mode_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", "0")
    assert isinstance(OrderBook().bids, BookSide)
    monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", "1")
    assert book_sides.is_native(OrderBook().bids) == (NATIVE is not None)


CAPTURES = [
    ("binance/hftbacktest_spot_ethusdt_20240808.txt.gz", "binance", ["ETH/USDT"]),
    ("binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz", "binance-usdm", None),
    ("okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz", "okx", None),
]


def _book_outputs(
    path: str, venue: str, symbols: list[str] | None
) -> tuple[list[dict[str, Any]], set[bool]]:
    from operators.book import BookKeeper
    from operators.events import DepthMsg
    from sources.frames import RawFrame
    from sources.registry import make_parser
    from sources.replay import iter_capture

    parser = make_parser(venue, symbols)
    keepers: dict[str, BookKeeper] = {}
    out: list[dict[str, Any]] = []
    root = os.path.join(os.path.dirname(__file__), "..", "fixtures", "captures")
    for frame in iter_capture(os.path.join(root, path), venue):
        if not isinstance(frame, RawFrame):
            continue
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg):
                keeper = keepers.get(item.symbol)
                if keeper is None:
                    keeper = keepers[item.symbol] = BookKeeper(
                        venue, item.symbol, depth=20, emit_interval_us=1_000_000
                    )
                out.extend(keeper.on_msg(item))
    for keeper in keepers.values():
        out.extend(keeper.flush())
        out.append({"full_book": keeper.book.top(10**6)})
    natives = {book_sides.is_native(k.book.bids) for k in keepers.values()}
    natives |= {book_sides.is_native(k.book.asks) for k in keepers.values()}
    return out, natives


@pytest.mark.parametrize(("path", "venue", "symbols"), CAPTURES)
def test_native_and_python_books_agree_on_real_captures(
    path: str, venue: str, symbols: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _native(True)  # skip (or fail when required) without the native build
    native, native_sides = _book_outputs(path, venue, symbols)
    monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", "0")
    python, python_sides = _book_outputs(path, venue, symbols)
    assert native_sides == {True} and python_sides == {False}  # each path really ran
    assert len(native) > 100
    assert native == python
