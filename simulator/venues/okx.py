"""OKX v5 public as the simulator serves it.

``/ws/v5/public`` with subscribe/unsubscribe ops (acked per arg), text
``ping``/``pong``, a fresh ``books`` snapshot (correct checksum) on every book
subscription, and optionally synthesized ``seqId``/``prevSeqId``
(``--okx-seq-ids``: the captures predate them).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import Any

import orjson

from operators.checksum import OKX_DEPTH, okx_checksum
from simulator.books import BookState
from simulator.tape_types import SNAPSHOT, UPDATE, Entry, TapeBuilder
from simulator.venues.base import ClientPort, VenueSim, apply_in_band, shifted_time, time_as_ms
from sources.frames import RawFrame
from sources.okx import BOOK_CHANNELS

PATH = "/ws/v5/public"
SEQ_BASE = 1000  # first synthesized seqId of each book
MAX_DEPTH = 400  # levels per side of a books / books-l2-tbt snapshot

_CHECKSUM = re.compile(r'"checksum":(-?[0-9]+)')
_DATA_OPEN = '"data":[{'
# Re-stamping: ts (trades, books, tickers) and the funding channel's times.
_TIME_FIELDS = re.compile(r'"(ts|fundingTime|nextFundingTime)":"([0-9]{12,})"')
# Laps: ts (ms text), tradeId (text), seqId/prevSeqId (integers; a prevSeqId of -1
# means "snapshot" and has no digits right after the colon, so it is kept).
_LAP_TIME = re.compile(r'"(ts)":"(\d+)"')
_LAP_ID = re.compile(r'"(tradeId)":"(\d+)"|"(seqId|prevSeqId)":(\d+)')


def okx_key(arg: dict[str, Any]) -> str:
    """Subscription key of an OKX arg; every incremental book channel is one key."""
    channel = str(arg.get("channel", ""))
    family = "books" if channel in BOOK_CHANNELS else channel
    inst = arg.get("instId") or arg.get("instType") or arg.get("instFamily") or ""
    return f"{family}:{inst}"


def corrupt_checksum(text: str) -> str:
    """The same push with its checksum changed (still a valid signed int32)."""

    def bump(match: re.Match[str]) -> str:
        value = int(match.group(1))
        return f'"checksum":{value + 1 if value < 0x7FFF_FFFF else -0x8000_0000}'

    return _CHECKSUM.sub(bump, text, count=1)


def add_seq(text: str, prev_id: int, seq_id: int) -> str:
    """Insert prevSeqId/seqId into the first data object, every other byte unchanged."""
    at = text.find(_DATA_OPEN)
    if at < 0:
        return text
    cut = at + len(_DATA_OPEN)
    return f'{text[:cut]}"prevSeqId":{prev_id},"seqId":{seq_id},{text[cut:]}'


class OkxSim(VenueSim):
    names = ("okx",)
    ws_paths = (PATH,)
    ws_url_path = PATH
    connect_hint = PATH
    snapshot_counter = "okx_snapshots"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--okx-seq-ids", action="store_true", help="add seqId/prevSeqId (OKX)")

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, object]:
        return {"okx_seq_ids": True} if args.okx_seq_ids else {}

    @property
    def seq_ids(self) -> bool:
        return bool(self.options.get("okx_seq_ids"))

    def tape_builder(self) -> TapeBuilder:
        return _OkxBuilder(self.venue)

    def apply_book(self, books: dict[str, BookState], entry: Entry) -> None:
        book = apply_in_band(books, entry)
        if book is None:
            return
        counts = book.counts
        for level in (*entry.bids, *entry.asks):
            if len(level) > 3:
                counts[level[0]] = level[3]

    # ---- connections ----

    async def on_text(self, client: ClientPort, text: str) -> None:
        if text == "ping":
            client.stats.app_pings += 1
            await client.send("pong")
            return
        try:
            request = orjson.loads(text)
            op, args = request["op"], request["args"]
            if op not in ("subscribe", "unsubscribe") or not args:
                raise ValueError(op)
            keys = [okx_key(arg) for arg in args]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            error = {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}"}
            await client.send(orjson.dumps({**error, "connId": client.conn_id}).decode())
            return
        client.stats.subscribe_requests += 1
        for key, arg in zip(keys, args, strict=True):
            if op == "subscribe":
                client.subs[key] = arg
            else:
                client.subs.pop(key, None)
        for arg in args:
            ack = {"event": op, "arg": arg, "connId": client.conn_id}
            await client.send(orjson.dumps(ack).decode())
        if op != "subscribe":
            return
        client.begin()
        # Built from the books as of the client's position, sent before any later frame.
        snapshots = [
            self._snapshot(client, key, arg)
            for key, arg in zip(keys, args, strict=True)
            if arg.get("channel") in BOOK_CHANNELS
        ]
        for snapshot in filter(None, snapshots):
            await client.send_snapshot(snapshot)
        client.stream()

    def _snapshot(self, client: ClientPort, key: str, arg: dict[str, Any]) -> str | None:
        """A ``books`` snapshot push for a subscribing client, None before the book is known."""
        book = client.market().books.get(key)
        if book is None:
            return None
        bids, asks = book.book.top(50 if arg.get("channel") == "books50-l2-tbt" else MAX_DEPTH)
        counts = book.counts
        data: dict[str, Any] = {
            "asks": [[p, s, "0", counts.get(p, "1")] for p, s in asks],
            "bids": [[p, s, "0", counts.get(p, "1")] for p, s in bids],
            "ts": book.ts_text,
            "checksum": okx_checksum(bids[:OKX_DEPTH], asks[:OKX_DEPTH]),
        }
        if self.seq_ids:
            data["prevSeqId"] = -1
            data["seqId"] = book.last_id
        push = {"arg": arg, "action": SNAPSHOT, "data": [data]}
        return orjson.dumps(push).decode()

    # ---- frames ----

    def outgoing(self, client: ClientPort, entry: Entry, text: str) -> str:
        if entry.book is not None and self.seq_ids:
            assert entry.prev_id is not None and entry.last_id is not None
            return add_seq(text, entry.prev_id, entry.last_id)
        return text

    def corrupt_checksum(self, text: str) -> str:
        return corrupt_checksum(text)

    # ---- event times and ids ----

    def event_times_ms(self, text: str) -> Iterable[int]:
        return (time_as_ms(m[2]) for m in _TIME_FIELDS.finditer(text) if m[1] == "ts")

    def restamp(self, text: str, offset_ms: int) -> str:
        def shift(match: re.Match[str]) -> str:
            return f'"{match[1]}":"{shifted_time(match[2], offset_ms)}"'

        return _TIME_FIELDS.sub(shift, text)

    def lap_times(self, text: str) -> Iterable[int]:
        return (int(m[2]) for m in _LAP_TIME.finditer(text))

    def lap_ids(self, text: str) -> Iterable[int]:
        return (int(m[2] or m[4]) for m in _LAP_ID.finditer(text))

    def lap_shift(self, text: str, dt_ms: int, did: int) -> str:
        text = _LAP_TIME.sub(lambda m: f'"ts":"{int(m[2]) + dt_ms}"', text)

        def shift_id(m: re.Match[str]) -> str:
            if m[1] is not None:
                return f'"tradeId":"{int(m[2]) + did}"'
            return f'"{m[3]}":{int(m[4]) + did}'

        return _LAP_ID.sub(shift_id, text)


class _OkxBuilder(TapeBuilder):
    """Data pushes; books get a synthesized gap-free seqId chain (snapshot: prevSeqId -1)."""

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
        if arg.get("channel") in BOOK_CHANNELS:
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
