"""Per-client outgoing path: coalesced writes, bounded backlog, drops, lag.

The hub hands a client the data of one event-loop iteration in one
:meth:`Outbox.put` (one byte string per subscription group, see ``hub.py``).
While the client keeps up (nothing waiting, room under ``write_limit`` in its
socket buffer) ``put`` is a ``transport.write`` right there: no list, no task
switch, no second pass. Otherwise the bytes join what waits (``flush`` writes
it in the hub's write pass, one write for all of it), and what the socket does
not take waits in a queue that a sender task drains as the socket accepts it.
Control messages always go through ``flush``, so they keep their place behind
data that is already waiting.

The queue holds at most ``limit`` data messages: when new data would overflow
it, the whole data backlog is dropped (stale market data is worth less than
fresh), counted, and the client is told with a ``dropped`` message placed
where the gap is. Control messages (replies, snapshots, drop notices) are never
dropped; a client with more than ``limit`` of them, or ``max_control_bytes`` of
them, waiting is disconnected (it asks but does not read). ``lagging_since``
records when the client first overflowed without draining since; the server
disconnects it after ``max_lag_s``. A stalled client therefore costs at most
``limit`` data messages plus ``max_control_bytes`` of replies plus one socket
buffer, and never blocks the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from sinks.fanout.wire import control_frame

DATA, CONTROL, NOTICE = 0, 1, 2


class Outbox:
    def __init__(
        self,
        conn: ServerConnection,
        limit: int,
        write_limit: int,
        on_pending: Callable[[Outbox], None],
        max_control_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        """``on_pending(outbox)`` is called when the outbox gets its first pending bytes
        of an iteration: the hub then calls :meth:`flush` soon (once)."""
        self.conn = conn
        self.transport: Any = conn.transport
        self.limit = limit
        self.write_limit = write_limit
        self._on_pending = on_pending
        self._pending: list[tuple[bytes, int, int]] = []  # (frames, data messages, kind)
        # (frames, data message count, kind, dropped count a notice reports)
        self.entries: deque[tuple[bytes, int, int, int]] = deque()
        self.queued = 0  # data messages waiting
        self.controls = 0  # control entries waiting
        self.control_bytes = 0  # their size: snapshots can be large
        self.max_control_bytes = max_control_bytes
        self.sent = 0  # messages handed to the socket
        self.dropped_total = 0
        self.unreported = 0  # dropped but not yet told
        self.lagging_since: float | None = None
        self.closed = False
        self._wake = asyncio.Event()

    def put(self, frames: bytes, count: int, pieces: list[tuple[bytes, int]] | None = None) -> None:
        """``count`` data messages (droppable) framed in ``frames``: written at once if
        nothing waits before them and the socket buffer has room for them. ``pieces``:
        the same bytes as (frames, count) per dispatch: if they must wait, they wait
        (and are dropped) piece by piece, as if put one by one."""
        if self.closed:
            return
        if not self._pending:
            transport = self.transport
            if (
                not self.entries
                and len(frames) <= self.write_limit - transport.get_write_buffer_size()
                and self.conn.protocol.state is State.OPEN
            ):
                transport.write(frames)
                self.sent += count
                return
            self._on_pending(self)  # flushed in the hub's write pass, after what waits
        if pieces is None or len(pieces) == 1:
            self._pending.append((frames, count, DATA))
        else:
            self._pending.extend((piece, n, DATA) for piece, n in pieces)

    def put_control(self, frames: bytes) -> None:
        """One control message (never dropped)."""
        if self.closed:
            return
        if not self._pending:
            self._on_pending(self)
        self._pending.append((frames, 0, CONTROL))

    def flush(self) -> None:
        """Write what was put since the last flush in one write, as far as the socket
        buffer has room (the first piece always, so big messages progress); queue the
        rest."""
        pending = self._pending
        if not pending or self.closed:
            return
        self._pending = []
        first = 0
        if not self.entries and self.conn.protocol.state is State.OPEN:
            room = self.write_limit - self.transport.get_write_buffer_size()
            while first < len(pending) and room > 0:
                room -= len(pending[first][0])
                first += 1
            if first:
                pieces = pending[:first]
                self.transport.write(pieces[0][0] if first == 1 else b"".join(p[0] for p in pieces))
                self.sent += sum(count or 1 for _, count, _ in pieces)
        for frames, count, kind in pending[first:]:
            self._enqueue(frames, count, kind)

    def _enqueue(self, frames: bytes, count: int, kind: int) -> None:
        if kind == CONTROL:
            self.entries.append((frames, 0, CONTROL, 0))
            self.controls += 1
            self.control_bytes += len(frames)
        else:
            if self.queued + count > self.limit:
                too_big = count > self.limit  # more than the whole queue: it goes too
                self._drop_backlog(count if too_big else 0)
                if too_big:
                    self._wake.set()
                    return
            self.entries.append((frames, count, DATA, 0))
            self.queued += count
        self._wake.set()

    def idle(self) -> bool:
        return not self.entries and not self._pending

    def overloaded(self) -> bool:
        """Too many undroppable messages waiting (a client that asks but never reads):
        by count or by bytes, since one snapshot can hold every book."""
        return self.controls > self.limit or self.control_bytes > self.max_control_bytes

    def _drop_backlog(self, extra: int) -> None:
        dropped = extra
        kept: deque[tuple[bytes, int, int, int]] = deque()
        for entry in self.entries:
            if entry[2] == DATA:
                dropped += entry[1]
            elif entry[2] == CONTROL:
                kept.append(entry)
            # older notices are merged into the new one
        self.entries = kept
        self.queued = 0
        self.dropped_total += dropped
        self.unreported += dropped
        if self.lagging_since is None:
            self.lagging_since = time.monotonic()
        notice = {"type": "dropped", "count": self.unreported, "total": self.dropped_total}
        self.entries.append((control_frame(notice), 0, NOTICE, self.unreported))

    async def run(self) -> None:
        """Sender task: drains the queue as fast as the socket takes it."""
        with contextlib.suppress(Exception):  # the connection went away: nothing to send to
            while not self.closed:
                if not self.entries:
                    self.lagging_since = None
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.conn.drain()  # waits while the socket buffer is over the limit
                if self.closed or self.conn.protocol.state is not State.OPEN:
                    return
                if not self.entries:
                    continue
                frames, count, kind, reported = self.entries.popleft()
                if kind == DATA:
                    self.queued -= count
                elif kind == CONTROL:
                    self.controls -= 1
                    self.control_bytes -= len(frames)
                else:
                    self.unreported -= reported
                self.transport.write(frames)
                self.sent += count or 1

    def close(self) -> None:
        self.closed = True
        self.entries.clear()
        self._pending = []
        self.queued = 0
        self.controls = 0
        self.control_bytes = 0
        self._wake.set()
