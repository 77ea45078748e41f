"""Raw frames -> keyed items; anything a parser cannot handle becomes a dead letter."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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

    def batch(self, batch: Iterable[Any], other: Callable[[Any], KeyedItem]) -> list[KeyedItem]:
        """``self(frame)`` of every frame of ``batch``, concatenated in order; any other
        item (a live source's status dict) is ``other(item)`` in its place.

        The hot loop of the fused pipelines: per frame, one parser call and one
        ``list.extend``; the counts are added per run of frames of one venue."""
        out: list[KeyedItem] = []
        extend = out.extend
        routes = self._routes
        venue: str | None = None
        typed: Typed | None = None
        counts = VenueCounts()  # a placeholder until the first frame
        frames = 0  # frames of `venue` in this run
        start = 0  # where this run's typed items begin in `out`, careful ones left out
        for item in batch:
            if item.__class__ is not RawFrame:
                counts.frames += frames
                counts.items += len(out) - start
                out.append(other(item))
                frames, start = 0, len(out)
                continue
            if item.venue != venue:
                counts.frames += frames
                counts.items += len(out) - start
                venue = item.venue
                route = routes.get(venue)
                typed, counts = route if route is not None else self._route(venue)
                frames, start = 0, len(out)
            frames += 1
            if typed is not None:
                try:
                    extend(typed(item))
                    continue
                except Exception:  # declined: the careful path decides
                    pass
            before = len(out)
            extend(self._careful(item, counts))  # counts its own items
            start += len(out) - before
        counts.frames += frames
        counts.items += len(out) - start
        return out

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
