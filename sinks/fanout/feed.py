"""The pipe from the flow's process to a fan-out server process.

A Unix stream socket pair carries length-prefixed messages: encoded record
batches (orjson, encoded once for every server process), raw frames, counts of
records that could not be encoded, and the flow process's Prometheus text.
Why a socket and not a shared-memory ring: the sink hands over one batch per
engine tick (about a thousand a second at most), so the syscall per batch is
noise next to the JSON work; the kernel buffer absorbs bursts, the reader is
an ordinary asyncio stream on the server's loop (no extra thread there), and
a dead peer shows up as EOF / EPIPE instead of a ring that silently stops.

The flow never blocks on it: the socket is non-blocking; what the kernel does
not take waits in a bounded backlog that a small thread drains while the server
catches up; a message that would overflow the backlog is dropped and counted
by the caller.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

HEADER = struct.Struct("!IB")  # payload bytes, kind
RECORDS, FRAMES, SKIPPED, METRICS = 1, 2, 3, 4
METRICS_REQUEST = b"M"  # the only thing a server process sends back: "your metrics, please"
SOCKET_BUFFER = 4 * 1024 * 1024  # kernel buffer asked for on the sending side
MAX_BACKLOG = 32 * 1024 * 1024  # bytes waiting in this process before messages are dropped


class Feed:
    """The sending end. ``send`` may be called from any thread and never blocks."""

    def __init__(self, sock: socket.socket, max_backlog: int = MAX_BACKLOG) -> None:
        self.sock = sock
        self.max_backlog = max_backlog
        self.closed = False  # peer gone or closing: every send fails
        self._backlog = bytearray()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # a capped buffer only means an earlier backlog
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self._drainer = threading.Thread(
            target=self._drain_loop, name="candlewax-fanout-feed", daemon=True
        )
        self._drainer.start()

    def send(self, kind: int, payload: bytes) -> bool:
        """Queue one message; False if it was dropped (backlog full, or the peer is gone)."""
        message = HEADER.pack(len(payload), kind) + payload
        with self._lock:
            if self.closed:
                return False
            if self._backlog:
                if len(self._backlog) + len(message) > self.max_backlog:
                    return False
                self._backlog += message
                return True
            try:
                sent = self.sock.send(message)
            except BlockingIOError:
                sent = 0
            except OSError:  # EPIPE / ECONNRESET: the server process is gone
                self.closed = True
                return False
            if sent < len(message):
                self._backlog += memoryview(message)[sent:]
                self._wake.notify()
            return True

    def fileno(self) -> int:
        return self.sock.fileno()

    def requests(self) -> int:
        """Metrics requests the server process sent (call when the socket is readable)."""
        with self._lock:
            if self.closed:
                return 0
            try:
                return len(self.sock.recv(4096))
            except BlockingIOError:
                return 0
            except OSError:
                self.closed = True
                return 0

    def backlog(self) -> int:
        with self._lock:
            return len(self._backlog)

    def _drain_loop(self) -> None:
        while True:
            with self._lock:
                while not self._backlog and not self.closed:
                    self._wake.wait()
                if self.closed:
                    return
            select.select([], [self.sock], [], 0.2)  # the GIL is free meanwhile
            with self._lock:
                if self.closed:
                    return
                try:
                    sent = self.sock.send(self._backlog)
                except BlockingIOError:
                    continue
                except OSError:
                    self.closed = True
                    self._backlog.clear()
                    return
                del self._backlog[:sent]
                if not self._backlog:
                    self._wake.notify_all()

    def close(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the backlog to reach the socket, then end the
        stream: the server reads everything sent, then EOF, and stops."""
        with self._lock:
            self._wake.wait_for(lambda: not self._backlog or self.closed, timeout)
            self.closed = True
            self._backlog.clear()
            self._wake.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self._drainer.join(1.0)
        self.sock.close()
