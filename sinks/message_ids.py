"""Deterministic message ids: the same record always gets the same id.

At-least-once delivery (Bytewax recovery replays the epoch after the last
snapshot; a sink resends after a connection loss) can repeat a message; the id
lets a consumer drop the repeats. It hashes the destination (topic or stream),
the key and what identifies the record: the trade id; a bar's interval, start
and finality; a book's sequence; for status records and dead letters, whose
content is their identity, the encoded record itself.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from sources.frames import RawFrame

Record = dict[str, Any]


def _digest(data: bytes) -> bytes:
    return blake2b(data, digest_size=16).hexdigest().encode()


def record_identity(record: Record) -> str | None:
    """What identifies ``record`` among its key's records; None: the whole content does."""
    kind = record.get("type")
    if kind == "trade":
        return f"trade:{record['trade_id']}"
    if kind == "bar":
        # In-progress updates of one window differ by their trade count.
        final = record["final"]
        progress = "" if final else f":{record['trades']}"
        return f"bar:{record['interval']}:{record['start']}:{final}{progress}"
    if kind == "book":
        return f"book:{record['sequence']}:{record['ts_exchange']}"
    if kind == "bbo":
        return (
            f"bbo:{record['origin']}:{record['sequence']}:"
            f"{record['ts_exchange']}:{record['ts_ingest']}"
        )
    if kind == "late":
        return f"late:{record['interval']}:{record['window_start']}:{record['trade']['trade_id']}"
    return None


def record_id(destination: str, key: str, record: Record, value: bytes) -> bytes:
    """Hex id (32 ASCII bytes) of an encoded record sent to ``destination`` under ``key``."""
    identity = record_identity(record)
    head = f"{destination}\0{key}\0".encode()
    if identity is None:
        return _digest(head + value)
    return _digest(head + identity.encode())


def frame_id(destination: str, key: str, frame: RawFrame) -> bytes:
    """Hex id of a raw frame: its connection, receive time and text."""
    return frame_id_of(
        id_head(destination, key),
        frame.conn_id.encode(),
        str(frame.ts_ingest).encode(),
        frame.text.encode("utf-8", "surrogatepass"),
    )


def id_head(destination: str, key: str) -> bytes:
    """The part of every id under one destination and key (sinks cache it)."""
    return f"{destination}\0{key}\0".encode()


def frame_id_of(head: bytes, conn_id: bytes, ts_ingest: bytes, text: bytes) -> bytes:
    """``frame_id`` from parts a sink has encoded already (the hot path)."""
    return _digest(b"".join((head, conn_id, b"\0", ts_ingest, b"\0", text)))
