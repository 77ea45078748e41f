"""The unit that flows from every source (live or replay) into normalize."""

from __future__ import annotations

from typing import NamedTuple


class RawFrame(NamedTuple):
    """One raw message exactly as received.

    ``hint`` is None for WebSocket text frames. REST bodies injected into the
    stream (Binance depth snapshots) carry ``"depth_snapshot:<NATIVE_SYMBOL>"``;
    ``"depth_snapshot:"`` (empty symbol) means "the only symbol of this stream",
    as in one-symbol captures.
    """

    venue: str
    conn_id: str
    ts_ingest: int  # microseconds since the epoch, local receive time
    text: str
    hint: str | None = None


SNAPSHOT_HINT = "depth_snapshot:"
