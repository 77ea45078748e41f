"""Sink writers (the ``write_batch`` / ``close`` protocol of ``sinks/``) that feed a
fan-out server: one for records, one for raw frames. Each holds the shared
server for its (host, port) from construction to ``close``."""

from __future__ import annotations

from candlewax import metrics
from candlewax.config import WebsocketSink
from sinks.fanout.hub import FrameItem, Record
from sinks.fanout.threaded import acquire, release


class FanoutWriter:
    def __init__(self, name: str, cfg: WebsocketSink) -> None:
        self.name = name
        self.server = acquire(cfg)
        self._open = True

    def write_batch(self, records: list[Record]) -> None:
        if self.server.publish(records):
            metrics.SINK_RECORDS.labels(self.name).inc(len(records))
        else:
            metrics.SINK_DROPS.labels(self.name).inc(len(records))

    def close(self) -> None:
        if self._open:
            self._open = False
            release(self.server)


class RawFrameWriter:
    """Items are ``(RawFrame, unified symbol or None)``, as the recorder sink gets them."""

    def __init__(self, name: str, cfg: WebsocketSink) -> None:
        self.name = name
        self.server = acquire(cfg)
        self._open = True

    def write_batch(self, items: list[FrameItem]) -> None:
        if not self.server.publish_frames(items):
            metrics.SINK_DROPS.labels(self.name).inc(len(items))

    def close(self) -> None:
        if self._open:
            self._open = False
            release(self.server)
