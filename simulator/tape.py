"""A capture turned into the simulator's tape: the frames it can send, indexed.

Each entry keeps the frame text exactly as recorded plus what the simulator
needs to know without re-parsing: the subscription key it belongs to, and for
order-book messages the parsed levels and sequence ids. Book snapshots found in
the capture out of band (Binance REST depth) seed the simulator's books; they
are not sent on the WebSocket. Subscription acks and other control frames of
the capture are dropped: the simulator answers subscriptions itself. What a
frame means is the venue's (``VenueSim.tape_builder``, :mod:`simulator.venues`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from simulator.tape_types import SNAPSHOT, UPDATE, Entry, Seed, Tape, TapeBuilder
from simulator.venues import venue_sim
from sources.frames import RawFrame
from sources.replay import read_capture

__all__ = ["SNAPSHOT", "UPDATE", "Entry", "Seed", "Tape", "TapeBuilder", "load_tape"]


def load_tape(path: str | Path, venue: str, limit: int | None = None) -> Tape:
    """Read a capture (any format ``sources.replay`` knows); ``limit`` keeps the first N frames."""
    builder = venue_sim(venue).tape_builder()
    frames: Iterator[RawFrame] = read_capture(path, venue)
    if limit is not None:
        frames = itertools.islice(frames, limit)
    for frame in frames:
        builder.add(frame)
    return builder.finish()
