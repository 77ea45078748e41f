"""A capture turned into the simulator's tape: the frames it can send, indexed.

Each entry keeps the frame text exactly as recorded plus what the simulator
needs to know without re-parsing: the subscription key it belongs to, and for
order-book messages the parsed levels and sequence ids. Binance REST depth
snapshots found in the capture seed the simulator's books; they are not sent
on the WebSocket. Subscription acks and other control frames of the capture
are dropped: the simulator answers subscriptions itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.okx import BOOK_CHANNELS
from sources.replay import read_capture

BINANCE_VENUES = ("binance", "binance-usdm")
OKX_BOOK_CHANNELS = BOOK_CHANNELS
SEQ_BASE = 1000  # first synthesized OKX seqId of each book
UPDATE, SNAPSHOT = "update", "snapshot"


def binance_key(stream: str) -> str:
    """Subscription key of a Binance stream: lowercase, depth speed ignored.

    ``btcusdt@depth@100ms`` and ``btcusdt@depth`` name the same diffs here, so a
    client asking for another update speed still gets the recorded ones."""
    stream = stream.lower()
    parts = stream.split("@")
    if len(parts) == 3 and parts[1] == "depth" and parts[2].endswith("ms"):
        return f"{parts[0]}@depth"
    return stream


def okx_key(arg: dict[str, Any]) -> str:
    """Subscription key of an OKX arg; every incremental book channel is one key."""
    channel = str(arg.get("channel", ""))
    family = "books" if channel in OKX_BOOK_CHANNELS else channel
    inst = arg.get("instId") or arg.get("instType") or arg.get("instFamily") or ""
    return f"{family}:{inst}"


@dataclass(slots=True)
class Entry:
    """One sendable frame; ``book`` is set for order-book messages only."""

    index: int
    ts: int  # recorded receive time, microseconds
    key: str
    text: str
    book: str | None = None  # Binance: native symbol; OKX: subscription key
    action: str = UPDATE
    depth_no: int = 0  # 1-based number among the tape's book updates, 0 otherwise
    bids: list[list[str]] = field(default_factory=list)
    asks: list[list[str]] = field(default_factory=list)
    first_id: int | None = None  # Binance U
    last_id: int | None = None  # Binance u / synthesized OKX seqId
    prev_id: int | None = None  # synthesized OKX prevSeqId
    ts_text: str = ""  # OKX data ts (ms text)


@dataclass
class BinanceSeed:
    last_update_id: int
    bids: list[list[str]]
    asks: list[list[str]]


@dataclass
class Tape:
    venue: str
    entries: list[Entry]
    seeds: dict[str, BinanceSeed]  # Binance native symbol -> first REST snapshot
    skipped: int = 0  # control frames and frames the simulator cannot classify

    @property
    def depth_updates(self) -> int:
        return sum(1 for e in self.entries if e.depth_no)

    def keys(self) -> set[str]:
        return {e.key for e in self.entries}


def load_tape(path: str | Path, venue: str, limit: int | None = None) -> Tape:
    """Read a capture (any format ``sources.replay`` knows); ``limit`` keeps the first N frames."""
    if venue not in (*BINANCE_VENUES, "okx"):
        raise ValueError(f"the simulator speaks binance, binance-usdm and okx, not {venue!r}")
    frames: Iterator[RawFrame] = read_capture(path, venue)
    if limit is not None:
        frames = itertools.islice(frames, limit)
    builder = _BinanceBuilder(venue) if venue in BINANCE_VENUES else _OkxBuilder(venue)
    for frame in frames:
        builder.add(frame)
    return builder.finish()


class _Builder:
    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.entries: list[Entry] = []
        self.seeds: dict[str, BinanceSeed] = {}
        self.skipped = 0
        self.depth_count = 0

    def add(self, frame: RawFrame) -> None:
        try:
            if not self._add(frame):
                self.skipped += 1
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, IndexError):
            self.skipped += 1

    def _add(self, frame: RawFrame) -> bool:
        raise NotImplementedError

    def _entry(self, frame: RawFrame, key: str) -> Entry:
        entry = Entry(len(self.entries), frame.ts_ingest, key, frame.text)
        self.entries.append(entry)
        return entry

    def _number(self, entry: Entry) -> None:
        self.depth_count += 1
        entry.depth_no = self.depth_count

    def finish(self) -> Tape:
        return Tape(self.venue, self.entries, self.seeds, self.skipped)


class _BinanceBuilder(_Builder):
    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._pending_seed: BinanceSeed | None = None  # symbol-less snapshot before any diff
        self._last_symbol: str | None = None

    def _add(self, frame: RawFrame) -> bool:
        obj = orjson.loads(frame.text)
        if frame.hint is not None and frame.hint.startswith(SNAPSHOT_HINT):
            seed = BinanceSeed(int(obj["lastUpdateId"]), obj["bids"], obj["asks"])
            symbol = frame.hint[len(SNAPSHOT_HINT) :].upper() or self._last_symbol
            if symbol is None:
                self._pending_seed = seed
            else:
                self.seeds.setdefault(symbol, seed)
            return True
        stream = obj.get("stream")
        data = obj.get("data")
        if not isinstance(stream, str) or not isinstance(data, dict):
            return False  # acks, errors, raw (non-combined) events
        entry = self._entry(frame, binance_key(stream))
        if data.get("e") == "depthUpdate":
            symbol = str(data["s"]).upper()
            entry.book = symbol
            entry.bids, entry.asks = data["b"], data["a"]
            entry.first_id, entry.last_id = int(data["U"]), int(data["u"])
            self._number(entry)
            self._last_symbol = symbol
            if self._pending_seed is not None:
                self.seeds.setdefault(symbol, self._pending_seed)
                self._pending_seed = None
        return True


class _OkxBuilder(_Builder):
    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._seq: dict[str, int] = {}

    def _add(self, frame: RawFrame) -> bool:
        if frame.text == "pong":
            return False
        obj = orjson.loads(frame.text)
        arg = obj.get("arg")
        if "event" in obj or not isinstance(arg, dict) or "data" not in obj:
            return False
        key = okx_key(arg)
        entry = self._entry(frame, key)
        if arg.get("channel") in OKX_BOOK_CHANNELS:
            data = obj["data"][0]
            entry.book = key
            entry.action = SNAPSHOT if obj.get("action") == SNAPSHOT else UPDATE
            entry.bids, entry.asks = data["bids"], data["asks"]
            entry.ts_text = str(data.get("ts", ""))
            # The captures predate seqId: synthesize a gap-free chain per book.
            last = self._seq.get(key)
            if entry.action == SNAPSHOT or last is None:
                entry.prev_id, entry.last_id = -1, (last or SEQ_BASE - 1) + 1
            else:
                entry.prev_id, entry.last_id = last, last + 1
                self._number(entry)
            self._seq[key] = entry.last_id
        return True
