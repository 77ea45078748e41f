"""Real Kafka and Redis for the tests, through scripts/services.sh.

The test servers listen on their own ports (default 19092 / 16379, override
with CANDLEWAX_TEST_KAFKA_PORT / CANDLEWAX_TEST_REDIS_PORT) so a developer's
own servers on 9092 / 6379 are never touched. The session fixture starts them
(the first start resolves the Kafka jars with Maven into .cache/) and stops
what it started at the end; CANDLEWAX_KEEP_SERVICES=1 keeps them running for
the next session, which then reuses them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "services.sh"
KAFKA_PORT = int(os.environ.get("CANDLEWAX_TEST_KAFKA_PORT", "19092"))
REDIS_PORT = int(os.environ.get("CANDLEWAX_TEST_REDIS_PORT", "16379"))


@dataclass(frozen=True)
class Services:
    kafka: str  # bootstrap "host:port"
    redis_url: str

    def run(self, action: str, which: str = "all") -> None:
        env = {
            **os.environ,
            "CANDLEWAX_KAFKA_PORT": str(KAFKA_PORT),
            "CANDLEWAX_REDIS_PORT": str(REDIS_PORT),
        }
        subprocess.run([str(SCRIPT), action, which], env=env, check=True, timeout=600)

    def up(self) -> bool:
        env = {
            **os.environ,
            "CANDLEWAX_KAFKA_PORT": str(KAFKA_PORT),
            "CANDLEWAX_REDIS_PORT": str(REDIS_PORT),
        }
        done = subprocess.run([str(SCRIPT), "status"], env=env, capture_output=True, timeout=60)
        return done.returncode == 0


def for_tests() -> Services:
    return Services(f"127.0.0.1:{KAFKA_PORT}", f"redis://127.0.0.1:{REDIS_PORT}/0")


def unique(name: str) -> str:
    """A topic / key prefix no other test (or earlier session) uses."""
    return f"t{uuid.uuid4().hex[:10]}-{name}"


# ---- reading Kafka back ----


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        return orjson.loads(self.value)


def topics(brokers: str, prefix: str) -> dict[str, int]:
    """Topic -> partition count, for the topics starting with ``prefix``."""
    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=30)
    return {
        name: len(topic.partitions)
        for name, topic in meta.topics.items()
        if name.startswith(prefix)
    }


def consume_all(brokers: str, topic: str) -> list[Message]:
    """Every message of ``topic``, partition by partition (each in offset order)."""
    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=30)
    partitions = sorted(meta.topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[Message] = []
    ended: set[int] = set()
    try:
        while len(ended) < len(partitions):
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == err._PARTITION_EOF:
                        ended.add(msg.partition() or 0)
                        continue
                    raise RuntimeError(f"consuming {topic}: {err}")
                headers = {name: value or b"" for name, value in msg.headers() or []}
                out.append(
                    Message(
                        topic,
                        msg.partition() or 0,
                        msg.offset() or 0,
                        (msg.key() or b"").decode(),
                        msg.value() or b"",
                        headers,
                    )
                )
    finally:
        consumer.close()
    return out


def delete_topics(brokers: str, prefix: str) -> None:
    names = list(topics(brokers, prefix))
    if names:
        admin = AdminClient({"bootstrap.servers": brokers})  # alive until the futures resolve
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()
