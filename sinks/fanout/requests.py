"""Client -> server messages: parsing and validation.

Every problem becomes a :class:`RequestError` with a reason the server sends
back as ``{"type": "error"}``; nothing a client sends can raise anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from candlewax.client.protocol import ALL_CHANNELS, DEFAULT_CHANNELS
from candlewax.schema import SYMBOL_RE, VENUES

MAX_LIST = 1000  # symbols / exchanges per subscription
MAX_DEPTH = 5000
_SUBSCRIBE_FIELDS = frozenset(("type", "id", "channels", "symbols", "exchanges", "depth", "raw"))
_UNSUBSCRIBE_FIELDS = frozenset(("type", "id"))
_PING_FIELDS = frozenset(("type", "id"))


class RequestError(ValueError):
    def __init__(self, reason: str, request_id: str | int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Filter:
    """What one subscription matches. ``None`` = any symbol / exchange / depth."""

    channels: frozenset[str]
    symbols: frozenset[str] | None
    exchanges: frozenset[str] | None
    depth: int | None
    raw: bool

    def echo(self) -> dict[str, Any]:
        return {
            "channels": sorted(self.channels),
            "symbols": "*" if self.symbols is None else sorted(self.symbols),
            "exchanges": "*" if self.exchanges is None else sorted(self.exchanges),
            "depth": self.depth,
            "raw": self.raw,
        }


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: str | int | None
    filter: Filter


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: str | int | None  # None = every subscription


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None


Request = Subscribe | Unsubscribe | Ping


def parse_request(data: str | bytes) -> Request:
    if isinstance(data, bytes):
        raise RequestError("binary messages are not supported; send JSON text")
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise RequestError("a message must be a JSON object with a 'type'")
    request_id = _request_id(msg.get("id"))
    kind = msg.get("type")
    if kind == "subscribe":
        _no_unknown(msg, _SUBSCRIBE_FIELDS, request_id)
        return Subscribe(request_id, _filter(msg, request_id))
    if kind == "unsubscribe":
        _no_unknown(msg, _UNSUBSCRIBE_FIELDS, request_id)
        return Unsubscribe(request_id)
    if kind == "ping":
        _no_unknown(msg, _PING_FIELDS, request_id)
        return Ping(request_id)
    raise RequestError(
        f"unknown message type {kind!r}; expected subscribe, unsubscribe or ping", request_id
    )


def _request_id(value: Any) -> str | int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    raise RequestError("'id' must be an integer or a string of 1-64 characters")


def _no_unknown(msg: dict[str, Any], allowed: frozenset[str], request_id: str | int | None) -> None:
    unknown = sorted(set(msg) - allowed)
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(map(repr, unknown))} in {msg['type']!r}; "
            f"allowed: {', '.join(sorted(allowed))}",
            request_id,
        )


def _names(msg: dict[str, Any], field: str, request_id: str | int | None) -> list[str] | None:
    """A list of strings, or None for omitted / "*" (or a list containing "*")."""
    value = msg.get(field, "*")
    if value == "*":
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"'{field}' must be a list of strings or \"*\"", request_id)
    if len(value) > MAX_LIST:
        raise RequestError(f"'{field}' lists more than {MAX_LIST} entries", request_id)
    return None if "*" in value else value


def _filter(msg: dict[str, Any], request_id: str | int | None) -> Filter:
    raw = msg.get("raw", False)
    if raw == "*":
        raw = False
    if not isinstance(raw, bool):
        raise RequestError("'raw' must be true or false", request_id)

    channels = msg.get("channels", "*")
    if channels == "*":
        chosen = frozenset(DEFAULT_CHANNELS)
    else:
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise RequestError("'channels' must be a list of strings or \"*\"", request_id)
        if "*" in channels:  # "*" = the default channels, plus any others listed
            channels = [c for c in channels if c != "*"] + list(DEFAULT_CHANNELS)
        unknown = sorted(set(channels) - set(ALL_CHANNELS))
        if unknown:
            raise RequestError(
                f"unknown channel(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(ALL_CHANNELS)}",
                request_id,
            )
        chosen = frozenset(channels)
        if not chosen and not raw:
            raise RequestError(
                "empty 'channels' matches nothing (allowed only with raw)", request_id
            )

    symbols = _names(msg, "symbols", request_id)
    for symbol in symbols or ():
        if not SYMBOL_RE.match(symbol):
            raise RequestError(
                f"symbol {symbol!r} is not a unified symbol like BTC/USDT or BTC/USDT:USDT",
                request_id,
            )
    exchanges = _names(msg, "exchanges", request_id)
    for venue in exchanges or ():
        if venue not in VENUES:
            raise RequestError(
                f"unknown exchange {venue!r}; known: {', '.join(VENUES)}", request_id
            )

    depth = msg.get("depth", "*")
    if depth == "*" or depth is None:
        depth = None
    elif isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise RequestError(f"'depth' must be an integer 1-{MAX_DEPTH} or \"*\"", request_id)

    return Filter(
        channels=chosen,
        symbols=None if symbols is None else frozenset(symbols),
        exchanges=None if exchanges is None else frozenset(exchanges),
        depth=depth,
        raw=raw,
    )
