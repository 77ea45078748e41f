"""``Stream``: a fan-out subscription that keeps working.

Connects, subscribes, yields typed messages; on any connection loss it
reconnects with jittered exponential backoff and subscribes again (each new
subscription starts with a fresh snapshot). A server that stays silent longer
than the heartbeat timeout is treated as gone. Only a rejected token (close
1008) or a rejected subscription ends the iteration, with an exception:
retrying cannot fix those.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import random
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from candlewax.client.messages import Message, decode, kind_of
from candlewax.client.protocol import CLOSE_POLICY, CONTROL_TYPES, DEFAULT_URL, Subscribed

log = logging.getLogger("candlewax.client")
Hook = Callable[..., Any]
CLOSE_TIMEOUT_S = 2.0
# Frames the connection reads ahead of the consumer before it stops reading the
# socket (TCP flow control then reaches the server). websockets' default (16)
# pauses and resumes the socket every dozen messages of a fast stream.
MAX_QUEUE = 1024
SYNC_QUEUE_BATCHES = 1024  # decoded batches the plain iterator's thread reads ahead
Batch = list[Message]


class StreamError(Exception):
    """The stream cannot go on (retrying would not help)."""


class AuthError(StreamError):
    """The server closed with 1008: missing, invalid or expired token."""


class SubscriptionError(StreamError):
    """The server rejected a subscription (the reason says why)."""


class StreamStats:
    def __init__(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.messages = 0
        self.dropped = 0  # messages the server dropped for us (it said so)
        self.unknown = 0  # messages of a type this SDK does not know (newer server)


class Stream:
    """Subscribe to a candlewax fan-out server.

    ``async for msg in Stream(...)`` or ``for msg in Stream(...)`` (a background
    thread runs the connection). Yields schema records (``Trade``, ``Book``,
    ``BBO``, ``Bar``, ``Status``, ...) and ``RawMessage`` for ``raw=True``;
    snapshot records come first, one by one. With ``control=True`` it also
    yields ``Hello``, ``Subscribed``, ``Snapshot`` (instead of its records one by
    one), ``Heartbeat``, ``Dropped``, ``ServerError`` and ``Pong``. ``typed=False``
    yields plain dicts. Filters left as None mean "any"; ``subscriptions`` gives
    several filters at once (dicts with the same keys as the arguments).

    Hooks (plain functions or coroutines): ``on_connect(stream)`` after each
    successful subscribe, ``on_disconnect(stream, reason)``, ``on_message(msg)``
    for every message including control ones.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        channels: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        exchanges: Sequence[str] | None = None,
        depth: int | None = None,
        raw: bool = False,
        subscriptions: Sequence[dict[str, Any]] | None = None,
        token: str | None = None,
        control: bool = False,
        typed: bool = True,
        heartbeat_timeout: float | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retries: int | None = None,
        open_timeout: float = 10.0,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        on_message: Hook | None = None,
    ) -> None:
        self.url = url
        if subscriptions is None:
            subscriptions = [
                {
                    "channels": channels,
                    "symbols": symbols,
                    "exchanges": exchanges,
                    "depth": depth,
                    "raw": raw,
                }
            ]
        self.requests = [_subscribe_request(i, sub) for i, sub in enumerate(subscriptions, 1)]
        self.token = token
        self.control = control
        self.typed = typed
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retries = max_retries
        self.open_timeout = open_timeout
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_message = on_message
        self.stats = StreamStats()
        self.subscribed: list[Subscribed] = []
        self._ws: ClientConnection | None = None
        self._closed = False

    # ---- async API ----

    def __aiter__(self) -> AsyncIterator[Message]:
        return _Messages(self._batches())

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self, request_id: str | int | None = None) -> None:
        """Ask for a ``Pong``; it arrives after everything the server had already sent
        or queued for this connection (a barrier). No-op while disconnected."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(orjson.dumps({"type": "ping", "id": request_id}).decode())

    async def close(self) -> None:
        self._closed = True
        ws = self._ws
        if ws is not None:
            await _close(ws)

    # ---- plain iterator ----

    def __iter__(self) -> Iterator[Message]:
        """Blocking iteration: the connection lives on an event loop in a daemon thread,
        which hands decoded messages over a bounded queue, a whole WebSocket message's
        worth at a time (one thread wake-up per batch, not per record)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="candlewax-stream", daemon=True)
        thread.start()
        handover: queue.Queue[Batch | BaseException | None] = queue.Queue(SYNC_QUEUE_BATCHES)
        asyncio.run_coroutine_threadsafe(self._pump(handover), loop)
        try:
            while True:
                item = handover.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            self._closed = True
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    async def _shutdown(self) -> None:
        """Close, then end every task of the plain iterator's private loop."""
        await self.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self, handover: queue.Queue[Batch | BaseException | None]) -> None:
        """Runs the connection loop for the plain iterator; a full queue (the consumer
        is behind) pauses reading, so the socket's flow control reaches the server."""
        end: BaseException | None = None
        try:
            async for batch in self._batches():
                while True:
                    try:
                        handover.put_nowait(batch)
                        break
                    except queue.Full:
                        await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            end = exc
        while True:  # the consumer may be slow to read the end: wait for room
            try:
                handover.put_nowait(end)
                return
            except queue.Full:
                await asyncio.sleep(0.001)

    # ---- the connection loop ----

    async def _batches(self) -> AsyncGenerator[Batch, None]:
        """The connection loop: the messages of each WebSocket message, as one list."""
        failures = 0
        while not self._closed:
            reason = "closed"
            try:
                ws = await connect(
                    _asking_for_arrays(self.url),
                    additional_headers=_auth_header(self.token),
                    open_timeout=self.open_timeout,
                    compression=None,
                    max_size=None,  # snapshots of deep books can be large
                    max_queue=MAX_QUEUE,
                    close_timeout=CLOSE_TIMEOUT_S,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = f"connect failed: {exc}"
                ws = None
            except InvalidURI as exc:
                raise StreamError(str(exc)) from None
            if ws is not None:
                self._ws = ws
                try:
                    async for batch in self._session(ws):
                        failures = 0  # a working session resets the backoff
                        yield batch
                    reason = "closed by client"
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    text = exc.rcvd.reason if exc.rcvd is not None else ""
                    if code == CLOSE_POLICY:
                        raise AuthError(text or "rejected by the server (1008)") from None
                    reason = f"connection closed ({code}{': ' + text if text else ''})"
                except TimeoutError:
                    reason = "heartbeat timeout: the server went silent"
                finally:
                    self._ws = None
                    await _close(ws)
                    self.stats.disconnects += 1
                await self._hook(self.on_disconnect, self, reason)
            if self._closed:
                return
            failures += 1
            if self.max_retries is not None and failures > self.max_retries:
                raise StreamError(f"gave up after {self.max_retries} retries: {reason}")
            delay = min(self.backoff_max, self.backoff_base * 2 ** min(failures - 1, 16))
            log.info("candlewax stream: %s; reconnecting in %.2fs", reason, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: no herds

    async def _session(self, ws: ClientConnection) -> AsyncGenerator[Batch, None]:
        watchdog = _Watchdog(ws, self.heartbeat_timeout or self.open_timeout)
        try:
            for request in self.requests:
                await ws.send(orjson.dumps(request).decode())
            self.subscribed = []
            pending_ids = {request["id"] for request in self.requests}
            while True:
                try:
                    data = await ws.recv(decode=False)  # bytes: orjson reads them as is
                except ConnectionClosed:
                    if watchdog.fired:
                        raise TimeoutError from None
                    raise
                watchdog.seen()
                messages = decode(data, typed=self.typed, stats=self.stats)
                self.stats.messages += len(messages)
                for message in messages:
                    if self.on_message is not None:
                        await self._hook(self.on_message, message)
                    if kind_of(message) in ("hello", "subscribed", "error"):
                        await self._control(message, pending_ids, watchdog)
                batch = messages if self.control else self._data(messages)
                if batch:
                    yield batch
        finally:
            watchdog.cancel()

    def _data(self, messages: list[Message]) -> Batch:
        """What the iteration yields without ``control``: records, snapshots unpacked."""
        out: Batch = []
        for message in messages:
            kind = kind_of(message)
            if kind == "snapshot":
                out.extend(_field(message, "records"))
            elif kind not in CONTROL_TYPES:
                out.append(message)
            elif kind == "error":
                log.warning("candlewax server: %s", _field(message, "reason"))
        return out

    async def _control(self, message: Message, pending_ids: set[Any], watchdog: _Watchdog) -> None:
        kind = kind_of(message)
        if kind == "hello" and self.heartbeat_timeout is None:
            watchdog.timeout = 2.0 * _field(message, "heartbeat_s") + 5.0
        elif kind in ("subscribed", "error") and _field(message, "id") in pending_ids:
            if kind == "error":
                raise SubscriptionError(_field(message, "reason"))
            pending_ids.discard(_field(message, "id"))
            self.subscribed.append(
                message if isinstance(message, Subscribed) else Subscribed.model_validate(message)
            )
            if not pending_ids:
                self.stats.connects += 1
                await self._hook(self.on_connect, self)

    async def _hook(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a user hook must not kill the stream
            log.exception("candlewax stream: hook %r raised", hook)


class _Messages:
    """``async for`` over a stream: the connection loop's batches, one message at a
    time. A plain iterator object, not a second async generator: closing it closes
    the connection loop directly (nested generators finalized at loop shutdown
    would race each other)."""

    def __init__(self, batches: AsyncGenerator[Batch, None]) -> None:
        self._batches = batches
        self._batch: Batch = []
        self._next = 0

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> Message:
        while self._next >= len(self._batch):
            self._batch = await self._batches.__anext__()
            self._next = 0
        message = self._batch[self._next]
        self._next += 1
        return message

    async def aclose(self) -> None:
        await self._batches.aclose()


class _Watchdog:
    """Closes a connection that stayed silent for ``timeout`` seconds. The receive
    loop only notes the time of each message; one timer per timeout period checks
    it (a timeout around every ``recv`` schedules and cancels a timer per message,
    which halved the SDK's throughput)."""

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.fired = False
        self._timer = self.loop.call_at(self.last + timeout, self._check)

    def seen(self) -> None:
        self.last = self.loop.time()

    def _check(self) -> None:
        deadline = self.last + self.timeout
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._check)
            return
        self.fired = True
        self.ws.transport.abort()  # recv() raises ConnectionClosed at once

    def cancel(self) -> None:
        self._timer.cancel()


async def _close(ws: ClientConnection) -> None:
    # Unread messages pause reading (flow control), and then the server's close frame
    # would never be read: resume, so the closing handshake can finish.
    with contextlib.suppress(Exception):
        ws.transport.resume_reading()
    await ws.close()


def _field(message: Message, name: str) -> Any:
    return message.get(name) if isinstance(message, dict) else getattr(message, name)


def _subscribe_request(index: int, sub: dict[str, Any]) -> dict[str, Any]:
    unknown = set(sub) - {"channels", "symbols", "exchanges", "depth", "raw"}
    if unknown:
        raise ValueError(f"unknown subscription keys {sorted(unknown)}")
    request: dict[str, Any] = {"type": "subscribe", "id": f"sdk-{index}"}
    for key in ("channels", "symbols", "exchanges"):
        value = sub.get(key)
        if isinstance(value, str):
            raise TypeError(f"{key} must be a list of names, not the string {value!r}")
        if value is not None:
            request[key] = list(value)
    if sub.get("depth") is not None:
        request["depth"] = sub["depth"]
    if sub.get("raw"):
        request["raw"] = True
    return request


def _asking_for_arrays(url: str) -> str:
    """The stream URL with ``arrays=1``: the server then packs the records of one
    dispatch into one JSON array (one message to receive per engine tick, not per
    record, at no added latency). Servers that do not know it ignore it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "arrays" for key, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("arrays", "1")])))


def _auth_header(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None
