"""The versioned output contract of candlewax.

Every record leaving the pipeline is a plain dict with a ``type`` field whose
shape is exactly one of the pydantic models below. The hot path builds the
dicts directly (see ``make_*`` helpers); the models are the contract, used by
``candlewax schema``, the docs and the tests.

Conventions:
- ``ts_exchange`` / ``ts_ingest`` are integer microseconds since the Unix epoch.
  When a venue sends no event time (Binance spot bookTicker), ``ts_exchange``
  equals ``ts_ingest``.
- prices and sizes are decimal strings exactly as the venue sent them (or, for
  computed values like VWAP, exact ``Decimal`` arithmetic rendered without
  exponent); never floats.
- ``symbol`` is ccxt's unified form: ``BTC/USDT``, perpetuals ``BTC/USDT:USDT``.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Final = 1

Venue = Literal["binance", "binance-usdm", "coinbase", "kraken", "okx", "bybit", "hyperliquid"]
VENUES: tuple[str, ...] = (
    "binance",
    "binance-usdm",
    "coinbase",
    "kraken",
    "okx",
    "bybit",
    "hyperliquid",
)

# BASE/QUOTE, optional :SETTLE and optional -EXPIRY[-STRIKE-C|P] (ccxt unified).
SYMBOL_RE = re.compile(r"^[a-z]?[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+(-[0-9]{6}(-[0-9.]+-[CP])?)?)?$")
# Decimal text: ASCII digits with an optional fraction; no sign, exponent, blanks,
# NaN or Infinity. Prices and sizes are positive; only computed volumes may be zero.
DECIMAL_RE = r"^[0-9]+(\.[0-9]+)?$"
# The same, with at least one non-zero digit (no lookahead: pydantic's regex engine has none).
POSITIVE_DECIMAL_RE = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)$"

DecimalText = Annotated[
    str, Field(pattern=DECIMAL_RE, description="exact non-negative decimal text")
]
PositiveDecimal = Annotated[
    str, Field(pattern=POSITIVE_DECIMAL_RE, description="exact positive decimal text")
]
Symbol = Annotated[str, Field(pattern=SYMBOL_RE.pattern, description="ccxt unified symbol")]
Micros = Annotated[int, Field(ge=0, description="microseconds since the Unix epoch")]
Level = tuple[PositiveDecimal, PositiveDecimal]

StatusEvent = Literal[
    "connected",
    "disconnected",
    "reconnecting",
    "subscribed",
    "gap_detected",
    "checksum_mismatch",
    "resync_requested",
    "resynced",
    "stale",
    "planned_reconnect",
    "error",
]


# Every field is always written, defaults included: the JSON Schema says so.
_RECORD_CONFIG = ConfigDict(
    extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
)


class _Record(BaseModel):
    model_config = _RECORD_CONFIG
    schema_version: Literal[1] = SCHEMA_VERSION
    venue: Venue
    symbol: Symbol
    ts_exchange: Micros
    ts_ingest: Micros


class Trade(_Record):
    type: Literal["trade"] = "trade"
    trade_id: str
    price: PositiveDecimal
    size: PositiveDecimal
    side: Literal["buy", "sell"] = Field(description="aggressor side")


class Book(_Record):
    """Top-N snapshot of a rebuilt order book, best level first."""

    type: Literal["book"] = "book"
    depth: int = Field(ge=1)
    bids: list[Level]
    asks: list[Level]
    sequence: int | None = Field(description="venue update id of the last applied message")


class BBO(_Record):
    type: Literal["bbo"] = "bbo"
    bid_price: PositiveDecimal | None
    bid_size: PositiveDecimal | None
    ask_price: PositiveDecimal | None
    ask_size: PositiveDecimal | None
    sequence: int | None = None
    origin: Literal["book", "ticker"] = Field(
        description="'book' = derived from the rebuilt book, 'ticker' = the venue's own BBO feed"
    )


class Bar(BaseModel):
    model_config = _RECORD_CONFIG
    type: Literal["bar"] = "bar"
    schema_version: Literal[1] = SCHEMA_VERSION
    venue: Venue
    symbol: Symbol
    interval: str = Field(pattern=r"^[0-9]+(ms|s|m|h|d)$")
    start: Micros = Field(description="window start, inclusive, epoch aligned")
    end: Micros = Field(description="window end, exclusive")
    open: PositiveDecimal | None
    high: PositiveDecimal | None
    low: PositiveDecimal | None
    close: PositiveDecimal | None
    volume: DecimalText
    quote_volume: DecimalText
    vwap: PositiveDecimal | None
    buy_volume: DecimalText
    sell_volume: DecimalText
    trades: int = Field(ge=0)
    first_trade_id: str | None
    last_trade_id: str | None
    final: bool = Field(description="false for an in-progress update, true once the window closed")
    filled: bool = Field(default=False, description="true for an empty bar made by empty-bar fill")


class Late(BaseModel):
    """A trade that arrived after its window closed (never silently dropped)."""

    model_config = _RECORD_CONFIG
    type: Literal["late"] = "late"
    schema_version: Literal[1] = SCHEMA_VERSION
    interval: str
    window_start: Micros
    trade: Trade


class Status(BaseModel):
    model_config = _RECORD_CONFIG
    type: Literal["status"] = "status"
    schema_version: Literal[1] = SCHEMA_VERSION
    venue: Venue
    symbol: Symbol | None
    event: StatusEvent
    ts: Micros
    detail: str = ""


class DeadLetter(BaseModel):
    model_config = _RECORD_CONFIG
    type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = SCHEMA_VERSION
    venue: str
    ts_ingest: Micros
    reason: str
    raw: str


Record = Annotated[
    Trade | Book | BBO | Bar | Late | Status | DeadLetter, Field(discriminator="type")
]
RECORD_ADAPTER: TypeAdapter[Any] = TypeAdapter(Record)

# Output channel of each record type; sinks and the JSONL file names use these.
CHANNEL_OF_TYPE = {
    "trade": "trades",
    "book": "book",
    "bbo": "book",
    "bar": "bars",
    "late": "late",
    "status": "status",
    "dead_letter": "dead_letter",
}
CHANNELS = ("trades", "book", "bars", "status", "late", "dead_letter")


def validate_record(record: dict[str, Any]) -> BaseModel:
    """Validate one output dict against the contract (raises pydantic.ValidationError)."""
    result: BaseModel = RECORD_ADAPTER.validate_python(record)
    return result


def json_schema() -> dict[str, Any]:
    schema: dict[str, Any] = RECORD_ADAPTER.json_schema(mode="serialization")
    schema["title"] = f"candlewax record v{SCHEMA_VERSION}"
    return schema


# ---- hot-path constructors (plain dicts, same fields as the models) ----


def make_trade(
    venue: str,
    symbol: str,
    ts_exchange: int,
    ts_ingest: int,
    trade_id: str,
    price: str,
    size: str,
    side: str,
) -> dict[str, Any]:
    return {
        "type": "trade",
        "schema_version": SCHEMA_VERSION,
        "venue": venue,
        "symbol": symbol,
        "ts_exchange": ts_exchange,
        "ts_ingest": ts_ingest,
        "trade_id": trade_id,
        "price": price,
        "size": size,
        "side": side,
    }


def make_status(
    venue: str, symbol: str | None, event: str, ts: int, detail: str = ""
) -> dict[str, Any]:
    return {
        "type": "status",
        "schema_version": SCHEMA_VERSION,
        "venue": venue,
        "symbol": symbol,
        "event": event,
        "ts": ts,
        "detail": detail,
    }


def make_dead_letter(venue: str, ts_ingest: int, reason: str, raw: str) -> dict[str, Any]:
    return {
        "type": "dead_letter",
        "schema_version": SCHEMA_VERSION,
        "venue": venue,
        "ts_ingest": ts_ingest,
        "reason": reason,
        "raw": raw,
    }


def make_bbo(
    venue: str,
    symbol: str,
    ts_exchange: int,
    ts_ingest: int,
    bid: tuple[str, str] | None,
    ask: tuple[str, str] | None,
    sequence: int | None,
    origin: str,
) -> dict[str, Any]:
    return {
        "type": "bbo",
        "schema_version": SCHEMA_VERSION,
        "venue": venue,
        "symbol": symbol,
        "ts_exchange": ts_exchange,
        "ts_ingest": ts_ingest,
        "bid_price": bid[0] if bid else None,
        "bid_size": bid[1] if bid else None,
        "ask_price": ask[0] if ask else None,
        "ask_size": ask[1] if ask else None,
        "sequence": sequence,
        "origin": origin,
    }


def make_book(
    venue: str,
    symbol: str,
    ts_exchange: int,
    ts_ingest: int,
    depth: int,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    sequence: int | None,
) -> dict[str, Any]:
    """A ``candlewax.schema.Book`` dict; levels are (price, size) 2-tuples."""
    return {
        "type": "book",
        "schema_version": SCHEMA_VERSION,
        "venue": venue,
        "symbol": symbol,
        "ts_exchange": ts_exchange,
        "ts_ingest": ts_ingest,
        "depth": depth,
        "bids": bids,
        "asks": asks,
        "sequence": sequence,
    }


def now_us() -> int:
    """The current time in the contract's unit: integer microseconds since the epoch."""
    return time.time_ns() // 1000


def decimal_text(value: Decimal) -> str:
    """Render a Decimal as plain positional text (no exponent, no float artifacts)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"
