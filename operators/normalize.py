"""Raw frames -> keyed items; anything a parser cannot handle becomes a dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from candlewax.schema import make_dead_letter
from operators.events import DepthMsg
from sources.frames import RawFrame
from sources.venue import Item, Parser


@dataclass(slots=True)
class VenueCounts:
    frames: int = 0
    items: int = 0
    dead_letters: int = 0


class Normalizer:
    """Calls the venue's parser per frame and keys each item by ``"venue:symbol"``
    (``"venue:"`` for items without a symbol: venue status, dead letters)."""

    def __init__(self, parsers: dict[str, Parser]) -> None:
        self.parsers = parsers
        self.stats: dict[str, VenueCounts] = {}

    def __call__(self, frame: RawFrame) -> list[tuple[str, Item]]:
        venue = frame.venue
        counts = self.stats.get(venue)
        if counts is None:
            counts = self.stats[venue] = VenueCounts()
        counts.frames += 1
        parser = self.parsers.get(venue)
        if parser is None:
            return self._dead(frame, counts, f"no parser for venue {venue!r}")
        try:
            keyed: list[tuple[str, Item]] = []
            for item in parser.parse(frame):
                symbol = item.symbol if isinstance(item, DepthMsg) else item.get("symbol")
                keyed.append((f"{venue}:{symbol or ''}", item))
        except Exception as exc:  # FrameError, or a parser bug: neither may stop the flow
            return self._dead(frame, counts, f"{type(exc).__name__}: {exc}")
        counts.items += len(keyed)
        return keyed

    def _dead(self, frame: RawFrame, counts: VenueCounts, reason: str) -> list[tuple[str, Item]]:
        counts.dead_letters += 1
        letter = make_dead_letter(frame.venue, frame.ts_ingest, reason, frame.text)
        return [(frame.venue + ":", letter)]
