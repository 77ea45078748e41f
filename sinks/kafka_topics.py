"""Kafka topic layout of the candlewax sinks, and creating the topics.

``<prefix>.raw.<venue>``       raw frames exactly as received (sources/kafka_raw.py)
``<prefix>.norm.trades``       trade
``<prefix>.norm.orderbook``    book, bbo
``<prefix>.norm.bars``         bar
``<prefix>.norm.late``         late (trades that missed their bar window)
``<prefix>.norm.status``       status
``<prefix>.norm.liquidations`` created for consumers; no producer yet (no such record type)
``<prefix>.norm.oi_funding``   created for consumers; no producer yet (no such record type)
``<prefix>.dlq``               dead_letter (reason in the value and a header)

Every message is keyed ``"venue:symbol"`` so one symbol stays ordered within
one partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sinks.kafka_client import KafkaUnavailable, client_config
from sinks.message_ids import record_key
from sources.kafka_raw import raw_topic

__all__ = ["all_topics", "ensure_topics", "record_key", "record_topics"]

TOPIC_OF_TYPE = {
    "trade": "norm.trades",
    "book": "norm.orderbook",
    "bbo": "norm.orderbook",
    "bar": "norm.bars",
    "late": "norm.late",
    "status": "norm.status",
    "dead_letter": "dlq",
}
RESERVED_TOPICS = ("norm.liquidations", "norm.oi_funding")
CHANNEL_TOPIC = {
    "trades": "norm.trades",
    "book": "norm.orderbook",
    "bars": "norm.bars",
    "late": "norm.late",
    "status": "norm.status",
    "dead_letter": "dlq",
}


def record_topics(prefix: str, channels: Iterable[str]) -> dict[str, str]:
    """Record type -> full topic name, for the record types of ``channels``."""
    wanted = {CHANNEL_TOPIC[c] for c in channels}
    return {kind: f"{prefix}.{topic}" for kind, topic in TOPIC_OF_TYPE.items() if topic in wanted}


def all_topics(prefix: str, venues: Iterable[str], raw: bool) -> list[str]:
    """Every topic a sink with ``prefix`` may write (normalized + reserved + dlq [+ raw])."""
    names = {f"{prefix}.{t}" for t in (*TOPIC_OF_TYPE.values(), *RESERVED_TOPICS)}
    if raw:
        names.update(raw_topic(prefix, venue) for venue in venues)
    return sorted(names)


def ensure_topics(
    brokers: list[str],
    names: list[str],
    *,
    partitions: int,
    replication: int,
    topic_config: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[str]:
    """Create the topics of ``names`` that do not exist; returns those created.

    Waits (up to ``timeout_s``) for the cluster to answer, so a sink started right
    after its broker works; raises KafkaUnavailable naming the brokers otherwise."""
    admin = AdminClient(client_config(brokers))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                where = ",".join(brokers)
                raise KafkaUnavailable(f"kafka at {where} unreachable: {exc}") from None
    missing = [name for name in names if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication, config=dict(topic_config or {})) for n in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won
                raise RuntimeError(f"cannot create kafka topic {name!r}: {exc}") from None
    return sorted(created)
