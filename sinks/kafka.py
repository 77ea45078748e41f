"""Kafka sinks: normalized records and raw frames (confluent-kafka / librdkafka).

``KafkaRecordSink`` writes records to ``<prefix>.norm.*`` and dead letters to
``<prefix>.dlq`` (sinks/kafka_codec.py); ``KafkaRawSink`` writes raw frames to
``<prefix>.raw.<venue>`` (sources/kafka_raw.py). Both create missing topics on
start and share the delivery guarantees of ``ReliableProducer``: idempotent,
acks=all, a full queue waits instead of failing, delivery errors counted,
reported and retried, ``checkpoint`` waits for every acknowledgement.

Topic layout: sinks/kafka_topics.py. Guide: docs/kafka_redis.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.schema import make_dead_letter
from sinks.base import check_channels
from sinks.kafka_codec import encode_record
from sinks.kafka_producer import ReliableProducer
from sinks.kafka_topics import all_topics, ensure_topics, record_topics
from sinks.message_ids import frame_id_of, id_head
from sources.frames import RawFrame
from sources.kafka_raw import CONN_HEADER, HINT_HEADER, ID_HEADER, TS_HEADER, Headers, raw_topic


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

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        topics = self.topics
        produce = self.producer.produce
        produced = 0
        for record in records:
            topic = topics.get(record["type"])
            if topic is None:
                continue  # channel not selected
            try:
                key, value, headers = encode_record(topic, record)
            except TypeError as exc:  # a bug upstream: keep it, as a dead letter
                letter = make_dead_letter(
                    str(record.get("venue", "")),
                    0,
                    f"kafka sink cannot encode: {exc}",
                    repr(record),
                )
                topic = self.dlq
                key, value, headers = encode_record(topic, letter)
            produce(topic, value, key, headers)
            produced += 1
        self.producer.after_batch(produced)

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
        self._routes: dict[tuple[str, str | None], tuple[str, str, bytes]] = {}

    def _route(self, venue: str, symbol: str | None) -> tuple[str, str, bytes]:
        """(topic, key, id head) of a venue and symbol, computed once."""
        topic = raw_topic(self.prefix, venue)
        key = f"{venue}:{symbol or ''}"
        route = self._routes[(venue, symbol)] = (topic, key, id_head(topic, key))
        return route

    def write_batch(self, items: Sequence[tuple[RawFrame, str | None]]) -> None:
        # The per-frame work of frame_headers / frame_id, inlined: this loop runs for
        # every frame received (bench/sinks.py measures it against the bare producer).
        produce = self.producer.produce
        routes = self._routes
        for frame, symbol in items:
            route = routes.get((frame.venue, symbol)) or self._route(frame.venue, symbol)
            topic, key, head = route
            try:
                value = frame.text.encode()
            except UnicodeEncodeError as exc:  # lone surrogates: not UTF-8, cannot round-trip
                self._dead_letter(frame, f"raw frame is not UTF-8: {exc}")
                continue
            ts = str(frame.ts_ingest).encode()
            conn = frame.conn_id.encode()
            headers: Headers = [
                (ID_HEADER, frame_id_of(head, conn, ts, value)),
                (TS_HEADER, ts),
                (CONN_HEADER, conn),
            ]
            if frame.hint is not None:
                headers.append((HINT_HEADER, frame.hint.encode()))
            produce(topic, value, key, headers)
        self.producer.after_batch(len(items))

    def _dead_letter(self, frame: RawFrame, reason: str) -> None:
        letter = make_dead_letter(frame.venue, frame.ts_ingest, reason, repr(frame.text))
        key, value, headers = encode_record(self.dlq, letter)
        self.producer.produce(self.dlq, value, key, headers)

    def checkpoint(self) -> None:
        self.producer.checkpoint()

    def close(self) -> None:
        self.producer.close()
