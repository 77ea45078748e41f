"""Fan-out server processes fed by the flow (``processes: N``, N >= 1).

The server then has its own interpreter and GIL: the Bytewax engine and the
fan-out no longer take turns, so a busy engine does not delay clients. The
flow's sink encodes each batch once (orjson) and writes it to every server
process over a Unix socket (``feed.py``); it never waits for them: what a
server process cannot take in time is dropped and counted (``lost``, and the
sink's ``candlewax_sink_dropped_total``).

Several processes share the port with SO_REUSEPORT: the kernel spreads new
connections over them and each gets the full stream, so each holds the whole
state for snapshots and serves its own clients. ``/status`` and the
``candlewax_ws_*`` metrics of one HTTP request describe the process that
answered it.

A server process that dies is reported (one log line with its exit code) and
started again on the same port, with backoff; its clients reconnect (the SDK
does by itself) and get a snapshot of the state received since the restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import socket
import threading
import time
from typing import Any

import orjson

from candlewax import metrics
from candlewax.config import WebsocketSink
from sinks.base import json_default
from sinks.fanout import child
from sinks.fanout.feed import FRAMES, MAX_BACKLOG, METRICS, RECORDS, SKIPPED, Feed
from sinks.fanout.hub import FrameItem, Record
from sinks.fanout.threaded import connectable

log = logging.getLogger("candlewax.fanout")
START_TIMEOUT_S = 60.0  # a spawned interpreter imports the server first
RESTART_BACKOFF_S = (0.5, 30.0)
STOP_GRACE_S = 3.0


class ServerStartError(OSError):
    """A server process could not listen (errno and strerror as the OSError it hit)."""


class _Slot:
    """One server process and the feed into it."""

    def __init__(self, index: int, process: Any, feed: Feed) -> None:
        self.index = index
        self.process = process
        self.feed = feed
        self.failures = 0
        self.restart_at: float | None = None


class ServerProcesses:
    def __init__(self, cfg: WebsocketSink, feed_backlog: int = MAX_BACKLOG) -> None:
        """``feed_backlog``: bytes per server process waiting in this process (beyond
        the socket's buffer) before batches are dropped."""
        self.cfg = cfg
        self.count = cfg.processes
        self.feed_backlog = feed_backlog
        self.lost = 0  # record deliveries not handed to a server process (summed over them)
        self.restarts = 0
        self.address: tuple[str, int] = (cfg.host, cfg.port)
        self.http_address: tuple[str, int] | None = None
        self._slots: list[_Slot] = []
        self._ctx = multiprocessing.get_context("spawn")  # never fork a multi-threaded engine
        self._stopping = threading.Event()
        self._lost_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self, timeout: float = START_TIMEOUT_S) -> tuple[str, int]:
        port = self.cfg.port
        for index in range(self.count):
            slot = self._spawn(index, port, timeout)
            port = self.address[1]  # the others join the port the first one bound
            self._slots.append(slot)
        self._supervisor = threading.Thread(
            target=self._supervise, name="candlewax-fanout-supervisor", daemon=True
        )
        self._supervisor.start()
        return self.address

    def stop(self, timeout: float = 10.0) -> None:
        """Every process sends what it holds (``STOP_GRACE_S``), closes its clients
        with 1001 and exits."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for slot in self._slots:
            slot.feed.close(STOP_GRACE_S)
        for slot in self._slots:
            slot.process.join(timeout)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(1.0)

    def _spawn(self, index: int, port: int, timeout: float) -> _Slot:
        cfg = self.cfg.model_copy(update={"port": port})
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_recv, ready_send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=child.main,
            args=(cfg.model_dump(mode="json"), theirs, ready_send, self.count > 1),
            name=f"candlewax-fanout-{index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        ready_send.close()
        try:
            if not ready_recv.poll(timeout):
                raise TimeoutError(f"fan-out server process did not start within {timeout:g}s")
            message = ready_recv.recv()
        except EOFError:
            message = ("error", None, f"fan-out server process exited ({process.exitcode})")
        finally:
            ready_recv.close()
        if message[0] != "ready":
            process.join(5)
            ours.close()
            raise ServerStartError(message[1], message[2])
        if index == 0:
            self.address, self.http_address = message[1], message[2]
        return _Slot(index, process, Feed(ours, self.feed_backlog))

    # ---- supervision ----

    def _supervise(self) -> None:
        """Restarts dead server processes; answers their requests for this process's
        metrics (each /metrics scrape asks once)."""
        while not self._stopping.is_set():
            live = [s for s in self._slots if s.restart_at is None]
            watched: list[Any] = [s.process.sentinel for s in live] + [s.feed for s in live]
            ready: list[Any] = []
            if watched:
                ready = list(multiprocessing.connection.wait(watched, timeout=0.2))
            else:
                self._stopping.wait(0.2)
            if self._stopping.is_set():
                return
            for slot in live:
                if slot.feed in ready and slot.feed.requests():
                    slot.feed.send(METRICS, metrics.exposition())
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is None and not slot.process.is_alive():
                    self._report_death(slot)
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._restart(slot)

    def _report_death(self, slot: _Slot) -> None:
        slot.feed.close(0.0)
        slot.failures += 1
        low, high = RESTART_BACKOFF_S
        delay = min(high, low * 2 ** min(slot.failures - 1, 16))
        slot.restart_at = time.monotonic() + delay
        log.error(
            "fan-out server process %d/%d (pid %s) died with exit code %s; restarting it in "
            "%.1fs (its clients reconnect; snapshots hold what arrives from then on)",
            slot.index + 1,
            self.count,
            slot.process.pid,
            slot.process.exitcode,
            delay,
        )

    def _restart(self, slot: _Slot) -> None:
        try:
            new = self._spawn(slot.index, self.address[1], START_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            slot.failures += 1
            low, high = RESTART_BACKOFF_S
            slot.restart_at = time.monotonic() + min(high, low * 2 ** min(slot.failures, 16))
            log.error("fan-out server process %d: restart failed: %s", slot.index + 1, exc)
            return
        slot.process, slot.feed, slot.restart_at = new.process, new.feed, None
        self.restarts += 1
        log.warning("fan-out server process %d restarted (pid %s)", slot.index + 1, new.process.pid)

    def pids(self) -> list[int | None]:
        """The server processes' ids (None while one is being restarted)."""
        return [None if s.restart_at is not None else s.process.pid for s in self._slots]

    # ---- publishing (any thread) ----

    @property
    def url(self) -> str:
        host, port = self.address
        return f"ws://{connectable(host)}:{port}{self.cfg.path}"

    @property
    def http_url(self) -> str:
        host, port = self.http_address or self.address
        return f"http://{connectable(host)}:{port}"

    def publish(self, records: list[Record]) -> bool:
        """False if some server process did not get the batch (counted in ``lost``)."""
        try:
            payload = orjson.dumps(records, default=json_default)
            skipped = 0
        except TypeError:  # one record off the contract: skip it alone, as the server would
            payload, skipped = _encode_each(records)
        ok = self._send(RECORDS, payload, len(records))
        if skipped:
            self._send(SKIPPED, str(skipped).encode(), 0)
        return ok

    def publish_frames(self, items: list[FrameItem]) -> bool:
        rows = [[f.venue, f.conn_id, f.ts_ingest, f.text, f.hint, symbol] for f, symbol in items]
        return self._send(FRAMES, orjson.dumps(rows), len(items))

    def _send(self, kind: int, payload: bytes, size: int) -> bool:
        ok = True
        for slot in self._slots:
            if not slot.feed.send(kind, payload):
                with self._lost_lock:  # the record and raw-frame sinks may be two workers
                    self.lost += size
                ok = False
        return ok


def _encode_each(records: list[Record]) -> tuple[bytes, int]:
    parts: list[bytes] = []
    for record in records:
        try:
            parts.append(orjson.dumps(record, default=json_default))
        except TypeError:
            continue
    return b"[" + b",".join(parts) + b"]", len(records) - len(parts)
