"""What every venue module provides: a parser and its live protocol.

A venue is one module in ``sources/`` exporting ``PARSER`` (a class
implementing :class:`Parser`) and ``PROTOCOL`` (an object implementing
:class:`VenueProtocol`). ``sources.registry`` maps venue names to them.

Channel names used in config and here: ``trades``, ``book`` (order-book
diffs/snapshots), ``bbo`` (the venue's own best bid/offer feed).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from candlewax.symbols import SymbolMap
from operators.events import DepthMsg
from sources.frames import RawFrame

CHANNELS = ("trades", "book", "bbo")


class FrameError(ValueError):
    """A frame that cannot be parsed; the message is the dead-letter reason."""


# What malformed venue JSON raises inside a parser (JSONDecodeError is a ValueError).
FRAME_FAULTS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def frame_error(venue: str, exc: Exception) -> FrameError:
    """The dead-letter reason for an exception a parser hit on a malformed frame."""
    if isinstance(exc, FrameError):
        return exc
    if isinstance(exc, orjson.JSONDecodeError):
        return FrameError(f"invalid JSON: {exc}")
    if isinstance(exc, KeyError):
        return FrameError(f"{venue}: missing field {exc}")
    return FrameError(f"{venue}: malformed frame: {exc!r}")


Item = dict[str, Any] | DepthMsg


class NativeSymbols:
    """Native instrument name -> unified symbol, cached per exact text; a name that
    cannot be mapped is a FrameError (the frame becomes a dead letter)."""

    __slots__ = ("_cache", "_field", "_symbols")

    def __init__(self, symbols: SymbolMap, field: str) -> None:
        self._symbols = symbols
        self._field = field
        self._cache: dict[str, str] = {}

    def __call__(self, native: Any) -> str:
        found = self._cache.get(native)
        if found is None:
            if native.__class__ is not str:
                raise FrameError(f"{self._field} must be a string, got {native!r}")
            try:
                found = self._symbols.unified(native)
            except ValueError as exc:
                raise FrameError(str(exc)) from None
            self._cache[native] = found
        return found

    def seen(self) -> set[str]:
        """Unified symbols looked up so far."""
        return set(self._cache.values())


class Parser(Protocol):
    venue: str

    def __init__(self, symbols: SymbolMap) -> None: ...

    def parse(self, frame: RawFrame) -> list[Item]:
        """Items carried by one frame; [] for control frames (acks, pongs).

        Raises FrameError for malformed frames (bad JSON, missing fields,
        unknown message kinds that claim to be data)."""
        ...

    def symbol_of(self, frame: RawFrame) -> str | None:
        """Unified symbol the frame belongs to (for the recorder), or None."""
        ...


class VenueProtocol(Protocol):
    venue: str
    default_ws_url: str
    default_rest_url: str | None
    # Application-level ping we must send (OKX text "ping" every 25 s); None if
    # the venue pings us with WebSocket ping frames (Binance), which websockets answers.
    app_ping_text: str | None
    app_ping_interval: float | None
    # The venue cuts connections after this many seconds (Binance 24 h); the
    # client opens a replacement before that. None = no documented limit.
    max_lifetime: float | None

    def connect_url(self, ws_url: str, natives: list[str], channels: list[str]) -> str:
        """URL to open for these instruments/channels (Binance combined stream path)."""
        ...

    def subscribe_messages(self, natives: list[str], channels: list[str]) -> list[str]:
        """Text frames to send after connecting (may be [] when the URL subscribes)."""
        ...

    def snapshot_url(self, rest_url: str, native: str) -> str | None:
        """REST depth snapshot URL (Binance), None for venues with in-band snapshots."""
        ...

    def resync_messages(self, native: str) -> list[str]:
        """Frames that make the venue resend a book snapshot (OKX: unsubscribe + subscribe)."""
        ...

    def is_control(self, text: str) -> bool:
        """True for keep-alive replies (e.g. OKX 'pong') that carry no data."""
        ...

    def is_shutdown_notice(self, text: str) -> bool:
        """True for the venue's warning that it will close this connection soon
        (Binance serverShutdown, OKX notice 64008): the client replaces it early.
        The frame still goes downstream (the parser reports it as a status)."""
        ...
