"""One live WebSocket connection to a venue, kept alive and complete.

``VenueConnection.run`` connects, subscribes, keeps the connection alive
(websockets answers server pings; venues such as OKX also need a text ping),
watches for stalls, reconnects with exponential backoff and full jitter (reset
by a connection that delivered data, so a flapping but working link reconnects
fast; attempts stay inside the venue's connection-rate limits), and
replaces the connection before the venue's maximum lifetime with an overlap:
the new connection is open and subscribed before the old one closes, so both
deliver frames for a moment and the dedupe operator / book sequence rules drop
the repeats. Snapshot venues (Binance) get their REST depth snapshot injected
into the same frame sequence once the stream is flowing, and again whenever the
book operator asks for a resync through :mod:`candlewax.resync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from candlewax import resync
from candlewax.schema import make_status, now_us
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.venue import VenueProtocol

FrameCallback = Callable[[RawFrame], None]
StatusCallback = Callable[[dict[str, Any]], None]
Backpressure = Callable[[], bool]  # True: the consumer is full, stop reading for a moment
_BACKPRESSURE_STEP = 0.005
# Replies to our own requests, not market data: OKX acks/errors/notices {"event":..},
# Binance {"result":..,"id":..} / {"error":..}. A venue that acks and then closes
# has delivered nothing, and must not reset the backoff.
_REPLY_PREFIXES = ('{"event"', '{"result"', '{"error"')
ConnectLimits = tuple[tuple[int, float], ...]  # (attempts, per seconds), all must hold

# Connection attempts a venue allows per IP (exchange-protocols.md). Binance spot
# (§1.1): 300 connections per attempt every 5 minutes; USD-M documents none, so
# spot's budget. OKX (§4): 3 connection requests/s, 500 connections per 5 minutes.
VENUE_CONNECT_LIMITS: dict[str, ConnectLimits] = {
    "binance": ((300, 300.0),),
    "binance-usdm": ((300, 300.0),),
    "okx": ((3, 1.0), (500, 300.0)),
}


@dataclass(frozen=True)
class ClientSettings:
    """Timings of a live connection (seconds); tests shrink them."""

    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    # The backoff resets after a connection that delivered data, or lived this long
    # (a quiet but subscribed link); one that closed before any data counts up.
    healthy_after: float = 60.0
    connect_limits: ConnectLimits | None = None  # None: VENUE_CONNECT_LIMITS of the venue
    stall_timeout: float = 60.0  # nothing for this long -> ping; no pong -> "stale", reconnect
    pong_timeout: float = 10.0  # how long the stall check waits for the pong
    max_lifetime: float | None = None  # None: the venue's documented limit
    rollover_margin: float = 600.0  # replace the connection this long before max_lifetime
    overlap_grace: float = 1.0  # keep the old connection after the new one delivered
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    ws_ping_interval: float | None = 20.0  # our own protocol pings (dead TCP detection)
    app_ping_interval: float | None = None  # None: the venue's (OKX 25 s)
    snapshot_delay: float = 1.0  # let diffs buffer after the first frame, then fetch
    snapshot_timeout: float = 10.0  # one REST request; failures retry with backoff
    resync_min_interval: float = 5.0  # per symbol (OKX: 480 (un)subscribes/hour/connection)
    max_message_bytes: int = 1 << 24

    def backoff_ceiling(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 30))

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0.0, self.backoff_ceiling(attempt))

    def rollover_after(self, lifetime: float) -> float:
        """Age at which a connection is replaced; at least half its lifetime."""
        return max(lifetime - self.rollover_margin, lifetime / 2.0)


@dataclass(frozen=True)
class ReconnectDelay:
    """One wait before a reconnect, as chosen (for metrics and tests)."""

    attempt: int  # 0 after a connection that delivered data; +1 per fruitless one
    ceiling: float  # the backoff bound for this attempt
    delay: float  # the jittered wait drawn from [0, ceiling]


class ConnectBudget:
    """Connection attempts to one endpoint, within (attempts, per seconds) limits.

    Shared by every connection of the process to that venue endpoint (all threads):
    attempts are granted in order, each at the earliest time that keeps every
    sliding window within its limit."""

    def __init__(self, limits: ConnectLimits) -> None:
        for count, window in limits:
            if count < 1 or window <= 0:
                raise ValueError(f"connect limit {count} per {window}s is not positive")
        self.limits = limits
        self._times: deque[float] = deque(maxlen=max((c for c, _ in limits), default=1))
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        """Book the next attempt; returns how long to wait before making it (s)."""
        with self._lock:
            times = self._times
            at = max(now, times[-1]) if times else now
            for count, window in self.limits:
                if len(times) >= count:
                    at = max(at, times[-count] + window)
            times.append(at)
            return at - now


_budgets: dict[tuple[str, str, ConnectLimits], ConnectBudget] = {}
_budgets_lock = threading.Lock()


def connect_budget(venue: str, url: str, limits: ConnectLimits) -> ConnectBudget:
    """The process-wide budget of one venue endpoint (limits are per IP and server)."""
    key = (venue, urlsplit(url).netloc, limits)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = ConnectBudget(limits)
        return budget


class _Stopped(Exception):
    """Stopped while waiting for the connection budget."""


class _Link:
    """One physical WebSocket connection and its reader/pinger tasks."""

    def __init__(self, conn_id: str, ws: ClientConnection, rollover_at: float | None) -> None:
        self.conn_id = conn_id
        # Same subscription stream as the links it replaced in planned rollovers.
        self.session = conn_id
        self.ws = ws
        self.opened = time.monotonic()
        self.last_data = self.opened
        self.rollover_at = rollover_at
        self.first_data = asyncio.Event()
        self.delivered = False  # a market data frame came (not a keep-alive or a reply)
        self.replace_now = asyncio.Event()  # the venue announced it will close this link
        self.reader: asyncio.Task[str] | None = None
        self.pinger: asyncio.Task[None] | None = None


class VenueConnection:
    """A self-healing live connection for some instruments/channels of one venue."""

    def __init__(
        self,
        protocol: VenueProtocol,
        ws_url: str | None,
        rest_url: str | None,
        natives: list[str],
        channels: list[str],
        on_frame: FrameCallback,
        on_status: StatusCallback,
        conn_prefix: str = "",
        settings: ClientSettings | None = None,
        backpressure: Backpressure | None = None,
    ) -> None:
        self.protocol = protocol
        self.venue = protocol.venue
        self.natives = list(natives)
        self.channels = list(channels)
        self.settings = settings or ClientSettings()
        self.url = protocol.connect_url(ws_url or protocol.default_ws_url, self.natives, channels)
        self.rest_url = rest_url or protocol.default_rest_url
        self.conn_prefix = conn_prefix or f"{self.venue}-"
        self._on_frame = on_frame
        self._on_status = on_status
        self._backpressure = backpressure
        self._counter = itertools.count(1)
        self._by_upper = {n.upper(): n for n in self.natives}
        self._snapshot_natives = [
            n
            for n in self.natives
            if "book" in self.channels
            and self.rest_url is not None
            and protocol.snapshot_url(self.rest_url, n) is not None
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._stop_waiter: asyncio.Future[Any] | None = None
        self._current: _Link | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resyncing: set[str] = set()  # natives with a snapshot/resync in flight or due
        self._last_resync: dict[str, float] = {}
        limits = self.settings.connect_limits
        if limits is None:
            limits = VENUE_CONNECT_LIMITS.get(self.venue, ())
        self._budget = connect_budget(self.venue, self.url, limits)
        # Counters for tests and metrics.
        self.connects = 0
        self.snapshots = 0
        self.resyncs = 0
        self.backpressure_waits = 0
        self.reconnect_delays: deque[ReconnectDelay] = deque(maxlen=1000)  # latest last
        self.throttled = 0  # connection attempts delayed by the venue's rate limit

    # ---- public ----

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set; never raises on network trouble."""
        self._loop = asyncio.get_running_loop()
        remove_listener = resync.subscribe(self.venue, self.request_resync)
        stop_waiter = self._stop_waiter = asyncio.ensure_future(stop.wait())
        if self._snapshot_natives:
            self._http = httpx.AsyncClient(timeout=self.settings.snapshot_timeout)
        attempt = 0
        try:
            while not stop.is_set():
                link = await self._try_open()
                if link is not None:
                    self._current = link
                    snapshots = None
                    if self._snapshot_natives:
                        snapshots = self._spawn(self._initial_snapshots(link))
                    link, reason = await self._supervise(link, stop_waiter)
                    self._current = None
                    if snapshots is not None:  # ends before the next link marks its natives
                        snapshots.cancel()
                        await asyncio.gather(snapshots, return_exceptions=True)
                    await self._close(link, reason)
                    lived = time.monotonic() - link.opened
                    if link.delivered or lived >= self.settings.healthy_after:
                        # It worked: a link that flaps after delivering data reconnects
                        # at once (jittered), not ever later. The venue's connect limits
                        # still bound how often (ConnectBudget in _open).
                        attempt = 0
                if stop.is_set():
                    break
                ceiling = self.settings.backoff_ceiling(attempt)
                delay = random.uniform(0.0, ceiling)
                self.reconnect_delays.append(ReconnectDelay(attempt, ceiling, delay))
                attempt += 1
                self._status("reconnecting", f"in {delay:.3f}s (attempt {attempt})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stop_waiter), delay)
        finally:
            remove_listener()
            stop_waiter.cancel()
            if self._current is not None:
                await self._close(self._current, "stopped")
                self._current = None
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._http is not None:
                await self._http.aclose()

    def request_resync(self, native: str, reason: str) -> None:
        """Resync one instrument (any thread): new REST snapshot, or resubscribe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(self._resync, native, reason)

    # ---- connection lifecycle ----

    async def _try_open(self) -> _Link | None:
        try:
            return await self._open()
        except _Stopped:
            return None
        except InvalidURI as exc:
            raise ValueError(f"{self.venue}: invalid WebSocket URL {self.url!r}: {exc}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._status("error", f"connect to {self.url} failed: {exc!r}"[:500])
            return None

    async def _open(self) -> _Link:
        s = self.settings
        wait = self._budget.reserve(time.monotonic())
        if wait > 0:
            self.throttled += 1
            limits = ", ".join(f"{n} per {w:g}s" for n, w in self._budget.limits)
            self._status("reconnecting", f"in {wait:.3f}s (connection limit {limits})")
            assert self._stop_waiter is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stop_waiter), wait)
            if self._stop_waiter.done():
                raise _Stopped
        conn_id = f"{self.conn_prefix}{next(self._counter)}"
        ws = await connect(
            self.url,
            open_timeout=s.open_timeout,
            close_timeout=s.close_timeout,
            ping_interval=s.ws_ping_interval,
            ping_timeout=s.ws_ping_interval,
            max_size=s.max_message_bytes,
        )
        try:
            for message in self.protocol.subscribe_messages(self.natives, self.channels):
                await ws.send(message)
        except ConnectionClosed:
            await ws.close()
            raise
        lifetime = s.max_lifetime if s.max_lifetime is not None else self.protocol.max_lifetime
        link = _Link(conn_id, ws, None)
        if lifetime is not None:
            link.rollover_at = link.opened + s.rollover_after(lifetime)
        link.reader = asyncio.create_task(self._read(link), name=f"read {conn_id}")
        ping_every = s.app_ping_interval or self.protocol.app_ping_interval
        if self.protocol.app_ping_text and ping_every:
            link.pinger = asyncio.create_task(
                self._ping(link, self.protocol.app_ping_text, ping_every), name=f"ping {conn_id}"
            )
        self.connects += 1
        self._status("connected", f"{conn_id} {self.url}")
        self._status("subscribed", f"{conn_id} {','.join(self.channels)}: {' '.join(self.natives)}")
        return link

    async def _supervise(self, link: _Link, stop_waiter: asyncio.Future[Any]) -> tuple[_Link, str]:
        """Wait until the link ends, stalls or is stopped; roll it over on schedule.

        Returns the link in use at the end and why it ended."""
        stall = self.settings.stall_timeout
        while True:
            assert link.reader is not None
            deadline = link.last_data + stall
            if link.rollover_at is not None:
                deadline = min(deadline, link.rollover_at)
            timeout = max(0.0, deadline - time.monotonic())
            notice = asyncio.ensure_future(link.replace_now.wait())
            try:
                await asyncio.wait(
                    {link.reader, stop_waiter, notice},
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                notice.cancel()
            if stop_waiter.done():
                return link, "stopped"
            if link.reader.done():
                return link, link.reader.result()
            now = time.monotonic()
            if now - link.last_data >= stall and await self._answers_ping(link, stop_waiter):
                link.last_data = time.monotonic()  # quiet but alive (an illiquid pair)
                continue
            now = time.monotonic()
            if now - link.last_data >= stall:
                detail = f"{link.conn_id}: no data for {now - link.last_data:.1f}s, no pong"
                self._status("stale", detail)
                return link, f"stale ({detail})"
            if link.replace_now.is_set():
                link.replace_now.clear()
                link = await self._rollover(link, stop_waiter, "the venue announced a shutdown")
            elif link.rollover_at is not None and now >= link.rollover_at:
                link = await self._rollover(link, stop_waiter, "before its max lifetime")

    async def _rollover(self, old: _Link, stop_waiter: asyncio.Future[Any], why: str) -> _Link:
        """Open and subscribe the replacement, let both deliver, then close the old one."""
        self._status("planned_reconnect", f"replacing {old.conn_id}: {why}")
        try:
            new = await self._open()
        except _Stopped:
            return old
        except (OSError, TimeoutError, WebSocketException) as exc:
            retry = self.settings.backoff(1) + 1.0
            self._status("error", f"planned reconnect failed: {exc!r}; retry in {retry:.1f}s")
            old.rollover_at = time.monotonic() + retry
            return old
        assert new.reader is not None
        first = asyncio.ensure_future(new.first_data.wait())
        try:
            await asyncio.wait(
                {first, new.reader, stop_waiter},
                timeout=self.settings.stall_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            first.cancel()
        if not stop_waiter.done() and (new.reader.done() or not new.first_data.is_set()):
            # Never swap a working connection for a dead or silent one.
            why = new.reader.result() if new.reader.done() else "it delivered no data"
            await self._close(new, f"replacement failed: {why}")
            old.rollover_at = time.monotonic() + self.settings.backoff(1) + 1.0
            return old
        new.session = old.session
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stop_waiter), self.settings.overlap_grace)
        self._current = new
        await self._close(old, f"replaced by {new.conn_id}")
        return new

    async def _close(self, link: _Link, reason: str) -> None:
        with contextlib.suppress(Exception):
            await link.ws.close()
        for task in (link.reader, link.pinger):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._status("disconnected", f"{link.conn_id}: {reason}")

    async def _answers_ping(self, link: _Link, stop_waiter: asyncio.Future[Any]) -> bool:
        """Ping a quiet link: True if the pong came (or the link ended/was stopped meanwhile,
        which the supervisor handles next); False only for a missing pong."""
        try:
            pong: Awaitable[float] = await link.ws.ping()
        except ConnectionClosed:
            return True  # the reader ends with the close reason
        assert link.reader is not None
        waiter = asyncio.ensure_future(pong)
        try:
            await asyncio.wait(
                {waiter, link.reader, stop_waiter},
                timeout=self.settings.pong_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        ponged = waiter.done() and not waiter.cancelled() and waiter.exception() is None
        return ponged or link.reader.done() or stop_waiter.done()

    async def _read(self, link: _Link) -> str:
        """Deliver every data frame; returns the close reason."""
        venue = self.venue
        is_control = self.protocol.is_control
        is_notice = self.protocol.is_shutdown_notice
        on_frame = self._on_frame
        full = self._backpressure
        try:
            async for message in link.ws:
                ts = time.time_ns() // 1000
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                # Keep-alive replies count as liveness: a quiet market (an OKX book
                # with no changes for a minute) is not a stalled connection.
                link.last_data = time.monotonic()
                if is_control(text):
                    continue
                if is_notice(text):
                    link.replace_now.set()
                on_frame(RawFrame(venue, link.conn_id, ts, text))
                if not link.delivered and not text.startswith(_REPLY_PREFIXES):
                    link.delivered = True
                if not link.first_data.is_set():
                    link.first_data.set()
                if full is not None and full():
                    # Stop reading so TCP pushes back instead of the queue growing.
                    self.backpressure_waits += 1
                    while full():
                        await asyncio.sleep(_BACKPRESSURE_STEP)
                        link.last_data = time.monotonic()  # we are slow, not the venue
        except ConnectionClosed:
            pass
        code = link.ws.close_code
        detail = link.ws.close_reason or ""
        return f"closed by peer (code {code}{': ' + detail if detail else ''})"

    async def _ping(self, link: _Link, text: str, interval: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                await link.ws.send(text)

    # ---- snapshots and resync ----

    async def _initial_snapshots(self, link: _Link) -> None:
        """Binance's procedure: stream open and buffering first, then the snapshot.

        The natives count as resyncing meanwhile: a gap seen on the new stream
        needs no second fetch."""
        natives = [n for n in self._snapshot_natives if n not in self._resyncing]
        self._resyncing.update(natives)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.first_data.wait(), self.settings.stall_timeout)
            await asyncio.sleep(self.settings.snapshot_delay)
            for native in natives:
                await self._fetch_snapshot(native, link)
        finally:
            self._resyncing.difference_update(natives)

    async def _fetch_snapshot(self, native: str, for_link: _Link) -> None:
        """GET the depth snapshot and inject it, retrying with capped backoff for as long
        as ``for_link`` or its planned replacement is the current connection."""
        assert self._http is not None and self.rest_url is not None
        url = self.protocol.snapshot_url(self.rest_url, native)
        assert url is not None
        for attempt in itertools.count(1):
            wait = self.settings.backoff(attempt)
            try:
                response = await self._http.get(url)
            except httpx.HTTPError as exc:
                problem = f"{exc!r}"
            else:
                if response.status_code == 200:
                    link = self._current
                    if link is None or link.session != for_link.session:
                        return  # a new subscription: it fetches its own
                    self.snapshots += 1
                    self._on_frame(
                        RawFrame(
                            self.venue,
                            link.conn_id,
                            now_us(),
                            response.text,
                            SNAPSHOT_HINT + native,
                        )
                    )
                    return
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            self._status("error", f"depth snapshot {native} from {url}: {problem}"[:500])
            await asyncio.sleep(wait)
            link = self._current
            if link is None or link.session != for_link.session:
                return

    def _resync(self, native: str, reason: str) -> None:
        configured = self._by_upper.get(native.upper())
        link = self._current
        if configured is None or link is None or configured in self._resyncing:
            return  # not ours, between connections (a new one resyncs anyway), or in flight
        if configured not in self._snapshot_natives and "book" not in self.channels:
            return  # this connection has no book subscription to renew
        due = self._last_resync.get(configured, -math.inf) + self.settings.resync_min_interval
        self._resyncing.add(configured)
        task = self._spawn(self._resync_at(configured, due))
        task.add_done_callback(lambda _: self._resyncing.discard(configured))

    async def _resync_at(self, native: str, due: float) -> None:
        """Resync no sooner than ``due``: requests inside the interval wait, not vanish."""
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        link = self._current
        if link is None:
            return  # between connections: the next one starts fresh
        self._last_resync[native] = time.monotonic()
        self.resyncs += 1
        if native in self._snapshot_natives:
            await self._fetch_snapshot(native, link)
        else:
            await self._send_all(link, self.protocol.resync_messages(native))

    async def _send_all(self, link: _Link, messages: list[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in messages:
                await link.ws.send(message)

    # ---- helpers ----

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _status(self, event: str, detail: str) -> None:
        self._on_status(make_status(self.venue, None, event, now_us(), detail))
