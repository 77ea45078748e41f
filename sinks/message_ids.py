"""Message keys ("venue:symbol") and deterministic message ids.

At-least-once delivery (Bytewax recovery replays the epoch after the last
snapshot; a sink resends after a connection loss) can repeat a message; the id
lets a consumer drop the repeats. An id is unique within its topic / stream
and readable, built from what identifies the record, never from a counter:

- trade ``binance:BTC/USDT|trade:<trade_id>``
- bar ``<key>|bar:<interval>:<start>:<final>`` (in-progress updates add ``:<trades>``)
- book ``<key>|book:<sequence>:<ts_exchange>``
- bbo ``<key>|bbo:<origin>:<sequence>:<ts_exchange>:<ts_ingest>``
- late ``<key>|late:<interval>:<window_start>:<trade_id>``
- status, dead letter (their content is their identity): ``<key>|<blake2b-128 of the JSON>``
- raw frame ``<conn_id>:<ts_ingest>:<crc32 of the text>`` (the CRC only tells apart
  frames of one connection received in the same microsecond)

Plain text rather than one hash of it: it costs a fraction of a hash on the
per-message hot path (bench/sink_throughput.py) and is just as deterministic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from sources.frames import RawFrame

Record = dict[str, Any]


def _bar(k: str, r: Record) -> str:
    if r["final"]:
        return f"{k}|bar:{r['interval']}:{r['start']}:True"
    return f"{k}|bar:{r['interval']}:{r['start']}:False:{r['trades']}"


# Id makers (key, record) -> id of the types whose id needs no look at the encoded
# value; one f-string each, as they run per message (sinks call them directly).
ID_OF: dict[str, Callable[[str, Record], str]] = {
    "trade": lambda k, r: f"{k}|trade:{r['trade_id']}",
    "bbo": lambda k, r: (
        f"{k}|bbo:{r['origin']}:{r['sequence']}:{r['ts_exchange']}:{r['ts_ingest']}"
    ),
    "book": lambda k, r: f"{k}|book:{r['sequence']}:{r['ts_exchange']}",
    "bar": _bar,
    "late": lambda k, r: f"{k}|late:{r['interval']}:{r['window_start']}:{r['trade']['trade_id']}",
}


def record_key(record: Record) -> str:
    """``"venue:symbol"`` of a record (a late record: of its trade); ``"venue:"`` without one."""
    if record.get("type") == "late":
        trade = record["trade"]
        return f"{trade['venue']}:{trade['symbol']}"
    return f"{record.get('venue', '')}:{record.get('symbol') or ''}"


def record_id(key: str, record: Record, value: bytes) -> str:
    """Id of ``record`` (encoded as ``value``) sent under ``key``."""
    make = ID_OF.get(record["type"])
    if make is None:
        return f"{key}|{blake2b(value, digest_size=16).hexdigest()}"
    return make(key, record)


def frame_id(frame: RawFrame) -> str:
    """Id of a raw frame."""
    text = frame.text.encode("utf-8", "surrogatepass")
    return frame_id_of(frame.conn_id, str(frame.ts_ingest), text)


def frame_id_of(conn_id: str, ts_ingest: str, text: bytes) -> str:
    """``frame_id`` from the parts a sink has at hand (the hot path)."""
    return "%s:%s:%08x" % (conn_id, ts_ingest, zlib.crc32(text))  # noqa: UP031 (fastest)
