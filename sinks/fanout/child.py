"""Main of a fan-out server process (``processes: N`` >= 1; see ``processes.py``).

Runs an ordinary :class:`FanoutServer` on its own event loop and GIL, fed by the
flow's process over a Unix socket (``feed.py``). EOF on that socket (the flow
stopped, or its process died) stops the server: queued messages are sent, then
every client gets 1001. Ctrl-C goes to the parent; this process ignores it and
stops when the parent closes the feed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

import orjson

from candlewax.config import WebsocketSink
from sinks.fanout.feed import FRAMES, HEADER, METRICS, METRICS_REQUEST, RECORDS, SKIPPED
from sinks.fanout.server import FanoutServer
from sources.frames import RawFrame

METRICS_WAIT_S = 2.0


def main(cfg: dict[str, Any], sock: socket.socket, ready: Any, reuse_port: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    upstream = _UpstreamMetrics(writer)
    server.upstream_metrics = upstream.fetch
    try:
        while True:
            try:
                size, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                return  # the flow closed its end
            if kind == RECORDS:
                hub.ingest(orjson.loads(payload))
            elif kind == FRAMES:
                hub.ingest_frames([_frame_item(item) for item in orjson.loads(payload)])
            elif kind == SKIPPED:
                hub.encode_errors += int(payload)
            elif kind == METRICS:
                upstream.arrived(payload)
            # No yield here: readexactly() returns at once while the reader holds
            # whole messages, so every batch that arrived together is dispatched in
            # one loop iteration and each client gets one socket write for all of
            # them (a yield per batch meant a write per client per batch: the
            # 1,000-client benchmark fell seconds behind). What one read brings is
            # bounded by the stream reader's buffer.
    finally:
        await server.stop()


class _UpstreamMetrics:
    """/metrics asks the flow process for its Prometheus text (one byte up the feed
    socket); the answer comes back in the stream as a METRICS message."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.last: bytes | None = None
        self.waiters: list[asyncio.Future[bytes]] = []

    async def fetch(self) -> bytes | None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.writer.write(METRICS_REQUEST)
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
