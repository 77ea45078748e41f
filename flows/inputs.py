"""Bytewax sources: one partition per configured source (live or replay).

Items are ``RawFrame`` or plain status / dead-letter dicts. ``STOP`` ends every
partition of this process cleanly (Ctrl-C, the demo's end), so the
end-of-stream reaches every operator and sink.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from candlewax.config import PipelineConfig, SourceConfig
from candlewax.schema import make_dead_letter
from candlewax.symbols import to_native
from sources.frames import RawFrame
from sources.live import ConnectionSpec, LiveFeed
from sources.registry import protocol
from sources.replay import MalformedLine, Pacer, ReplayStats, iter_capture
from sources.ws_client import ClientSettings

STOP = threading.Event()
Item = RawFrame | dict[str, Any]

_BATCH = 2000
_IDLE = timedelta(milliseconds=20)
# Frames read by replay partitions in this process (for progress displays).
replay_progress: dict[str, ReplayStats] = {}


def _now() -> datetime:
    return datetime.now(UTC)


class _ReplayPartition(StatefulSourcePartition[Item, int]):
    """Replays a capture; the snapshot is the number of items already emitted."""

    def __init__(self, key: str, src: SourceConfig, resume: int | None) -> None:
        assert src.capture is not None
        self.venue = src.venue
        self.stats = ReplayStats()
        replay_progress[key] = self.stats
        self._items = iter_capture(src.capture, src.venue, stats=self.stats)
        self._pacer = Pacer(src.pace)
        self._pos = 0
        self._pending: RawFrame | None = None
        self._awake: datetime | None = None
        for _ in range(resume or 0):
            if next(self._items, None) is None:
                break
            self._pos += 1

    def _as_item(self, item: RawFrame | MalformedLine) -> Item:
        if isinstance(item, RawFrame):
            return item
        reason = f"malformed capture line {item.path}:{item.line_no}: {item.reason}"
        return make_dead_letter(self.venue, 0, reason, item.text)

    def next_batch(self) -> list[Item]:
        if STOP.is_set():
            raise StopIteration
        batch: list[Item] = []
        self._awake = None
        while len(batch) < _BATCH:
            item = self._pending if self._pending is not None else next(self._items, None)
            self._pending = None
            if item is None:
                if not batch:
                    raise StopIteration
                break
            if isinstance(item, RawFrame):
                delay = self._pacer.delay(item.ts_ingest)
                if delay > 0:
                    self._pending = item
                    self._awake = _now() + timedelta(seconds=delay)
                    break
            batch.append(self._as_item(item))
            self._pos += 1
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._pos


class _LivePartition(StatefulSourcePartition[Item, None]):
    """A LiveFeed (its own asyncio thread) drained without blocking the worker."""

    def __init__(self, key: str, src: SourceConfig) -> None:
        venue_protocol = protocol(src.venue)
        rc = src.reconnect
        settings = ClientSettings(
            backoff_base=rc.base_delay_s,
            backoff_cap=rc.max_delay_s,
            stall_timeout=rc.stall_timeout_s,
            max_lifetime=rc.max_lifetime_s,
        )
        spec = ConnectionSpec(
            protocol=venue_protocol,
            natives=[to_native(src.venue, s) for s in src.symbols],
            channels=list(src.channels),
            ws_url=src.url,
            rest_url=src.rest_url,
            conn_prefix=f"{key}-",
            settings=settings,
        )
        self._feed = LiveFeed([spec], name=f"candlewax-{key}")
        self._closed = False
        self._awake: datetime | None = None

    def next_batch(self) -> list[Item]:
        if STOP.is_set():
            if not self._closed:
                self._feed.close()  # joins the connection thread: nothing arrives after
                self._closed = True
            batch = self._feed.poll(_BATCH)
            if batch:
                return batch
            raise StopIteration
        batch = self._feed.poll(_BATCH)
        # Nothing queued: sleep a little instead of spinning the worker.
        self._awake = None if batch else _now() + _IDLE
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._feed.close()


class PipelineSource(FixedPartitionedSource[Item, Any]):
    def __init__(self, cfg: PipelineConfig) -> None:
        self.sources = {f"{i}-{src.venue}": src for i, src in enumerate(cfg.sources)}

    def list_parts(self) -> list[str]:
        return list(self.sources)

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any
    ) -> StatefulSourcePartition[Item, Any]:
        src = self.sources[for_part]
        if src.mode == "replay":
            return _ReplayPartition(for_part, src, resume_state)
        return _LivePartition(for_part, src)


def source_for(cfg: PipelineConfig) -> PipelineSource:
    return PipelineSource(cfg)
