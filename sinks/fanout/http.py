"""HTTP endpoints, answered during the WebSocket opening handshake.

``websockets`` hands every request to ``process_request`` first: a request for
the stream path continues as a WebSocket, anything else gets a plain HTTP
response here. So one port serves both (a side port can serve these too).

With auth configured, every endpoint but ``/healthz`` needs the same token as the
WebSocket (``Authorization: Bearer <token>`` or ``?token=``), else 401.

- ``GET /healthz``  -> ``ok``
- ``GET /metrics``  -> Prometheus text format (candlewax.metrics.REGISTRY)
- ``GET /status``   -> JSON: clients, active_subscriptions, messages_per_second, uptime_s,
  exchange_status per venue
- ``GET /snapshot?venue=&symbol=&depth=`` -> JSON: latest book top-N, BBO, bars per interval,
  status, for each matching symbol (both filters optional)
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from candlewax import metrics
from sinks.fanout.auth import Authenticator, AuthError, token_of
from sinks.fanout.hub import Hub

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WS_PREFIX = b"candlewax_ws_"


class HttpRoutes:
    def __init__(
        self,
        hub: Hub,
        ws_path: str | None,
        auth: Authenticator,
        upstream: Callable[[], Awaitable[bytes | None]] | None = None,
    ) -> None:
        """``ws_path`` None: this port serves no WebSocket (a side port). ``upstream``:
        the flow process's Prometheus text when this server runs in its own process."""
        self.hub = hub
        self.upstream = upstream
        self.ws_path = ws_path
        self.auth = auth
        self.routes: dict[str, Callable[[dict[str, list[str]]], tuple[int, str, str]]] = {
            "/healthz": lambda q: (200, "ok\n", "text/plain; charset=utf-8"),
            "/metrics": self._metrics,
            "/status": self._status,
            "/snapshot": self._snapshot,
        }

    async def __call__(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == self.ws_path:
            return None  # continue the WebSocket handshake
        route = self.routes.get(url.path)
        if route is None:
            known = ", ".join([*self.routes, *([self.ws_path] if self.ws_path else [])])
            return _respond(conn, 404, f"not found; try {known}\n", "text/plain; charset=utf-8")
        if url.path != "/healthz" and self.auth.enabled:
            try:
                self.auth.check(token_of(request))
            except AuthError as exc:
                return _respond(conn, 401, f"{exc}\n", "text/plain; charset=utf-8")
        if url.path == "/metrics" and self.upstream is not None:
            upstream = await self.upstream()  # the flow process's own, fresh
            own = self._metrics({})[1].encode()
            text = own if upstream is None else merge_exposition(upstream, own)
            return _respond(conn, 200, text.decode(), PROMETHEUS_TYPE)
        try:
            status, body, content_type = route(parse_qs(url.query))
        except ValueError as exc:
            status, body, content_type = 400, f"{exc}\n", "text/plain; charset=utf-8"
        return _respond(conn, status, body, content_type)

    def _metrics(self, query: dict[str, list[str]]) -> tuple[int, str, str]:
        self.hub.report_metrics()
        return 200, metrics.exposition().decode(), PROMETHEUS_TYPE

    def _status(self, query: dict[str, list[str]]) -> tuple[int, str, str]:
        return 200, _json(self.hub.status()), "application/json"

    def _snapshot(self, query: dict[str, list[str]]) -> tuple[int, str, str]:
        venue = _one(query, "venue")
        symbol = _one(query, "symbol")
        depth_text = _one(query, "depth")
        depth = None
        if depth_text is not None:
            if not depth_text.isdigit() or int(depth_text) < 1:
                raise ValueError("depth must be a positive integer")
            depth = int(depth_text)
        state = self.hub.state
        items = [
            state.symbol_view(v, s, depth)
            for v, s in state.symbols()
            if (venue is None or v == venue) and (symbol is None or s == symbol)
        ]
        if not items and venue is not None and symbol is not None:
            return (
                404,
                _json({"error": f"nothing known about {venue} {symbol}"}),
                "application/json",
            )
        return 200, _json({"snapshots": items}), "application/json"


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _respond(conn: ServerConnection, status: int, body: str, content_type: str) -> Response:
    response = conn.respond(http.HTTPStatus(status), body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


def merge_exposition(upstream: bytes, own: bytes) -> bytes:
    """The flow process's metrics with the fan-out's families (``candlewax_ws_*``)
    taken from this process, where they are counted (every family is registered in
    both). Families are the blocks starting at ``# HELP <name>``."""
    mine = {name: block for name, block in _families(own).items() if name.startswith(WS_PREFIX)}
    kept = [block for name, block in _families(upstream).items() if name not in mine]
    return b"".join([*kept, *mine.values()])


def _families(text: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for block in text.split(b"# HELP ")[1:]:
        out[block.split(b" ", 1)[0]] = b"# HELP " + block
    return out
