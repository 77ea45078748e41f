"""Which implementation holds a book side: the native one when it was built.

``operators._book_native`` (Rust, ``native/``) keys levels by exact fixed-point
prices (18 fractional digits); it is built by ``pip install`` where cargo is
available. Without it, or with ``CANDLEWAX_NATIVE_BOOK=0``, the pure-Python
``BookSide`` serves. Both give the same levels and text (tests/test_book_side.py
runs one against the other). A price or size the native side cannot hold exactly
(exponent, sign, > 18 fractional digits, a non-str level) raises
``NotRepresentable`` before anything changes, and the side moves to Python for
good: it falls back, it never rounds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from operators.book_side import BookSide, Level

try:
    from operators._book_native import NativeSide, NotRepresentable, apply_diff
except ImportError:  # not built here (no cargo): the pure-Python side serves
    NativeSide = None  # type: ignore[assignment,misc]
    apply_diff = None  # type: ignore[assignment]

    class NotRepresentable(ValueError):  # type: ignore[no-redef]
        """Never raised without the native side."""


__all__ = [
    "ALL_CHANGED",
    "ASK_BEST",
    "ASK_TOP",
    "BID_BEST",
    "BID_TOP",
    "NotRepresentable",
    "Side",
    "apply_diff",
    "is_native",
    "native_enabled",
    "new_side",
    "to_python",
]

# What ``apply_diff`` reports changed (native/src/diff.rs): the best level of a side
# may differ (compare its text to know), a level within a side's top n was set or
# removed. A path that cannot tell reports ALL_CHANGED.
BID_BEST, ASK_BEST, BID_TOP, ASK_TOP = 1, 2, 4, 8
ALL_CHANGED = BID_BEST | ASK_BEST | BID_TOP | ASK_TOP


class Side(Protocol):
    descending: bool

    def update(self, levels: Iterable[Level]) -> None: ...
    def replace(self, levels: Iterable[Level]) -> None: ...
    def clear(self) -> None: ...
    def top(self, n: int) -> list[Level]: ...
    def best(self) -> Level | None: ...
    def __len__(self) -> int: ...


def native_available() -> bool:
    return NativeSide is not None


def native_enabled() -> bool:
    return NativeSide is not None and os.environ.get("CANDLEWAX_NATIVE_BOOK", "1") != "0"


def new_side(descending: bool) -> Side:
    if native_enabled():
        return NativeSide(descending)
    return BookSide(descending)


def to_python(side: Side) -> BookSide:
    """The same levels in a pure-Python side."""
    python = BookSide(side.descending)
    python.replace(side.top(len(side)))
    return python


def is_native(side: Side) -> bool:
    return NativeSide is not None and isinstance(side, NativeSide)
