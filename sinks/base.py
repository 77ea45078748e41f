"""What every output sink shares: the protocol, channel lookup and JSON encoding."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

import orjson

from candlewax.schema import CHANNEL_OF_TYPE, CHANNELS, decimal_text

Record = dict[str, Any]


class Sink(Protocol):
    def write_batch(self, records: list[Record]) -> None: ...

    def close(self) -> None: ...


class SinkError(ValueError):
    """A record that breaks the output contract (a bug upstream, not bad market data)."""


def channel_of(record: Record) -> str:
    kind = record.get("type")
    channel = CHANNEL_OF_TYPE.get(kind) if isinstance(kind, str) else None
    if channel is None:
        raise SinkError(f"record has no known 'type' ({kind!r}): {str(record)[:200]}")
    return channel


def check_channels(channels: Iterable[str] | None) -> frozenset[str]:
    """Validated channel filter; None means every channel."""
    if channels is None:
        return frozenset(CHANNELS)
    chosen = frozenset(channels)
    unknown = chosen - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}; known: {', '.join(CHANNELS)}")
    return chosen


def json_default(value: Any) -> Any:
    """orjson fallback for every sink: records carry decimal text already; a stray
    Decimal is still rendered exactly; anything else cannot be a record field."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a record")


def dumps_line(record: Record) -> bytes:
    """One JSON line (trailing newline included)."""
    try:
        return orjson.dumps(record, default=json_default, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise SinkError(f"record cannot be encoded as JSON: {exc}") from None


def group_lines(records: list[Record], channels: frozenset[str]) -> dict[str, list[bytes]]:
    """Encoded lines per channel, records of unselected channels dropped.

    Encodes the whole batch before anything is written, so a bad record
    fails the batch without leaving half of it on disk."""
    out: dict[str, list[bytes]] = {}
    for record in records:
        channel = channel_of(record)
        if channel in channels:
            out.setdefault(channel, []).append(dumps_line(record))
    return out
