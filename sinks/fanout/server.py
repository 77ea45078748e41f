"""The fan-out server: WebSocket stream + HTTP endpoints on one asyncio loop.

Connections, auth, client requests, heartbeats and the slow-client watchdog;
routing and state live in the hub (``hub.py``). ``threaded.py`` runs it in a
thread for the pipeline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from candlewax import metrics
from candlewax.client.protocol import CLOSE_POLICY, CLOSE_TOO_SLOW
from candlewax.config import WebsocketSink
from sinks.fanout.auth import Authenticator, AuthError, RateLimiter, token_of
from sinks.fanout.http import HttpRoutes
from sinks.fanout.hub import Client, Hub
from sinks.fanout.outbox import Outbox
from sinks.fanout.requests import RequestError, parse_request

MAX_REQUEST_BYTES = 64 * 1024  # client messages are small; larger ones close with 1009
WRITE_LIMIT = 256 * 1024  # socket buffer per client before its queue takes over
HOUSEKEEPING_S = 0.25
CLOSE_TIMEOUT_S = 2.0


class FanoutServer:
    def __init__(self, cfg: WebsocketSink, *, reuse_port: bool = False) -> None:
        """``reuse_port``: several server processes share the port (SO_REUSEPORT)."""
        self.cfg = cfg
        self.reuse_port = reuse_port
        # A server process: fetches the flow process's Prometheus text for /metrics.
        self.upstream_metrics: Callable[[], Awaitable[bytes | None]] | None = None
        self.auth = Authenticator(cfg.auth)
        self.hub: Hub | None = None
        self.address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._servers: list[Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        self.hub = hub = Hub(cfg, loop)
        options: dict[str, Any] = {
            "compression": None,  # frames are shared between clients (see wire.py)
            "max_size": MAX_REQUEST_BYTES,
            "write_limit": WRITE_LIMIT,
            "close_timeout": CLOSE_TIMEOUT_S,
            "server_header": "candlewax",
        }
        if self.reuse_port:
            options["reuse_port"] = True
        main = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=HttpRoutes(hub, cfg.path, self.auth, self._upstream),
            **options,
        )
        self._servers.append(main)
        self.address = _bound(main)
        if cfg.http_port is not None:
            side = await serve(
                self._handle,
                cfg.host,
                cfg.http_port,
                process_request=HttpRoutes(hub, None, self.auth, self._upstream),
                **options,
            )
            self._servers.append(side)
            self.http_address = _bound(side)
        self._tasks = [
            loop.create_task(self._heartbeats()),
            loop.create_task(self._housekeeping()),
        ]
        return self.address

    async def _upstream(self) -> bytes | None:
        fetch = self.upstream_metrics
        return None if fetch is None else await fetch()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Send what is queued (up to ``grace_s``), then close every connection (1001)."""
        hub = self.hub
        if hub is not None:
            hub.flush()
            hub.write_groups()  # into the outboxes now: idle() below then waits for them
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and not all(
                c.outbox.idle() for c in hub.clients.values()
            ):
                await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        for server in self._servers:
            server.close(close_connections=False)
        if hub is not None:
            await asyncio.gather(
                *(
                    _close_or_abort(c.outbox.conn, 1001, "server stopping")
                    for c in hub.clients.values()
                )
            )
        for server in self._servers:
            await server.wait_closed()
        if hub is not None:
            hub.report_metrics()
            hub.forget_metrics()

    async def _heartbeats(self) -> None:
        assert self.hub is not None
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            self.hub.heartbeat()

    async def _housekeeping(self) -> None:
        hub = self.hub
        assert hub is not None
        max_lag = self.cfg.max_lag_s
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = time.monotonic()
            for client in list(hub.clients.values()):
                outbox = client.outbox
                if outbox.closed:
                    continue
                since = outbox.lagging_since
                if max_lag is not None and since is not None and now - since > max_lag:
                    self._close(client, CLOSE_TOO_SLOW, f"too slow: lagged over {max_lag:g}s")
                elif outbox.overloaded():
                    self._close(client, CLOSE_TOO_SLOW, "too slow: not reading replies")
            hub.report_metrics()

    def _close(self, client: Client, code: int, reason: str) -> None:
        label = "auth" if code == CLOSE_POLICY else "too_slow"
        metrics.WS_DISCONNECTS.labels(label).inc()
        client.outbox.close()
        asyncio.get_running_loop().create_task(_close_or_abort(client.outbox.conn, code, reason))

    async def _handle(self, conn: ServerConnection) -> None:
        hub = self.hub
        assert hub is not None and conn.request is not None
        try:
            assert conn.request is not None
            expires = self.auth.check(token_of(conn.request))
        except AuthError as exc:
            metrics.WS_DISCONNECTS.labels("auth").inc()
            await conn.close(CLOSE_POLICY, str(exc))
            return
        outbox = Outbox(
            conn, self.cfg.queue_size, WRITE_LIMIT, hub.mark_pending, self.cfg.max_reply_bytes
        )
        client = hub.connect(outbox, arrays=_wants_arrays(conn.request.path))
        sender = asyncio.get_running_loop().create_task(outbox.run())
        expiry = None
        if expires != math.inf:
            delay = max(0.0, expires - time.time())
            expiry = asyncio.get_running_loop().call_later(
                delay, self._close, client, CLOSE_POLICY, "token expired"
            )
        try:
            await self._serve_requests(hub, client, conn)
        except ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            hub.disconnect(client)
            sender.cancel()

    async def _serve_requests(self, hub: Hub, client: Client, conn: ServerConnection) -> None:
        limiter = RateLimiter(self.cfg.client_rate, self.cfg.client_burst)
        told_at = -math.inf
        async for message in conn:
            if client.outbox.closed:
                return
            if not limiter.allow():
                # Tell the client at most once a second; the rest are counted only.
                now = time.monotonic()
                if now - told_at >= 1.0:
                    told_at = now
                    reason = f"rate limit exceeded ({self.cfg.client_rate:g} messages/s): ignored"
                    hub.error(client, RequestError(reason), kind="rate_limited")
                else:
                    metrics.WS_CLIENT_ERRORS.labels("rate_limited").inc()
                continue
            try:
                request = parse_request(message)
            except RequestError as exc:
                hub.error(client, exc)
                continue
            hub.handle(client, request)


async def _close_or_abort(conn: ServerConnection, code: int, reason: str) -> None:
    """Closing handshake, or a hard close: a client that stopped reading would keep
    ``close()`` waiting for its socket buffer to drain forever."""
    try:
        await asyncio.wait_for(conn.close(code, reason), CLOSE_TIMEOUT_S + 0.5)
    except (TimeoutError, OSError):
        conn.transport.abort()


def _wants_arrays(path: str) -> bool:
    """``?arrays=1``: the records of one dispatch come as one JSON array message (the
    SDK asks for it: one message to handle per engine tick instead of per record)."""
    return parse_qs(urlsplit(path).query).get("arrays", [""])[-1] in ("1", "true")


def _bound(server: Server) -> tuple[str, int]:
    host, port = server.sockets[0].getsockname()[:2]
    return str(host), int(port)
