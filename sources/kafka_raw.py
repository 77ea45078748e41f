"""Raw frames in Kafka: the topic layout and header codec shared by the raw sink
(stage 1) and the Kafka source (stage 2).

A raw message is one ``RawFrame``: value = the frame text exactly as received
(UTF-8), key = ``"venue:symbol"`` (``"venue:"`` when the frame names no
symbol), headers:

- ``msg_id``: deterministic id (``sinks.message_ids.frame_id``)
- ``ts_ingest``: local receive time, integer microseconds, as ASCII digits
- ``conn_id``: the connection that received it
- ``hint``: only for injected REST bodies (``depth_snapshot:<SYMBOL>``), so a
  book rebuilt in stage 2 starts from the same snapshots as in stage 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from candlewax.config import KafkaInput, PipelineConfig
from candlewax.schema import make_dead_letter, make_status
from sources.frames import RawFrame

ID_HEADER = "msg_id"
TS_HEADER = "ts_ingest"
CONN_HEADER = "conn_id"
HINT_HEADER = "hint"

Headers = list[tuple[str, str | bytes | None]]  # as confluent-kafka's produce() takes them
ReadHeaders = Sequence[tuple[str, bytes | None]]


class RawMessageError(ValueError):
    """A message on a raw topic that is not a frame written by the raw sink."""


def raw_topic(prefix: str, venue: str) -> str:
    return f"{prefix}.raw.{venue}"


def frame_headers(frame: RawFrame, msg_id: str) -> Headers:
    """Headers of a raw message (text values: confluent-kafka encodes them as UTF-8)."""
    headers: Headers = [
        (ID_HEADER, msg_id),
        (TS_HEADER, str(frame.ts_ingest)),
        (CONN_HEADER, frame.conn_id),
    ]
    if frame.hint is not None:
        headers.append((HINT_HEADER, frame.hint))
    return headers


def frame_of(venue: str, value: bytes | None, headers: ReadHeaders | None) -> RawFrame:
    """The frame a raw message carries; raises RawMessageError if it is not one."""
    if value is None:
        raise RawMessageError("raw message without a value")
    found = {name: data for name, data in headers or () if isinstance(data, bytes)}
    ts = found.get(TS_HEADER)
    if ts is None or not ts.isdigit():
        raise RawMessageError(f"raw message without a valid {TS_HEADER!r} header: {ts!r}")
    try:
        text = value.decode("utf-8")
        conn_id = found.get(CONN_HEADER, b"").decode("utf-8")
        hint_bytes = found.get(HINT_HEADER)
        hint = None if hint_bytes is None else hint_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RawMessageError(f"raw message is not UTF-8: {exc}") from None
    return RawFrame(venue, conn_id, int(ts), text, hint)


def item_of(
    venue: str, value: bytes | None, headers: ReadHeaders | None
) -> RawFrame | dict[str, Any]:
    """The frame of a raw message, or a dead letter saying why there is none."""
    try:
        return frame_of(venue, value, headers)
    except RawMessageError as exc:
        raw = "" if value is None else value.decode("utf-8", "replace")
        return make_dead_letter(venue, 0, str(exc), raw)


def consumer_error(venue: str, ts: int, detail: str) -> dict[str, Any]:
    """Status record for a consumer error delivered in-band (the flow goes on)."""
    return make_status(venue, None, "error", ts, f"kafka consumer: {detail}")


def topic_of(source_venue: str, kin: KafkaInput) -> str:
    return kin.topic or raw_topic(kin.topic_prefix, source_venue)


def kafka_inputs(cfg: PipelineConfig) -> dict[str, tuple[str, KafkaInput]]:
    """topic -> (venue, settings) for every ``mode: kafka`` source."""
    out: dict[str, tuple[str, KafkaInput]] = {}
    for src in cfg.sources:
        if src.mode == "kafka" and src.kafka is not None:
            out[topic_of(src.venue, src.kafka)] = (src.venue, src.kafka)
    return out


def consumer_settings(kin: KafkaInput) -> dict[str, Any]:
    """Extra consumer settings, librdkafka's log through Python logging instead of raw
    to stderr. (Bytewax's KafkaSource commits no offsets: they live in its recovery
    store; it also hands these settings to an AdminClient.)"""
    from sinks.kafka_client import LibrdkafkaLog  # sinks.kafka_client imports this module

    return {"logger": LibrdkafkaLog(), **kin.consumer}
