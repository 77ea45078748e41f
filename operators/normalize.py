"""Raw frames -> keyed items; anything a parser cannot handle becomes a dead letter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from candlewax.schema import make_dead_letter
from sources.frames import RawFrame
from sources.typed import KeyedItem, key_items
from sources.venue import Item, Parser


@dataclass(slots=True)
class VenueCounts:
    frames: int = 0
    items: int = 0
    dead_letters: int = 0


Typed = Callable[[RawFrame], list[KeyedItem]]


class Normalizer:
    """Calls the venue's parser per frame and keys each item by ``"venue:symbol"``
    (``"venue:"`` for items without a symbol: venue status, dead letters).

    A parser with a ``typed`` fast path (``sources/typed.py``) gets each frame there
    first; a frame it declines, by raising anything, goes through ``parse``, the
    careful path, whose exceptions become the dead letters. ``typed=False`` skips the
    fast path (tests and benchmarks compare the two)."""

    def __init__(self, parsers: dict[str, Parser], typed: bool = True) -> None:
        self.parsers = parsers
        self._use_typed = typed
        self.stats: dict[str, VenueCounts] = {}
        # venue -> (typed path or None, counts), made at the venue's first frame.
        self._routes: dict[str, tuple[Typed | None, VenueCounts]] = {}

    def __call__(self, frame: RawFrame) -> list[KeyedItem]:
        try:
            typed, counts = self._routes[frame.venue]
        except KeyError:
            typed, counts = self._route(frame.venue)
        counts.frames += 1
        if typed is not None:
            try:
                keyed = typed(frame)
            except Exception:  # declined: the careful path decides
                return self._careful(frame, counts)
            counts.items += len(keyed)
            return keyed
        return self._careful(frame, counts)

    def _route(self, venue: str) -> tuple[Typed | None, VenueCounts]:
        counts = self.stats.get(venue)
        if counts is None:
            counts = self.stats[venue] = VenueCounts()
        parser = self.parsers.get(venue)
        typed: Typed | None = getattr(parser, "typed", None) if self._use_typed else None
        route = self._routes[venue] = (typed, counts)
        return route

    def _careful(self, frame: RawFrame, counts: VenueCounts) -> list[tuple[str, Item]]:
        venue = frame.venue
        parser = self.parsers.get(venue)
        if parser is None:
            return self._dead(frame, counts, f"no parser for venue {venue!r}")
        try:
            keyed = key_items(venue, parser.parse(frame))
        except Exception as exc:  # FrameError, or a parser bug: neither may stop the flow
            return self._dead(frame, counts, f"{type(exc).__name__}: {exc}")
        counts.items += len(keyed)
        return keyed

    def _dead(self, frame: RawFrame, counts: VenueCounts, reason: str) -> list[tuple[str, Item]]:
        counts.dead_letters += 1
        letter = make_dead_letter(frame.venue, frame.ts_ingest, reason, frame.text)
        return [(frame.venue + ":", letter)]
