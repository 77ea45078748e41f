"""Normalized records as Kafka messages: key, JSON value and headers.

Value: the record as JSON (orjson), ``schema_version`` included, exactly the
line the JSONL sink writes (without the newline). Key: ``"venue:symbol"``.
Headers: ``msg_id`` (deterministic, ``sinks.message_ids``), ``type`` (the
record type, to filter book from bbo without parsing) and, for dead letters,
``reason``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from candlewax.schema import decimal_text
from sinks.kafka_topics import record_key
from sinks.message_ids import record_id
from sources.kafka_raw import ID_HEADER, Headers

TYPE_HEADER = "type"
REASON_HEADER = "reason"
_TYPE_BYTES = {
    kind: kind.encode() for kind in ("trade", "book", "bbo", "bar", "late", "status", "dead_letter")
}


def exact(value: Any) -> Any:
    """orjson fallback: a stray Decimal is still rendered as exact text."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a record")


def encode_record(topic: str, record: dict[str, Any]) -> tuple[str, bytes, Headers]:
    """(key, value, headers); raises TypeError for a record JSON cannot carry."""
    kind = record["type"]
    key = record_key(record)
    value = orjson.dumps(record, default=exact)
    headers: Headers = [
        (ID_HEADER, record_id(topic, key, record, value)),
        (TYPE_HEADER, _TYPE_BYTES.get(kind) or str(kind).encode()),
    ]
    if kind == "dead_letter":
        headers.append((REASON_HEADER, str(record["reason"]).encode("utf-8", "replace")[:1024]))
    return key, value, headers
