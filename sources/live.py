"""A live source partition: its connections on one asyncio loop in a daemon thread.

The dataflow side (flows/) polls without blocking; frames and status dicts
arrive in one thread-safe queue in receive order, bounded by pausing the readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from candlewax.schema import make_status, now_us
from sources.frames import RawFrame
from sources.venue import VenueProtocol
from sources.ws_client import ClientSettings, VenueConnection

Item = RawFrame | dict[str, Any]


@dataclass(frozen=True)
class ConnectionSpec:
    """What one connection subscribes to (URLs default to the venue's)."""

    protocol: VenueProtocol
    natives: list[str]
    channels: list[str]
    ws_url: str | None = None
    rest_url: str | None = None
    conn_prefix: str = ""
    settings: ClientSettings = field(default_factory=ClientSettings)


def market_specs(spec: ConnectionSpec, symbols: list[str]) -> list[ConnectionSpec]:
    """``spec`` as one spec per market for venues whose markets have their own endpoint
    and share native names (Bybit spot / linear: the protocol's ``market_specs``)."""
    split = getattr(spec.protocol, "market_specs", None)
    return [spec] if split is None else list(split(spec, symbols))


class LiveFeed:
    """Runs the given connections until :meth:`close`; :meth:`poll` drains their output."""

    def __init__(
        self,
        specs: Sequence[ConnectionSpec],
        name: str = "candlewax-live",
        max_queued: int = 200_000,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.max_queued = max_queued
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        # Built here so that bad specs (unknown channel, ...) raise in the caller.
        self.connections = [
            VenueConnection(
                spec.protocol,
                spec.ws_url,
                spec.rest_url,
                spec.natives,
                spec.channels,
                self._queue.put,
                self._queue.put,
                spec.conn_prefix,
                spec.settings,
                self._full,
            )
            for spec in specs
        ]
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def poll(self, max_items: int = 1000) -> list[Item]:
        """Up to ``max_items`` frames/status dicts, without blocking."""
        items: list[Item] = []
        get = self._queue.get_nowait
        try:
            while len(items) < max_items:
                items.append(get())
        except queue.Empty:
            pass
        return items

    def close(self, timeout: float = 10.0) -> None:
        """Stop every connection, close the sockets and end the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Items waiting for :meth:`poll` (about; the thread keeps adding)."""
        return self._queue.qsize()

    @property
    def backpressure_waits(self) -> int:
        """How often a connection stopped reading because the queue was full."""
        return sum(conn.backpressure_waits for conn in self.connections)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> LiveFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _full(self) -> bool:
        # Readers pause above the bound, so TCP pushes back on the venue instead of
        # memory growing while the dataflow is slow.
        return self._queue.qsize() >= self.max_queued

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await asyncio.gather(*(self._guard(conn, self._stop) for conn in self.connections))

    async def _guard(self, conn: VenueConnection, stop: asyncio.Event) -> None:
        """A connection that fails (a bug or a bad URL) reports it; the others go on."""
        try:
            await conn.run(stop)
        except Exception as exc:
            text = "".join(traceback.format_exception_only(exc)).strip()
            self._queue.put(make_status(conn.venue, None, "error", now_us(), text[:500]))
