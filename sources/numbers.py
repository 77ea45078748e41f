"""Prices and sizes checked at parse time against the published schema, for every venue.

The rules are those of ``candlewax.schema``: a price or size is exact decimal text,
ASCII digits with an optional ``.fraction`` (``DECIMAL_RE``): no sign, exponent,
blank, ``NaN`` or ``Infinity``. Prices and sizes are positive
(``POSITIVE_DECIMAL_RE``); a zero size is allowed only in a book *update*, where
venues use it to delete a level. A frame breaking a rule raises ``FrameError``
naming the field and the value, so it becomes a dead letter and no book, bar or
sink ever sees the number. The text is never normalised: what passes is what
the venue sent.

Hot path. A regex per number costs ~140 ns (mostly call overhead), ~10 µs for a
depth diff of 70 numbers. So longer level lists are checked in bulk: serialised
once with ``orjson.dumps`` (``[["61837.63","0.5"],..]``), then a few C-speed
``bytes`` passes prove every string valid (see :func:`_bulk_ok`); a trade or
ticker (2 or 4 numbers) takes one regex per number. Anything failing the fast
path runs the per-number regex, which is the authority and writes the reason.
``tests/test_bad_numbers.py`` fuzzes the bulk check against the regex.

The typed path (``sources/typed.py``) asks yes/no questions instead, one call per
frame or level list: :class:`Checks` (``positive_ok``, ``level_pairs``), native
(``native/src/decimals.rs``, in the ``operators._book_native`` extension) where it
was built, else pure Python; ``CANDLEWAX_NATIVE_BOOK=0`` forces Python, as for the
book. A "no" only sends the frame to the careful path, which writes the reason.
``tests/test_typed_decode.py`` fuzzes both forms against the regexes and each other.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from candlewax.schema import DECIMAL_RE, POSITIVE_DECIMAL_RE
from sources.venue import FrameError

_DECIMAL = re.compile(DECIMAL_RE)
_POSITIVE = re.compile(POSITIVE_DECIMAL_RE)

_positive_text = _POSITIVE.fullmatch
_decimal_text = _DECIMAL.fullmatch
_BULK_FROM = 3  # levels; shorter lists take the regex per number

_DIGITS = b"0123456789"
_DOT_AS_QUOTE = bytes.maketrans(b".", b'"')
_skeletons: dict[int, bytes] = {}


def _skeleton(pairs: int) -> bytes:
    """orjson's output for ``pairs`` levels with every digit and dot deleted."""
    found = _skeletons.get(pairs)
    if found is None:
        found = b"[" + b",".join([b'["",""]'] * pairs) + b"]"
        if len(_skeletons) < 4096:
            _skeletons[pairs] = found
    return found


def _bulk_ok(levels: list[tuple[str, str]], deletes: bool) -> bool:
    """True when every price is positive decimal text and every size too (or zero,
    when ``deletes``). May say False for valid levels (the caller then asks the
    regex), never True for invalid ones; a few C-speed passes over orjson's output,
    ``[["61837.63","0.5"],..]``."""
    try:
        dumped = orjson.dumps(levels)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate
        return False
    shape = dumped.translate(None, _DIGITS)
    return (
        # without digits and dots only the JSON skeleton is left: no sign, letter,
        # blank, escape, non-ASCII byte, nor a `,`/`[`/`]` inside a string
        shape.translate(None, b".") == _skeleton(len(levels))
        # without digits a string keeps only its dots: more than one reads `..`
        and b".." not in shape
        # with dots read as quotes, `""` marks an empty string, a dot at either end
        # of one, or two adjacent dots (the skeleton's quotes never touch)
        and b'""' not in dumped.translate(_DOT_AS_QUOTE)
        # with zeros and dots deleted a zero string reads `""`: none may be zero,
        # or, when sizes may be, no level's first string (`[""`), its price
        and (b'[""' if deletes else b'""') not in dumped.translate(None, b"0.")
    )


def _reason(field: str, value: Any, zero_ok: bool) -> str | None:
    """Why ``value`` breaks the rule, or None when it does not (the regex decides)."""
    if value.__class__ is not str:
        return f"{field} must be a decimal string, got {value!r}"
    if _POSITIVE.fullmatch(value):
        return None
    if _DECIMAL.fullmatch(value):
        return None if zero_ok else f"{field} must be positive, got {value!r}"
    return (
        f"{field} must be decimal text like 12.50 (no sign, exponent, blanks, NaN"
        f" or Infinity), got {value!r}"
    )


def _all_positive(values: tuple[Any, ...]) -> bool:
    """For a few loose values (a trade, a ticker) one regex each is cheaper than the
    bulk passes, whose fixed cost is that of ~4 regex calls."""
    for value in values:
        if value.__class__ is not str or _positive_text(value) is None:
            return False
    return True


def check_positive(values: tuple[Any, ...], fields: tuple[str, ...]) -> None:
    """Each value is positive decimal text, else FrameError naming its field."""
    if _all_positive(values):
        return
    for value, field in zip(values, fields, strict=True):
        reason = _reason(field, value, zero_ok=False)
        if reason is not None:
            raise FrameError(reason)


def check_levels(levels: list[tuple[str, str]], side: str, deletes: bool) -> None:
    """Every price positive; every size positive, or zero when ``deletes`` (a book
    update, where size 0 removes the level). The levels hold strings already."""
    if len(levels) >= _BULK_FROM:
        if _bulk_ok(levels, deletes):
            return
    else:
        sizes = _decimal_text if deletes else _positive_text
        for price, size in levels:
            if _positive_text(price) is None or sizes(size) is None:
                break
        else:
            return
    for n, (price, size) in enumerate(levels):
        reason = _reason(f"{side}[{n}] price", price, zero_ok=False) or _reason(
            f"{side}[{n}] size", size, zero_ok=deletes
        )
        if reason is not None:
            raise FrameError(reason)


