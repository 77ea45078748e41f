"""Decoding server messages into typed objects.

A WebSocket message is one JSON object, or a JSON array of them when the
server batches. Records become the schema models (``candlewax.schema``),
control messages the models of ``candlewax.client.protocol``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ValidationError

from candlewax.client.protocol import CONTROL_ADAPTER, CONTROL_TYPES, RawMessage, Snapshot
from candlewax.schema import CHANNEL_OF_TYPE, validate_record

log = logging.getLogger("candlewax.client")
Message = BaseModel | dict[str, Any]


class Counts(Protocol):
    dropped: int
    unknown: int


def kind_of(message: Message) -> str:
    if isinstance(message, dict):
        return str(message.get("type"))
    return str(getattr(message, "type", ""))


def decode(text: str | bytes, *, typed: bool, stats: Counts) -> list[Message]:
    """Every message in one WebSocket message. Items this SDK cannot read (a newer
    server's message type, a record off the contract) are counted in
    ``stats.unknown`` and skipped."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        stats.unknown += 1
        return []
    out: list[Message] = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict):
            stats.unknown += 1
            continue
        if item.get("type") == "dropped":
            stats.dropped += int(item.get("count") or 0)
        if not typed:
            out.append(item)
            continue
        try:
            message = _typed(item)
        except ValidationError as exc:
            log.warning("candlewax client: unreadable %r message: %s", item.get("type"), exc)
            message = None
        if message is None:
            stats.unknown += 1
        else:
            out.append(message)
    return out


def _typed(item: dict[str, Any]) -> BaseModel | None:
    kind = item.get("type")
    if kind in CHANNEL_OF_TYPE:
        return validate_record(item)
    if kind == "raw":
        return RawMessage.model_validate(item)
    if kind in CONTROL_TYPES:
        message: BaseModel = CONTROL_ADAPTER.validate_python(item)
        if isinstance(message, Snapshot):
            # One unreadable record (say, from a newer server) costs only itself,
            # as it would live, not the whole snapshot.
            records = []
            for raw in message.records:
                try:
                    records.append(validate_record(raw))
                except ValidationError as exc:
                    log.warning("candlewax client: unreadable snapshot record: %s", exc)
            message = message.model_copy(update={"records": records})
        return message
    return None
