"""Prices and sizes checked at parse time against the published schema, for every venue.

The rules are those of ``candlewax.schema``: a price or size is exact decimal text,
ASCII digits with an optional ``.fraction`` (``DECIMAL_RE``); no sign, exponent,
blank, ``NaN`` or ``Infinity``. Prices and sizes are positive
(``POSITIVE_DECIMAL_RE``); a zero size is allowed only in a book *update*, where
venues use it to delete a level. A frame breaking a rule raises ``FrameError``
naming the field and the value, so it becomes a dead letter and nothing
downstream (books, bars, sinks) ever sees the number. The text is never
normalised: what passes is what the venue sent.

Hot path: parsing a depth diff of ~70 numbers must stay cheap, so the check is a
set lookup per number (``set.issuperset`` over a level list runs in C) against
the texts already proven valid; only a text not seen before runs the regex.
Prices and sizes repeat heavily (83% of the numbers in the bundled Binance
capture were seen before). The sets are bounded: full ones are cleared.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any, Final

from candlewax.schema import DECIMAL_RE, POSITIVE_DECIMAL_RE
from sources.venue import FrameError

_DECIMAL = re.compile(DECIMAL_RE)
_POSITIVE_DECIMAL = re.compile(POSITIVE_DECIMAL_RE)
MAX_REMEMBERED: Final = 1 << 16  # texts per set (~5 MB at most)

# Texts proven to match POSITIVE_DECIMAL_RE / DECIMAL_RE (the first is a subset).
_positive: set[str] = set()
_non_negative: set[str] = set()
_price = itemgetter(0)
_size = itemgetter(1)


def _remember(text: str, positive: bool) -> None:
    if len(_non_negative) >= MAX_REMEMBERED:
        _positive.clear()
        _non_negative.clear()
    _non_negative.add(text)
    if positive:
        _positive.add(text)


def _reject(field: str, value: Any, zero_ok: bool) -> FrameError | None:
    """The error for a value breaking the rule, else None (and the value is remembered)."""
    if value.__class__ is not str:
        return FrameError(f"{field} must be a decimal string, got {value!r}")
    if _POSITIVE_DECIMAL.fullmatch(value):
        _remember(value, True)
        return None
    if _DECIMAL.fullmatch(value):
        if zero_ok:
            _remember(value, False)
            return None
        return FrameError(f"{field} must be positive, got {value!r}")
    return FrameError(
        f"{field} must be decimal text like 12.50 (no sign, exponent, blanks, NaN"
        f" or Infinity), got {value!r}"
    )


def positive(value: Any, field: str) -> str:
    """``value`` if it is positive decimal text, else FrameError naming ``field``."""
    try:
        if value in _positive:
            result: str = value
            return result
    except TypeError:  # unhashable: a list or object where a number belongs
        pass
    error = _reject(field, value, zero_ok=False)
    if error is not None:
        raise error
    checked: str = value
    return checked


def check_levels(levels: list[tuple[str, str]], side: str, deletes: bool) -> None:
    """Every price positive and every size positive, or zero when ``deletes`` (a book
    update, where size 0 removes the level). Levels hold strings already."""
    sizes = _non_negative if deletes else _positive
    if _positive.issuperset(map(_price, levels)) and sizes.issuperset(map(_size, levels)):
        return
    for n, (price, size) in enumerate(levels):
        error = _reject(f"{side}[{n}] price", price, zero_ok=False) or _reject(
            f"{side}[{n}] size", size, zero_ok=deletes
        )
        if error is not None:
            raise error


def ticker_side(price: Any, size: Any, price_field: str, size_field: str) -> tuple[str, str] | None:
    """One side of a venue's own best bid/offer: (price, size), or None when the
    venue says that side of the book is empty: an empty price with an empty or zero
    size (OKX ``tickers``), or zero price and zero size (Binance ``bookTicker``
    writes ``"0.00000000"``). Anything else needs a positive price and size."""
    if price == "" and (size == "" or _is_zero(size)):
        return None
    if _is_zero(price) and _is_zero(size):
        return None
    return positive(price, price_field), positive(size, size_field)


def _is_zero(text: Any) -> bool:
    """Zero decimal text ("0", "0.00000000"); one comparison for the usual prices."""
    return (
        text.__class__ is str
        and text[:1] == "0"
        and not text.strip("0.")
        and _DECIMAL.fullmatch(text) is not None
    )
