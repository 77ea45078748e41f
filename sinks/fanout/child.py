"""Main of a fan-out server process (``processes: N`` >= 1; see ``processes.py``).

Runs an ordinary :class:`FanoutServer` on its own event loop and GIL, fed by the
flow's process over a Unix socket (``feed.py``). EOF on that socket (the flow
stopped, or its process died) stops the server: queued messages are sent, then
every client gets 1001.

The feed is read with one ``recv_into`` of up to ``FEED_READ_BYTES`` per loop
iteration, and every whole message in it is dispatched before the loop writes to
any client: a server that fell behind takes everything that waited in one
iteration, so each client gets one socket write for all of it. (An asyncio
stream reads at most 256 KiB per iteration: catching up then cost a write per
client per 256 KiB, which on a starved 2-core machine kept the server behind.)
Ctrl-C goes to the parent; this process ignores it and stops when the parent
closes the feed.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from typing import Any

import orjson

from candlewax.config import WebsocketSink
from sinks.fanout.feed import FRAMES, HEADER, METRICS, METRICS_REQUEST, RECORDS, SKIPPED
from sinks.fanout.hub import Hub
from sinks.fanout.server import FanoutServer
from sources.frames import RawFrame

METRICS_WAIT_S = 2.0
GC_YOUNG_THRESHOLD = 20_000
FEED_READ_BYTES = 4 * 1024 * 1024  # most the server takes from the feed in one loop iteration


def main(cfg: dict[str, Any], sock: socket.socket, ready: Any, reuse_port: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The server makes a dict per record. With the default young-generation threshold
    # (700) a collection runs every few feed batches and promotes the records in flight,
    # which adds up to a full collection of every connection's objects about every 10 s
    # (130-170k objects; 60-300 ms of stall with 1,000 clients on a loaded 2-core box).
    # Records die by reference counting: collecting young objects less often promotes
    # fewer of them. What the imports made lives as long as the process: never scan it.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    asyncio.run(_serve(WebsocketSink.model_validate(cfg), sock, ready, reuse_port))


async def _serve(cfg: WebsocketSink, sock: socket.socket, ready: Any, reuse_port: bool) -> None:
    server = FanoutServer(cfg, reuse_port=reuse_port)
    try:
        address = await server.start()
    except OSError as exc:
        ready.send(("error", exc.errno, exc.strerror or str(exc)))
        return
    ready.send(("ready", address, server.http_address))
    hub = server.hub
    assert hub is not None
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    transport, reader = await loop.connect_accepted_socket(lambda: _FeedReader(hub, ended), sock)
    upstream = _UpstreamMetrics(transport)
    reader.upstream = upstream
    server.upstream_metrics = upstream.fetch
    try:
        await ended  # the flow closed its end
    finally:
        await server.stop()


class _FeedReader(asyncio.BufferedProtocol):
    """Length-prefixed feed messages (``feed.py``) into the hub, as they arrive."""

    def __init__(self, hub: Hub, ended: asyncio.Future[None]) -> None:
        self.hub = hub
        self.ended = ended
        self.upstream: _UpstreamMetrics | None = None
        self.buffer = bytearray(FEED_READ_BYTES)
        self.used = 0  # bytes of a message not complete yet, at the buffer's start

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.used == len(self.buffer):  # one message bigger than the buffer: grow
            self.buffer.extend(bytes(len(self.buffer)))
        return memoryview(self.buffer)[self.used :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self.used + nbytes
        buffer, hub = self.buffer, self.hub
        pos = 0
        with memoryview(buffer) as view:
            while end - pos >= HEADER.size:
                size, kind = HEADER.unpack_from(buffer, pos)
                start = pos + HEADER.size
                if end - start < size:
                    break
                pos = start + size
                payload = view[start:pos]
                if kind == RECORDS:
                    hub.ingest(orjson.loads(payload))
                elif kind == FRAMES:
                    hub.ingest_frames([_frame_item(item) for item in orjson.loads(payload)])
                elif kind == SKIPPED:
                    hub.encode_errors += int(bytes(payload))
                elif kind == METRICS and self.upstream is not None:
                    self.upstream.arrived(bytes(payload))
        buffer[: end - pos] = buffer[pos:end]  # the start of the next message
        self.used = end - pos

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost ends the server

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class _UpstreamMetrics:
    """/metrics asks the flow process for its Prometheus text (one byte up the feed
    socket); the answer comes back in the stream as a METRICS message."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.last: bytes | None = None
        self.waiters: list[asyncio.Future[bytes]] = []

    async def fetch(self) -> bytes | None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(METRICS_REQUEST)  # type: ignore[attr-defined]
        try:
            return await asyncio.wait_for(waiter, METRICS_WAIT_S)
        except TimeoutError:  # the flow is too busy to answer: the last text it sent
            return self.last

    def arrived(self, payload: bytes) -> None:
        self.last = payload
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(payload)


def _frame_item(item: list[Any]) -> tuple[RawFrame, str | None]:
    venue, conn_id, ts_ingest, text, hint, symbol = item
    return RawFrame(venue, conn_id, ts_ingest, text, hint), symbol
