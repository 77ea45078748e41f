"""One side of an order book, keyed by float prices, exact by construction.

Why floats: every book dict operation hashes its key, and ``hash(Decimal)`` costs
~770 ns against ~30 ns for a float; ``float(text)`` is ~10x cheaper than
``Decimal(text)``. Why it stays exact:

- Values are the exact ``(price_text, size_text)`` received; keys only order and
  identify levels, they are never rendered.
- ``float()`` of decimal text is correctly rounded, so it is monotone: a < b as
  decimals implies float(a) <= float(b). Ordering by float keys is the decimal
  ordering as long as no two distinct decimal prices share a float.
- Two distinct prices can only meet at the same key through the dict, and every
  such meeting (a set, an overwrite or a removal of a level whose stored text
  differs from the new text) is checked exactly with Decimal. "0.10" vs "0.1" is
  the same level (equal value), as with Decimal keys. A real collision (prices
  past ~15 significant digits) switches the side to Decimal keys for good: a
  price the float cannot tell apart falls back, never rounds.

Prices are kept in a plain list sorted ascending and maintained with ``bisect``:
for books of a few thousand levels the C ``memmove`` of an insert beats a
``SortedList`` made of Python-level pieces, and best/top-N are slices.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from decimal import Decimal
from math import isfinite

Level = tuple[str, str]  # (price_text, size_text) exactly as received
Key = float | Decimal
_NONZERO_LEAD = frozenset("123456789")
_SEQUENCES = (list, tuple)


def reusable(levels: Iterable[Level]) -> list[Level] | tuple[Level, ...]:
    """``levels`` as a sequence that can be gone over again (a retry after a fallback)."""
    return levels if isinstance(levels, _SEQUENCES) else list(levels)


def is_zero_size(size: str) -> bool:
    """True when the size text is zero in value ("0", "0.00000000", "0E-8").

    ValueError (InvalidOperation) for text that is no size: blank, negative, NaN,
    Infinity. Only unusual text (no leading digit 1-9) pays for the Decimal."""
    rest = size.strip("0.")
    if not rest:
        if "0" not in size:  # "" or "."
            raise ValueError(f"size {size!r} is not a number")
        return True
    return rest[0] not in _NONZERO_LEAD and _unusual_size_is_zero(size)


def _unusual_size_is_zero(size: str) -> bool:
    value = Decimal(size)
    if not value.is_finite() or value < 0:
        raise ValueError(f"size {size!r} is not a finite, non-negative number")
    return value == 0


class _Collision(Exception):
    """Two distinct decimal prices share a float key."""


def _decimal_key(price: str) -> Decimal:
    key = Decimal(price)
    if not key.is_finite() or key < 0:
        raise ValueError(f"price {price!r} is not a finite, non-negative number")
    return key


def _same_price(a: str, b: str) -> bool:
    return a == b or Decimal(a) == Decimal(b)


class BookSide:
    """price key -> (price_text, size_text), prices kept sorted ascending."""

    __slots__ = ("_key", "_levels", "_prices", "descending")

    def __init__(self, descending: bool) -> None:
        self.descending = descending  # bids: best = highest price
        self._key: Callable[[str], Key] = float
        self._levels: dict[Key, Level] = {}
        self._prices: list[Key] = []

    @property
    def exact_keys(self) -> bool:
        """True once a float collision moved this side to Decimal keys."""
        return self._key is not float

    def set(self, price: str, size: str) -> None:
        """Set a level's absolute size; a zero size removes it (unknown level: no-op)."""
        self.update(((price, size),))

    def remove(self, price: str) -> bool:
        key = self._key(price)
        old = self._levels.get(key)
        if old is None:
            return False
        if old[0] != price and not _same_price(old[0], price):
            self._to_decimal_keys()
            return self.remove(price)
        del self._levels[key]
        prices = self._prices
        del prices[bisect_left(prices, key)]
        return True

    def update(self, levels: Iterable[Level]) -> None:
        if self._key is not float:
            self._update(levels, self._key)
            return
        todo = reusable(levels)
        try:
            self._update(todo, float)
        except _Collision:
            # Levels before the colliding one are applied; re-applying them is
            # idempotent (absolute sizes), so the whole list goes again exactly.
            self._to_decimal_keys()
            self._update(todo, self._key)

    def _update(self, levels: Iterable[Level], make_key: Callable[[str], Key]) -> None:
        # is_zero_size() inlined: this loop runs for every level of every diff.
        book = self._levels
        prices = self._prices
        get = book.get
        exact = make_key is not float
        for price, size in levels:
            key = make_key(price)
            old = get(key)
            if old is not None and old[0] != price and not _same_price(old[0], price):
                if exact:  # cannot happen with Decimal keys; keep the invariant loud
                    raise AssertionError(f"distinct prices {old[0]!r} {price!r} share a key")
                raise _Collision(price)
            rest = size.strip("0.")
            if (not rest and "0" in size) or (
                rest and rest[0] not in _NONZERO_LEAD and _unusual_size_is_zero(size)
            ):
                if old is not None:
                    del book[key]
                    del prices[bisect_left(prices, key)]
            elif not rest:
                raise ValueError(f"size {size!r} is not a number")
            else:
                if old is None:
                    if not exact and not (isfinite(key) and key >= 0):
                        raise ValueError(f"price {price!r} is not a finite, non-negative number")
                    insort(prices, key)
                book[key] = (price, size)

    def replace(self, levels: Iterable[Level]) -> None:
        todo = [(p, s) for p, s in levels if not is_zero_size(s)]
        self._levels = {}
        self._prices = []
        self._key = float
        try:
            self._fill(todo, float)
        except _Collision:
            self._key = _decimal_key
            self._fill(todo, _decimal_key)

    def _fill(self, levels: list[Level], make_key: Callable[[str], Key]) -> None:
        book: dict[Key, Level] = {}
        for price, size in levels:
            key = make_key(price)
            old = book.get(key)
            if old is not None and not _same_price(old[0], price):
                raise _Collision(price)
            book[key] = (price, size)
        if make_key is float and not all(isfinite(k) and k >= 0 for k in book):
            raise ValueError("snapshot price is not a finite, non-negative number")
        self._levels = book
        self._prices = sorted(book)

    def _to_decimal_keys(self) -> None:
        levels = list(self._levels.values())
        self._key = _decimal_key
        self._fill(levels, _decimal_key)

    def clear(self) -> None:
        self._levels.clear()
        self._prices.clear()

    def top(self, n: int) -> list[Level]:
        """The best n levels, best first."""
        if n <= 0:
            return []
        book = self._levels
        if self.descending:
            return [book[key] for key in reversed(self._prices[-n:])]
        return [book[key] for key in self._prices[:n]]

    def best(self) -> Level | None:
        prices = self._prices
        if not prices:
            return None
        return self._levels[prices[-1 if self.descending else 0]]

    def __len__(self) -> int:
        return len(self._levels)
