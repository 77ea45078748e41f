"""What every candlewax Kafka client shares: librdkafka's log through Python
logging, and a bounded broker check before a flow starts.

- librdkafka writes its log lines straight to stderr unless confluent-kafka's
  ``logger`` setting is given. ``LibrdkafkaLog`` takes them into the
  ``candlewax.librdkafka`` logger instead, at librdkafka's level, at most one
  line per client, facility and level per 10 s: a broker that is away makes
  librdkafka log every reconnect attempt (about 20 lines a second).
- ``check_sink`` / ``check_source`` (entries of ``candlewax.preflight``'s tables)
  ask a Kafka sink's or Kafka source's brokers for their metadata, bounded by
  ``CHECK_TIMEOUT_S``, before the flow is built, and raise ``KafkaUnavailable``
  (one line: what, where, why, the fix) instead of a run that fails deep inside
  the engine a minute later.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.config import PipelineConfig, SourceConfig
from candlewax.preflight import PreflightError
from sources.kafka_raw import consumer_settings, topic_of

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

LIBRDKAFKA = logging.getLogger("candlewax.librdkafka")
LOG_EVERY_S = 10.0
# A reachable cluster answers a metadata request in milliseconds; librdkafka gives
# no earlier answer for a closed port or an unknown host than this timeout.
CHECK_TIMEOUT_S = 5.0


class KafkaUnavailable(PreflightError):
    """Kafka brokers a pipeline names do not answer (or lack a topic it reads).

    A PreflightError, so the CLI prints it as one line and exits 2 like any other
    problem found before the run (Redis down, a port in use)."""


class LibrdkafkaLog:
    """confluent-kafka's ``logger``: it calls ``log(level, "%s [%s] %s", facility,
    client, text)`` from ``poll`` / ``flush`` / ``consume``."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.logger = LIBRDKAFKA
        self.quiet = quiet  # every line at DEBUG: what went wrong is reported otherwise
        self._last: dict[tuple[int, str, str], tuple[float, int]] = {}

    def log(self, level: int, msg: str, *args: Any) -> None:
        level = logging.DEBUG if self.quiet else level
        if not self.logger.isEnabledFor(level):
            return
        facility, client = (str(a) for a in args[:2]) if len(args) >= 2 else ("", "")
        slot = (level, facility, client)
        now = time.monotonic()
        last, suppressed = self._last.get(slot, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last[slot] = (last, suppressed + 1)
            return
        self._last[slot] = (now, 0)
        more = f" (+{suppressed} similar in {now - last:.0f} s)" if suppressed else ""
        self.logger.log(level, "librdkafka: " + msg + more, *args)


def client_config(
    brokers: list[str], settings: dict[str, Any] | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """librdkafka settings of a client of ``brokers``, its log through Python logging."""
    return {
        **(settings or {}),
        "bootstrap.servers": ",".join(brokers),
        "logger": LibrdkafkaLog(quiet=quiet),
    }


def check_brokers(
    brokers: list[str],
    settings: dict[str, Any],
    *,
    what: str,
    producer: bool,
    topics: tuple[str, ...] = (),
    timeout_s: float = CHECK_TIMEOUT_S,
) -> None:
    """Raise KafkaUnavailable unless ``brokers`` answer a metadata request within
    ``timeout_s`` (and hold every topic of ``topics``). ``settings`` are the client's
    own (security settings included), taken by the same kind of client it will be."""
    # Imported here: confluent-kafka takes ~0.4 s to import, and most runs have no Kafka.
    from confluent_kafka import Consumer, KafkaException, Producer

    # Quiet: its connection failures are the KafkaUnavailable raised below.
    if producer:
        client: Producer | Consumer = Producer(client_config(brokers, settings, quiet=True))
    else:
        settings = {"group.id": "candlewax-check", **settings}
        client = Consumer(client_config(brokers, settings, quiet=True))
    where = ",".join(brokers)
    try:
        meta = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args else str(exc)
        raise KafkaUnavailable(
            f"{what}: kafka at {where} unreachable ({reason}, no answer within "
            f"{timeout_s:g} s): start Kafka (scripts/services.sh start kafka) or fix its brokers"
        ) from None
    finally:
        if isinstance(client, Consumer):
            client.close()
    missing = [topic for topic in topics if topic not in meta.topics]
    if missing:
        raise KafkaUnavailable(
            f"{what}: kafka topic {', '.join(missing)} does not exist at {where}: "
            "run stage 1 (its Kafka sink creates it) or fix topic_prefix / topic"
        )


def check_sink(sink: KafkaSinkConfig, cfg: PipelineConfig, label: str) -> None:
    """Preflight of a Kafka sink (candlewax.preflight): its brokers answer."""
    from sinks.kafka_producer import DEFAULT_PRODUCER

    check_brokers(sink.brokers, {**DEFAULT_PRODUCER, **sink.producer}, what=label, producer=True)


def check_source(src: SourceConfig, cfg: PipelineConfig, label: str) -> None:
    """Preflight of a ``mode: kafka`` source: its brokers answer and hold its topic."""
    if src.kafka is None:
        return
    check_brokers(
        src.kafka.brokers,
        consumer_settings(src.kafka),
        what=label,
        producer=False,
        topics=(topic_of(src.venue, src.kafka),),
    )