def malformed_level(raw: list[Any], side: str, exact_pair: bool) -> FrameError:
    """The error for the first level of ``raw`` that is not a list starting with
    price and size strings (exactly two elements when ``exact_pair``)."""
    for n, level in enumerate(raw):
        if level.__class__ is not list or len(level) < 2 or (exact_pair and len(level) != 2):
            shape = "[price, size]" if exact_pair else "[price, size, ...]"
            return FrameError(f"{side}[{n}] must be a list {shape}, got {level!r}")
        for value, name in ((level[0], "price"), (level[1], "size")):
            if value.__class__ is not str:
                return FrameError(f"{side}[{n}] {name} must be a decimal string, got {value!r}")
    return FrameError(f"{side}: malformed levels")  # unreachable when called on a bad list


Side = tuple[str, str] | None


def check_ticker(
    bid: tuple[Any, Any], ask: tuple[Any, Any], fields: tuple[str, str, str, str]
) -> tuple[Side, Side]:
    """A venue's own best bid and offer as (price, size) pairs; a side is None when
    the venue says it is empty: zero price and zero size (Binance ``bookTicker``
    writes ``"0.00000000"``) or an empty price with an empty or zero size (OKX
    ``tickers``). Anything else needs a positive price and size."""
    # The most frequent frame of all: four regex calls inline, no tuple building.
    try:
        if (
            _positive_text(bid[0]) is not None
            and _positive_text(bid[1]) is not None
            and _positive_text(ask[0]) is not None
            and _positive_text(ask[1]) is not None
        ):
            return bid, ask
    except TypeError:  # not a string: the slow path names it
        pass
    return _side(bid, fields[0], fields[1]), _side(ask, fields[2], fields[3])


def _side(pair: tuple[Any, Any], price_field: str, size_field: str) -> Side:
    price, size = pair
    if (price == "" and (size == "" or _is_zero(size))) or (_is_zero(price) and _is_zero(size)):
        return None
    check_positive(pair, (price_field, size_field))
    return (price, size)


def _is_zero(text: Any) -> bool:
    return text.__class__ is str and _DECIMAL.fullmatch(text) is not None and not text.strip("0.")


# ---- yes/no checks for the typed path ----

Pairs = list[tuple[str, str]]


def py_positive_ok(*values: Any) -> bool:
    """True when every value is a ``str`` of positive decimal text."""
    return _all_positive(values)


def py_decimal_ok(*values: Any) -> bool:
    """True when every value is a ``str`` of decimal text (zero included)."""
    return all(value.__class__ is str and _decimal_text(value) is not None for value in values)


def py_level_pairs(levels: Any, deletes: bool) -> Pairs | None:
    """The (price, size) pairs of ``levels``, a list of tuples or lists whose first two
    elements are price and size strings (more are ignored), or None when any level
    breaks the rules of :func:`check_levels`. ``levels`` itself when each level is a
    2-tuple already (msgspec's ``tuple[str, str]``), else a new list of 2-tuples."""
    if levels.__class__ is not list:
        return None
    # Binance levels come as 2-tuples, kept as they are; OKX's 4-element ones are cut.
    first = levels[0] if levels else None
    pairs = [
        lvl
        for lvl in (levels if first.__class__ is tuple and len(first) == 2 else ())
        if lvl.__class__ is tuple
        and len(lvl) == 2
        and lvl[0].__class__ is str
        and lvl[1].__class__ is str
    ]
    if len(pairs) != len(levels):
        pairs = [
            (lvl[0], lvl[1])
            for lvl in levels
            if (lvl.__class__ is tuple or lvl.__class__ is list)
            and len(lvl) >= 2
            and lvl[0].__class__ is str
            and lvl[1].__class__ is str
        ]
        if len(pairs) != len(levels):
            return None
    else:
        pairs = levels
    return pairs if _levels_valid(pairs, deletes) else None


def _levels_valid(levels: Pairs, deletes: bool) -> bool:
    if len(levels) >= _BULK_FROM and _bulk_ok(levels, deletes):
        return True
    sizes = _decimal_text if deletes else _positive_text
    return all(
        _positive_text(price) is not None and sizes(size) is not None for price, size in levels
    )


class Checks(NamedTuple):
    positive_ok: Callable[..., bool]
    decimal_ok: Callable[..., bool]
    level_pairs: Callable[[Any, bool], Pairs | None]
    native: bool


PYTHON_CHECKS = Checks(py_positive_ok, py_decimal_ok, py_level_pairs, native=False)


def _load_native() -> Checks | None:
    try:
        module = importlib.import_module("operators._book_native")
    except ImportError:  # not built here (no cargo): the Python checks serve
        return None
    try:
        return Checks(module.positive_ok, module.decimal_ok, module.level_pairs, native=True)
    except AttributeError:  # an extension built before the checks existed
        return None


NATIVE_CHECKS = _load_native()


def number_checks() -> Checks:
    """The checks a parser built now uses: native where built, unless
    ``CANDLEWAX_NATIVE_BOOK=0``."""
    if NATIVE_CHECKS is None or os.environ.get("CANDLEWAX_NATIVE_BOOK", "1") == "0":
        return PYTHON_CHECKS
    return NATIVE_CHECKS
