"""The fan-out WebSocket protocol: channel names and typed server messages.

Shared by the server (``sinks/fanout``) and the SDK. Data messages are the
pipeline's own records (``candlewax.schema``); everything else the server says
is one of the control models below. Full description: docs/fanout.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from candlewax.schema import BBO, Bar, Book, DeadLetter, Late, Status, Trade

PROTOCOL_VERSION = 1
DEFAULT_URL = "ws://127.0.0.1:8765/stream"

# Wire channel -> record types it carries.
CHANNEL_TYPES: dict[str, tuple[str, ...]] = {
    "trades": ("trade",),
    "orderbook": ("book", "bbo"),
    "bars": ("bar",),
    "status": ("status",),
    "late": ("late",),
    "dead_letter": ("dead_letter",),
}
WIRE_CHANNEL_OF_TYPE = {kind: ch for ch, kinds in CHANNEL_TYPES.items() for kind in kinds}
# What "*" (or leaving channels out) means; late and dead_letter are opt-in.
DEFAULT_CHANNELS: tuple[str, ...] = ("trades", "orderbook", "bars", "status")
ALL_CHANNELS: tuple[str, ...] = tuple(CHANNEL_TYPES)

# Close codes the server uses.
CLOSE_POLICY = 1008  # bad / missing / expired token, or abuse
CLOSE_TOO_SLOW = 1013  # lagged longer than max_lag_s ("try again later")

RecordModel = Trade | Book | BBO | Bar | Late | Status | DeadLetter


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # newer servers may add fields


class Hello(_Msg):
    """First message on every connection."""

    type: Literal["hello"] = "hello"
    protocol: int
    heartbeat_s: float
    channels: list[str]
    default_channels: list[str]


class Subscribed(_Msg):
    """A subscription was accepted; echoes the effective filter ("*" = any)."""

    type: Literal["subscribed"] = "subscribed"
    id: str | int
    channels: list[str]
    symbols: list[str] | Literal["*"]
    exchanges: list[str] | Literal["*"]
    depth: int | None = Field(description="book levels per side; None = as produced")
    raw: bool


class Unsubscribed(_Msg):
    type: Literal["unsubscribed"] = "unsubscribed"
    ids: list[str | int]


class Snapshot(_Msg):
    """Latest state matching a new subscription, sent right after ``subscribed``
    and before any live update of it: book top-N at its depth, latest BBO, the
    latest bar per interval, the latest status per venue / symbol."""

    type: Literal["snapshot"] = "snapshot"
    id: str | int
    records: list[Any]


class VenueStatus(_Msg):
    state: str = Field(description="connected, disconnected, reconnecting, stale or unknown")
    messages_per_second: float
    records: int
    reconnects: int
    gaps: int
    checksum_failures: int
    last_message_ts: int | None
    last_event: str | None


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    ts: int
    uptime_s: float
    clients: int
    messages_per_second: float
    exchanges: dict[str, VenueStatus]


class Dropped(_Msg):
    """This client was too slow: ``count`` messages were dropped since the last notice."""

    type: Literal["dropped"] = "dropped"
    count: int
    total: int


class ServerError(_Msg):
    type: Literal["error"] = "error"
    reason: str
    id: str | int | None = None


class Pong(_Msg):
    """Reply to ``ping``; everything published before the ping was sent before it."""

    type: Literal["pong"] = "pong"
    ts: int
    id: str | int | None = None


class RawMessage(_Msg):
    """A venue frame exactly as received (``data``), for ``raw: true`` subscribers."""

    type: Literal["raw"] = "raw"
    venue: str
    symbol: str | None
    conn_id: str
    ts_ingest: int
    data: str


Control = Annotated[
    Hello | Subscribed | Unsubscribed | Snapshot | Heartbeat | Dropped | ServerError | Pong,
    Field(discriminator="type"),
]
CONTROL_ADAPTER: TypeAdapter[Any] = TypeAdapter(Control)
CONTROL_TYPES = frozenset(
    ("hello", "subscribed", "unsubscribed", "snapshot", "heartbeat", "dropped", "error", "pong")
)
