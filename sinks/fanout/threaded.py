"""A fan-out server on its own event loop in a daemon thread, shared per process
(``processes: 0``; server processes are in ``processes.py``).

``ServerThread`` is what the pipeline talks to: ``publish(records)`` and
``publish_frames(items)`` may be called from any thread (the batch goes to the
loop with ``call_soon_threadsafe``). ``acquire`` / ``release`` share one server
per (host, port) in a process, so the record sink, the raw-frame sink and a
caller that wants the server up before the flow starts (tests, ``candlewax
replay --ws``) all use one instance.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from candlewax.config import WebsocketSink
from candlewax.loop_thread import LoopThread
from sinks.fanout.hub import FrameItem, Hub, Record
from sinks.fanout.server import FanoutServer

T = TypeVar("T")
if TYPE_CHECKING:
    from sinks.fanout.processes import ServerProcesses
MAX_INFLIGHT = 200_000  # records waiting for the server loop before publishers wait
MAX_BLOCK_S = 0.5  # longest a publisher waits before its batch is dropped (and counted)


class ServerThread:
    """A :class:`FanoutServer` on its own event loop in a daemon thread."""

    def __init__(self, cfg: WebsocketSink) -> None:
        self.cfg = cfg
        self.server = FanoutServer(cfg)
        self.lost = 0  # records not handed over (server not running, or overloaded)
        self.max_inflight = MAX_INFLIGHT
        self.max_block_s = MAX_BLOCK_S
        self._inflight = 0  # records handed to the loop, not yet dispatched
        self._room = threading.Condition()
        self._thread = LoopThread(self.server.start, self.server.stop, "candlewax-fanout")

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        return self._thread.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server.address is not None, "server not started"
        return self.server.address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"ws://{connectable(host)}:{port}{self.cfg.path}"

    @property
    def http_url(self) -> str:
        host, port = self.server.http_address or self.address
        return f"http://{connectable(host)}:{port}"

    def publish(self, records: list[Record]) -> bool:
        """Hand a batch of records to the server (any thread; the list is not copied:
        do not change it or its records afterwards). False if it was dropped."""
        return self._hand_over(records, lambda hub: hub.ingest)

    def publish_frames(self, items: list[FrameItem]) -> bool:
        return self._hand_over(items, lambda hub: hub.ingest_frames)

    def _hand_over(self, batch: list[Any], method: Callable[[Hub], Callable[[Any], None]]) -> bool:
        """Batches waiting for the loop are bounded: past ``max_inflight`` records the
        caller waits (backpressure, up to ``max_block_s``), then the batch is dropped
        and counted in ``lost``: a server that cannot keep up never grows memory."""
        loop, hub = self._thread.loop, self.server.hub
        size = len(batch)
        if loop is None or hub is None or loop.is_closed():
            self.lost += size
            return False
        with self._room:
            if self._inflight + size > self.max_inflight and not self._room.wait_for(
                lambda: self._inflight + size <= self.max_inflight, self.max_block_s
            ):
                self.lost += size
                return False
            self._inflight += size
        try:
            loop.call_soon_threadsafe(self._ingest, method(hub), batch)
        except RuntimeError:  # the loop closed meanwhile
            self._done(size)
            self.lost += size
            return False
        return True

    def _ingest(self, method: Callable[[Any], None], batch: list[Any]) -> None:
        try:
            method(batch)
        finally:
            self._done(len(batch))

    def _done(self, size: int) -> None:
        with self._room:
            self._inflight -= size
            self._room.notify_all()

    def call(self, func: Callable[[Hub], T], timeout: float = 10.0) -> T:
        """Run ``func(hub)`` on the server loop and return its result (status, tests)."""
        loop = self._thread.loop
        assert loop is not None and self.server.hub is not None
        hub = self.server.hub

        async def run() -> T:
            return func(hub)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)


Fanout: TypeAlias = "ServerThread | ServerProcesses"  # what the sinks publish to


def connectable(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class _Held:
    def __init__(self, thread: Fanout, keys: list[tuple[str, int]]) -> None:
        self.thread = thread
        self.keys = keys
        self.refs = 0


_LOCK = threading.Lock()
_SERVERS: dict[tuple[str, int], _Held] = {}


def acquire(cfg: WebsocketSink) -> Fanout:
    """The running server for ``cfg.host:cfg.port`` in this process, started (with
    ``cfg``: ``processes: 0`` a thread here, else server processes) if there is none;
    a later caller with other settings gets the running one.
    Every ``acquire`` needs a ``release``; the last one stops the server. A server
    started with port 0 is also found by the port it bound."""
    with _LOCK:
        held = _SERVERS.get((cfg.host, cfg.port))
        if held is None:
            thread: Fanout = ServerThread(cfg) if cfg.processes == 0 else _processes(cfg)
            _, port = thread.start()
            keys = [(cfg.host, cfg.port)]
            if port != cfg.port:
                keys.append((cfg.host, port))
            held = _Held(thread, keys)
            for key in keys:
                _SERVERS[key] = held
        held.refs += 1
        return held.thread


def _processes(cfg: WebsocketSink) -> Fanout:
    from sinks.fanout.processes import ServerProcesses  # imports this module

    return ServerProcesses(cfg)


def release(thread: Fanout) -> None:
    with _LOCK:
        held = next((h for h in _SERVERS.values() if h.thread is thread), None)
        if held is None:
            return
        held.refs -= 1
        if held.refs > 0:
            return
        for key in held.keys:
            _SERVERS.pop(key, None)
    thread.stop()
