"""BookSide (float keys, exact by collision checks) against a plain Decimal reference."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal

import pytest

from operators.book import OrderBook
from operators.book_side import BookSide, Level


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


def _random_levels(rng: random.Random, pool: list[str], n: int) -> list[Level]:
    out = []
    for _ in range(n):
        size = rng.choice(ZEROS) if rng.random() < 0.35 else rng.choice(SIZES)
        out.append((rng.choice(pool), size))
    return out


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("pool_name", ["ordinary", "same_value", "colliding", "mixed"])
def test_random_operations_match_the_decimal_reference(descending: bool, pool_name: str) -> None:
    pools = {
        "ordinary": ORDINARY,
        "same_value": SAME_VALUE + ORDINARY[:5],
        "colliding": COLLIDING + ORDINARY[:5],
        "mixed": COLLIDING + SAME_VALUE + ORDINARY,
    }
    pool = pools[pool_name]
    rng = random.Random(f"{pool_name}-{descending}")
    side, ref = BookSide(descending), ReferenceSide(descending)
    for step in range(400):
        if step % 50 == 0:
            levels = _random_levels(rng, pool, 20)
            side.replace(levels)
            ref.replace(levels)
        else:
            levels = _random_levels(rng, pool, rng.randint(0, 6))
            side.update(levels)
            ref.update(levels)
        assert side.top(10**6) == ref.top(10**6), f"step {step}"
        assert side.top(3) == ref.top(3)
        assert side.best() == (ref.top(1) or [None])[0]
        assert len(side) == len(ref.levels)
    if pool_name in ("colliding", "mixed"):
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


@pytest.mark.parametrize("price", ["NaN", "inf", "-Infinity", "1e400"])
def test_non_finite_prices_are_refused(price: str) -> None:
    side = BookSide(descending=True)
    with pytest.raises(ValueError, match="not a finite number"):
        side.update([(price, "1")])
    with pytest.raises(ValueError, match="not a finite number"):
        side.replace([(price, "1")])


def test_a_book_pickles_to_its_exact_levels_and_back() -> None:
    book = OrderBook()
    book.replace([("100.10", "1"), ("100.2", "2")], [("100.30", "3")])
    book.bids.update([("0.1000000000000000001", "1"), ("0.1", "1")])
    restored = pickle.loads(pickle.dumps(book))
    assert restored.top(10) == book.top(10)
    assert restored.bids.exact_keys
