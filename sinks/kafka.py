"""Kafka sinks: normalized records and raw frames (confluent-kafka / librdkafka).

``KafkaRecordSink`` writes records to ``<prefix>.norm.*`` and dead letters to
``<prefix>.dlq`` (sinks/kafka_codec.py), as are records it cannot encode or of
no known type (counted); ``KafkaRawSink`` writes raw frames to
``<prefix>.raw.<venue>`` (sources/kafka_raw.py). Both create missing topics on
start and share the delivery guarantees of ``ReliableProducer``: idempotent,
acks=all, a full queue waits instead of failing, delivery errors counted,
reported and retried in produce order, ``checkpoint`` waits for every
acknowledgement.

Topic layout: sinks/kafka_topics.py. Guide: docs/kafka_redis.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaException

from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.metrics import SINK_ERRORS
from candlewax.schema import make_dead_letter
from sinks.base import SinkError, check_channels, json_default
from sinks.kafka_codec import encode_record
from sinks.kafka_producer import ReliableProducer
from sinks.kafka_topics import TOPIC_OF_TYPE, all_topics, ensure_topics, record_topics
from sinks.message_ids import ID_OF
from sources.frames import RawFrame
from sources.kafka_raw import CONN_HEADER, HINT_HEADER, ID_HEADER, TS_HEADER, Headers, raw_topic

# Types with a plain "venue:symbol" key and a value-independent id.
FAST_ID = {kind: ID_OF[kind] for kind in ("trade", "bbo", "book", "bar")}


def _producer(cfg: KafkaSinkConfig, venues: Iterable[str], raw: bool) -> ReliableProducer:
    if cfg.create_topics:
        ensure_topics(
            cfg.brokers,
            all_topics(cfg.topic_prefix, venues, raw),
            partitions=cfg.partitions,
            replication=cfg.replication,
            topic_config=cfg.topic_config,
        )
    return ReliableProducer(
        cfg.brokers, dict(cfg.producer), status_topic=f"{cfg.topic_prefix}.norm.status"
    )


class KafkaRecordSink:
    """Normalized records -> one topic per record family, keyed ``"venue:symbol"``."""

    def __init__(self, cfg: KafkaSinkConfig, venues: Sequence[str] = ()) -> None:
        self.topics = record_topics(cfg.topic_prefix, check_channels(cfg.channels))
        self.dlq = f"{cfg.topic_prefix}.dlq"
        self.producer = _producer(cfg, venues, raw=False)
        self.dead_letters = 0  # records this sink could not encode, sent to the DLQ instead

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        # encode_record inlined for the frequent types (the loop runs per record;
        # bench/sink_throughput.py measures it against the bare producer); the rest, and
        # anything odd, takes encode_record itself.
        topics = self.topics
        produce, in_flight = self.producer.hot_produce()
        keep = in_flight.messages.append  # kept until delivered (sinks/kafka_producer.py)
        failed = self.producer.produce_failed
        dumps = orjson.dumps
        produced = 0
        for record in records:
            try:
                kind: Any = record.get("type")
                topic = topics.get(kind)
                if topic is None:
                    if kind in TOPIC_OF_TYPE:
                        continue  # channel not selected
                    raise SinkError(f"record has no known 'type' ({kind!r})")
                make_id = FAST_ID.get(kind)
                if make_id is not None:
                    key = f"{record['venue']}:{record['symbol']}"
                    value = dumps(record, default=json_default)
                    headers: tuple[tuple[str, str | bytes | None], ...] = (
                        (ID_HEADER, make_id(key, record)),
                    )
                else:
                    key, value, header_list = encode_record(record)
                    headers = tuple(header_list)
            except (TypeError, KeyError, SinkError) as exc:  # a bug upstream: keep it, as a DLQ
                topic, key, value, header_list = self._dead_letter(record, exc)
                headers = tuple(header_list)
            keep((topic, value, key, headers))
            try:
                produce(topic, value, key, headers=list(headers), on_delivery=in_flight)
            except (BufferError, KafkaException) as exc:
                failed(in_flight, exc)
            produced += 1
        self.producer.after_batch(produced)

    def _dead_letter(
        self, record: dict[str, Any], exc: Exception
    ) -> tuple[str, str, bytes, Headers]:
        self.dead_letters += 1
        SINK_ERRORS.labels(self.producer.label).inc()
        venue = str(record.get("venue", ""))
        ts = record.get("ts_ingest")
        reason = f"kafka sink cannot encode: {type(exc).__name__}: {exc}"
        letter = make_dead_letter(venue, ts if type(ts) is int else 0, reason, repr(record))
        key, value, headers = encode_record(letter)
        return self.dlq, key, value, headers

    def checkpoint(self) -> None:
        self.producer.checkpoint()

    def close(self) -> None:
        self.producer.close()


class KafkaRawSink:
    """(frame, unified symbol) pairs -> ``<prefix>.raw.<venue>``, the text as received."""

    def __init__(self, cfg: KafkaSinkConfig, venues: Sequence[str] = ()) -> None:
        self.prefix = cfg.topic_prefix
        self.dlq = f"{cfg.topic_prefix}.dlq"
        self.producer = _producer(cfg, venues, raw=True)
        self._routes: dict[tuple[str, str | None], tuple[str, str]] = {}

    def _route(self, venue: str, symbol: str | None) -> tuple[str, str]:
        """(topic, key) of a venue and symbol, computed once."""
        route = self._routes[(venue, symbol)] = (
            raw_topic(self.prefix, venue),
            f"{venue}:{symbol or ''}",
        )
        return route

    def write_batch(self, items: Sequence[tuple[RawFrame, str | None]]) -> None:
        # The per-frame work of frame_headers / frame_id, inlined: this loop runs for
        # every frame received (bench/sink_throughput.py measures it against the bare producer).
        produce, in_flight = self.producer.hot_produce()
        keep = in_flight.messages.append  # kept until delivered (sinks/kafka_producer.py)
        failed = self.producer.produce_failed
        routes = self._routes
        crc32 = zlib.crc32
        for frame, symbol in items:
            venue, conn_id, ts_ingest, text, hint = frame  # one unpack, not five lookups
            route = routes.get((venue, symbol)) or self._route(venue, symbol)
            try:
                value = text.encode()
            except UnicodeEncodeError as exc:  # lone surrogates: not UTF-8, cannot round-trip
                self._frame_dead_letter(frame, f"raw frame is not UTF-8: {exc}")
                continue
            ts = str(ts_ingest)
            # frame_id_of, inlined
            headers: Headers = [
                (ID_HEADER, "%s:%s:%08x" % (conn_id, ts, crc32(value))),  # noqa: UP031
                (TS_HEADER, ts),
                (CONN_HEADER, conn_id),
            ]
            if hint is not None:
                headers.append((HINT_HEADER, hint))
            topic, key = route
            keep((topic, value, key, tuple(headers)))
            try:
                produce(topic, value, key, headers=headers, on_delivery=in_flight)
            except (BufferError, KafkaException) as exc:
                failed(in_flight, exc)
        self.producer.after_batch(len(items))

    def _frame_dead_letter(self, frame: RawFrame, reason: str) -> None:
        letter = make_dead_letter(frame.venue, frame.ts_ingest, reason, repr(frame.text))
        key, value, headers = encode_record(letter)
        self.producer.produce(self.dlq, value, key, headers)

    def checkpoint(self) -> None:
        self.producer.checkpoint()

    def close(self) -> None:
        self.producer.close()
