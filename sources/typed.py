"""The fast contract of a venue parser: typed decoding first, the careful path behind it.

A parser has two ways through a frame (docs/sources.md, "Writing a venue parser"):

- ``parse(frame)``, the careful path: ``orjson.loads`` and hand checks. It is the
  authority: it decides every dead letter and writes its reason.
- ``typed(frame)``, the fast path: one msgspec decode into a :class:`WireStruct` (a
  superset of the venue's message kinds, every field typed), dispatch in Python on
  the kind field, the numbers checked in bulk (``sources.numbers``), records built as
  dict displays and returned already keyed. It *declines* any frame it is not sure
  of by raising (any exception: :class:`Decline`, a msgspec error, a FrameError), and
  the Normalizer then runs the careful path on that frame.

So the typed path only has to be right on what it accepts: for every frame it
returns items for, the careful path returns the same items (tests/test_typed_decode.py
checks every frame of every bundled capture, and mutated frames). Three rules keep
that true:

1. Structs forbid unknown fields, and :data:`WireInt` stays inside orjson's integer
   range: msgspec skips unknown values without converting them (``1e400``, which
   orjson refuses) and keeps integers beyond 64 bits (orjson makes them floats).
2. Accept only what the careful path accepts with the same value: same presence
   and type tests (a field absent and a field ``null`` are both ``None`` here and
   both ``None`` for ``dict.get``), same number rules, otherwise decline.
3. No side effect before the last check: the symbol lookup (which fills a cache the
   careful path reads) and any per-connection state come after every decline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from candlewax.schema import make_bbo, make_trade
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg
from sources.numbers import number_checks
from sources.venue import Item, NativeSymbols

# Integers the typed path accepts: int64. orjson reads integers up to 2**64 - 1 as int and
# larger ones as float (which the careful path refuses); msgspec keeps them all as int and
# cannot bound beyond int64, so int64 is the part of orjson's range both agree on.
WireInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

KeyedItem = tuple[str, Item]
T = TypeVar("T")


class WireStruct(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Base of a venue's wire structs: unknown fields decline (rule 1), no GC tracking
    (a decoded frame lives for one parse)."""


class Decline(Exception):
    """The typed path does not take this frame; the careful path decides."""


def decoder(kind: type[T]) -> Callable[[str | bytes], T]:
    """The bound ``decode`` of a JSON decoder for ``kind``."""
    return msgspec.json.Decoder(kind).decode


def key_items(venue: str, items: list[Item]) -> list[KeyedItem]:
    """Items keyed by ``"venue:symbol"`` (``"venue:"`` for items without a symbol:
    venue status, dead letters). The careful path's keying; the typed path builds the
    same keys from :class:`Markets`."""
    keyed: list[KeyedItem] = []
    for item in items:
        symbol = item.symbol if isinstance(item, DepthMsg) else item.get("symbol")
        keyed.append((f"{venue}:{symbol or ''}", item))
    return keyed


# What the typed path needs of one instrument: (unified symbol, key, trade template, bbo
# template). ``template.copy()`` and a few item assignments build a record at about half
# the cost of a 10-12 key dict display, in the key order of ``candlewax.schema.make_*``
# (the templates are made by them). A plain tuple: unpacking a NamedTuple goes through
# the iterator protocol, ~80 ns more per frame.
Market = tuple[str, str, dict[str, Any], dict[str, Any]]


class Markets(dict[Any, Market]):
    """Native name -> :class:`Market`, for the typed path.

    A plain dict lookup on a hit; a miss asks the parser's :class:`NativeSymbols` (whose
    cache the careful path shares), and a name that cannot be mapped raises FrameError,
    so the typed path declines and the careful path writes the reason."""

    def __init__(self, venue: str, symbols: NativeSymbols) -> None:
        super().__init__()
        self._venue = venue
        self._symbols = symbols

    def __missing__(self, native: Any) -> Market:
        symbol = self._symbols(native)
        venue = self._venue
        found = self[native] = (
            symbol,
            f"{venue}:{symbol}",
            make_trade(venue, symbol, 0, 0, "", "", "", ""),
            make_bbo(venue, symbol, 0, 0, None, None, None, "ticker"),
        )
        return found


def native_symbols(symbols: SymbolMap, venue: str, field: str) -> tuple[NativeSymbols, Markets]:
    """The careful path's symbol cache and the typed path's markets on top of it."""
    careful = NativeSymbols(symbols, field)
    return careful, Markets(venue, careful)


class TypedParser(Generic[T]):
    """What every parser on the fast contract sets up: the careful path's symbol cache
    (``_symbol``, by the venue's instrument ``field``), the typed path's markets on top
    of it, the decoder of its superset wire struct and the number checks."""

    venue: str

    def __init__(self, symbols: SymbolMap, field: str, kind: type[T]) -> None:
        self._symbols = symbols
        self._symbol, self._markets = native_symbols(symbols, self.venue, field)
        self._decode = decoder(kind)
        checks = number_checks()
        self._positive_ok = checks.positive_ok
        self._level_pairs = checks.level_pairs
