"""An idempotent librdkafka producer that neither crashes on a full queue nor
loses a message silently.

- Full local queue (``BufferError``, bytewax issue #522): serve delivery reports
  with ``poll`` and retry, backing off from 1 ms to 200 ms; the flow slows down
  instead of dying.
- A failed delivery report carries no headers, so a message produced again
  from the report alone would lose ``msg_id``, ``ts_ingest``, ``conn_id``. The
  messages of a sink's batch are therefore kept as produced (topic, value, key,
  headers) in an ``InFlight``, which is also their delivery callback; a failed
  report takes its message back from there. An ``InFlight`` lives while
  librdkafka holds any of its messages, so what is kept is bounded by what is
  in flight: librdkafka's queue (``queue.buffering.max.messages`` /
  ``.kbytes``; a full queue makes the sink wait) rounded up to whole batches,
  plus the messages held for a resend (at most ``queue.buffering.max.messages``
  more, then the sink waits). (One callback per batch, not
  per message: a million short-lived callback objects make Python's cyclic GC
  halve the sink's throughput, bench/sink_throughput.py.)
- Delivery errors (reported only for failures: ``delivery.report.only.error``)
  are counted (``candlewax_sink_errors_total{sink="kafka"}``), logged, reported
  as ``status`` records (event ``error``) on the status topic, and the message is
  produced again, in its place ("Order across a resend" below). A broker that
  is away (message timed out, transport failure) is retried for as long as it
  takes: the flow waits at the next ``checkpoint``.
  Other errors are retried up to ``MAX_ATTEMPTS`` times; a permanent error
  (message too large, topic not authorized, ...) or the last attempt drops the
  message, counted in ``candlewax_sink_dropped_total{sink="kafka"}``.
- ``checkpoint`` returns once every message produced so far is acknowledged by
  all in-sync replicas (or dropped and counted). The Bytewax adapter calls it
  at every epoch end, before the epoch's snapshot is kept, so recovery never
  skips an unacknowledged message (at-least-once).
- A fatal producer error (idempotence broken) replaces the producer; the
  messages it held come back as delivery errors and are produced again.

librdkafka retries transient failures itself (broker restart, leader change)
for ``message.timeout.ms`` (5 minutes by default) before reporting them; the
idempotent producer keeps those retries free of duplicates and reordering.

Order across a resend: every message has its place in produce order (``Order``:
the serial of its first InFlight and its index there). The first failure that
is retried makes the producer hold: new messages are parked (not handed to
librdkafka), librdkafka's queue is purged back into the backlog (``_PURGE_QUEUE``
reports, not errors), and once librdkafka holds nothing the backlog and the
parked messages are produced again sorted by place; new messages stay parked
until those are acknowledged. A message produced again may be a duplicate (same
``msg_id``) if the broker had stored it, not behind a newer one of its key
(but for a one-batch window, docs/kafka_redis.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from candlewax.metrics import SINK_DROPS, SINK_ERRORS, SINK_RECORDS
from candlewax.schema import VENUES, make_status, now_us
from sinks.kafka_client import client_config
from sinks.kafka_codec import encode_record
from sources.kafka_raw import Headers

log = logging.getLogger(__name__)

DEFAULT_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "compression.type": "lz4",
    # The Java client's key -> partition mapping, so every client agrees on it.
    "partitioner": "murmur2_random",
}
MAX_ATTEMPTS = 10  # for errors other than the broker being away (_AWAY)
REPORT_EVERY_S = 10.0
_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
# The broker (or the network to it) is away: not a failed attempt, retried until it is back.
_AWAY = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)
# A message as the sink produced it (headers as a tuple: nothing for the GC to track).
Kept = tuple[str, bytes | None, str | bytes | None, tuple[tuple[str, str | bytes | None], ...]]
# Where a message stands in produce order: (serial of the InFlight that first produced it,
# its index there). Kept across resends, so a backlog sorts back into produce order.
Order = tuple[int, int]
# A message waiting in the backlog: its order, the message, the number of the attempt to make.
Held = tuple[Order, Kept, int]
_LAST = 1 << 62  # the index of a failed message that was not kept (never seen)


def _park(*_: Any, **__: Any) -> None:
    """``produce`` while the producer holds: the message stays in its InFlight (parked)."""


class InFlight:
    """The messages produced with one delivery callback (this object), kept as
    produced until librdkafka has reported each of them."""

    __slots__ = ("_indexed", "_unclaimed", "attempt", "messages", "origins", "producer", "serial")

    def __init__(
        self, producer: ReliableProducer, attempt: int = 1, origins: list[Held] | None = None
    ) -> None:
        self.producer = producer
        self.attempt = attempt
        producer.serial += 1
        self.serial = producer.serial
        self.messages: list[Kept] = []  # append each message before producing it
        # For a resend: the order and attempt of each message (``messages`` holds the same).
        self.origins = origins
        self._unclaimed: dict[tuple[str, bytes | None, bytes | None], list[int]] = {}
        self._indexed = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # delivery.report.only.error: no call for the delivered ones
            return
        index = self._claim(msg)
        if index is None:
            self.producer.failed(err, None, msg, (self.serial, _LAST), self.attempt)
        elif self.origins is not None:
            order, message, attempt = self.origins[index]
            self.producer.failed(err, message, msg, order, attempt)
        else:
            self.producer.failed(err, self.messages[index], msg, (self.serial, index), self.attempt)

    def _claim(self, msg: Message) -> int | None:
        """The index of the kept message a failed report is about. Identical messages
        (same topic, key, value) share a partition, so librdkafka reports them in
        produce order."""
        messages = self.messages
        for index in range(self._indexed, len(messages)):
            topic, value, key, _ = messages[index]
            raw_key = key.encode() if isinstance(key, str) else key
            self._unclaimed.setdefault((topic, raw_key, value), []).append(index)
        self._indexed = len(messages)
        same = self._unclaimed.get((msg.topic() or "", msg.key(), msg.value()))
        return same.pop(0) if same else None


@dataclass(slots=True)
class KafkaStats:
    produced: int = 0
    queue_full: int = 0  # produce() calls that found the local queue full and waited
    delivery_errors: int = 0
    retried: int = 0
    dropped: int = 0
    client_errors: int = 0  # connection-level errors librdkafka recovers from by itself
    producers: int = 1  # > 1 after a fatal error replaced the producer


class ReliableProducer:
    def __init__(
        self,
        brokers: list[str],
        settings: dict[str, Any] | None = None,
        *,
        status_topic: str | None = None,
        label: str = "kafka",
    ) -> None:
        self.config: dict[str, Any] = {
            **client_config(brokers, {**DEFAULT_PRODUCER, **(settings or {})}),
            "delivery.report.only.error": True,
            "error_cb": self._on_client_error,
        }
        self.status_topic = status_topic
        self.label = label
        self.stats = KafkaStats()
        self.last_error: str | None = None
        self.serial = 0  # of the last InFlight made (its messages' place in produce order)
        self._producer = Producer(self.config)
        # Holding (after a failure that is retried, until the backlog is produced again):
        # new messages are parked instead of produced, librdkafka's queue is purged back
        # into the backlog, and once librdkafka holds nothing the backlog is produced
        # again in produce order (docs/kafka_redis.md, "Delivery guarantees").
        self.holding = False
        # Releasing (from then until librdkafka holds nothing again): new messages are
        # still parked, so none of them can overtake a resent one inside librdkafka (seen
        # on the real broker: resent messages stored after newer ones when the broker
        # came back while both were queued); the parked ones go out once the resent ones
        # are acknowledged, and then messages go direct again.
        self.releasing = False
        self._backlog: list[Held] = []  # failed or purged messages
        self._parked: list[InFlight] = []  # batches taken while holding
        # Parked and backlogged messages beyond which a batch waits for the release.
        self._max_held = int(self.config.get("queue.buffering.max.messages", 100_000))
        self._status: list[dict[str, Any]] = []
        self._reported: dict[tuple[str, str], tuple[float, int]] = {}
        self._fatal: KafkaError | None = None
        self.closed = False

    # ---- producing ----

    def produce(self, topic: str, value: bytes, key: str, headers: Headers) -> None:
        in_flight = InFlight(self)
        self._send(in_flight, (topic, value, key, tuple(headers)))

    def _send(self, in_flight: InFlight, message: Kept) -> None:
        """Produce one message as the only one of ``in_flight``, or park it."""
        in_flight.messages.append(message)
        if self.holding or self.releasing:
            self._parked.append(in_flight)
            return
        self._produce_one(in_flight, message, (in_flight.serial, 0), in_flight.attempt)

    def _produce_one(self, in_flight: InFlight, message: Kept, order: Order, attempt: int) -> None:
        """Produce ``message`` (already appended to ``in_flight``), waiting for room."""
        topic, value, key, headers = message

        def produce() -> None:
            self._producer.produce(topic, value, key, headers=list(headers), on_delivery=in_flight)

        try:
            try:
                produce()
            except BufferError:
                self._when_room(produce)
        except KafkaException as exc:  # refused locally: too large, unknown partition, ...
            self._refused(order, message, attempt, exc)

    def hot_produce(self) -> tuple[Callable[..., None], InFlight]:
        """librdkafka's ``produce`` itself and a new InFlight, for a sink's per-message
        loop: append each message to ``in_flight.messages`` (headers as a tuple), call
        ``produce(topic, value, key, headers=headers, on_delivery=in_flight)`` and hand
        a BufferError or KafkaException to ``produce_failed``. Once per batch (a fatal
        error replaces the producer). While the producer holds, ``produce`` does
        nothing: the batch's messages wait in ``in_flight`` for the release."""
        # Serve pending reports first: a failure found now parks this batch rather
        # than letting it overtake the failed message.
        self._producer.poll(0)
        in_flight = InFlight(self)
        if self.holding or self.releasing:
            self._parked.append(in_flight)
            return _park, in_flight
        return self._producer.produce, in_flight

    def produce_failed(self, in_flight: InFlight, exc: Exception) -> None:
        """What to do when ``hot_produce``'s first try for the message appended last
        to ``in_flight`` raised ``exc``."""
        index = len(in_flight.messages) - 1
        message = in_flight.messages[index]
        if isinstance(exc, BufferError):
            topic, value, key, headers = message

            def produce() -> None:
                self._producer.produce(
                    topic, value, key, headers=list(headers), on_delivery=in_flight
                )

            try:
                # Should a failure start holding meanwhile, the message still goes to
                # librdkafka: the purges while holding bring it back in order.
                self._when_room(produce)
            except KafkaException as refused:
                self._refused((in_flight.serial, index), message, 1, refused)
        elif isinstance(exc, KafkaException):
            self._refused((in_flight.serial, index), message, 1, exc)
        else:
            raise exc

    def _when_room(self, produce: Callable[[], None]) -> None:
        """Retry ``produce`` until the local queue has room, serving delivery reports."""
        self.stats.queue_full += 1
        delay = 0.001
        while True:
            self._producer.poll(delay)
            try:
                produce()
                return
            except BufferError:
                delay = min(delay * 2, 0.2)

    def _refused(self, order: Order, message: Kept, attempt: int, exc: KafkaException) -> None:
        """A message ``produce`` refused: dropped, unless the producer itself is broken.

        After a fatal error every ``produce`` raises ``_FATAL`` and the error callback
        only runs at the next poll: the message waits for the new producer instead."""
        topic, _, key, _ = message
        err: KafkaError = exc.args[0]
        self.stats.delivery_errors += 1
        SINK_ERRORS.labels(self.label).inc()
        self.last_error = f"{err.name()}: {err.str()}"
        if (err.fatal() or err.code() == KafkaError._FATAL) and attempt < MAX_ATTEMPTS:
            if self._fatal is None:
                self._fatal = err
            self.stats.retried += 1
            self.holding = True
            self._backlog.append((order, message, attempt + 1))
            self._report(topic, key, err, "producing it again with a new producer")
            return
        self.stats.dropped += 1
        SINK_DROPS.labels(self.label).inc()
        self._report(topic, key, err, "refused by the producer, dropped")

    def after_batch(self, produced: int) -> None:
        """Account a batch and serve delivery reports without waiting; while holding,
        a batch that brings the held messages to the bound waits for the release."""
        self.stats.produced += produced
        SINK_RECORDS.labels(self.label).inc(produced)
        self._producer.poll(0)
        if self.holding or self.releasing or self._status or self._fatal is not None:
            self._service()
            if (self.holding or self.releasing) and self._held() >= self._max_held:
                self._wait_for_release()

    def _held(self) -> int:
        return len(self._backlog) + sum(len(parked.messages) for parked in self._parked)

    def _wait_for_release(self) -> None:
        started = last_log = time.monotonic()
        while self.holding or self.releasing:
            self._producer.poll(0.1)
            self._service()
            now = time.monotonic()
            if (self.holding or self.releasing) and now - last_log >= REPORT_EVERY_S:
                last_log = now
                log.warning(
                    "kafka sink: waiting %.0f s with %d message(s) held, last error: %s",
                    now - started,
                    self._held(),
                    self.last_error,
                )

    def _service(self) -> None:
        if self._fatal is not None:
            self._replace_producer()
        if self.holding:
            # Whatever reached librdkafka's queue since the last purge comes back too.
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.poll(0)
            if len(self._producer) == 0:  # nothing queued, in flight or unreported
                self._release()
        elif self.releasing and len(self._producer) == 0:
            # What was released is acknowledged: the broker is back, direct again.
            self._release(releasing=False)
        status, self._status = self._status, []
        if self.status_topic is not None:
            for record in status:
                status_key, status_value, status_headers = encode_record(record)
                self.produce(self.status_topic, status_value, status_key, status_headers)

    def _release(self, releasing: bool = True) -> None:
        """Produce the backlog and the parked batches again, in produce order."""
        held = self._backlog
        for parked in self._parked:
            serial, attempt = parked.serial, parked.attempt
            held.extend(((serial, i), m, attempt) for i, m in enumerate(parked.messages))
        held.sort(key=_order_of)
        self._backlog, self._parked = [], []
        self.holding = False
        self.releasing = releasing
        in_flight = InFlight(self, origins=[])
        origins = in_flight.origins
        assert origins is not None
        for n, item in enumerate(held):
            if self.holding:  # failed again while waiting for room: the rest waits too
                self._backlog.extend(held[n:])
                return
            order, message, attempt = item
            in_flight.messages.append(message)
            origins.append(item)
            self._produce_one(in_flight, message, order, attempt)

    def checkpoint(self) -> None:
        """Block until every message so far is acknowledged (or dropped and counted)."""
        started = last_log = time.monotonic()
        while True:
            self._service()
            left = self._producer.flush(1.0)
            if (
                left == 0
                and not (self.holding or self.releasing)
                and not self._status
                and self._fatal is None
            ):
                return
            now = time.monotonic()
            if now - last_log >= REPORT_EVERY_S:
                last_log = now
                log.warning(
                    "kafka sink: waiting %.0f s for %d unacknowledged message(s), last error: %s",
                    now - started,
                    left + self._held(),
                    self.last_error,
                )

    def close(self) -> None:
        if self.closed:
            return
        self.checkpoint()
        self.closed = True
        # The producer holds our callbacks (a cycle through self): dropping it here frees
        # librdkafka's threads and sockets now rather than at the next cyclic GC.
        del self._producer

    # ---- callbacks (run inside poll / flush, on the caller's thread) ----

    def failed(
        self, err: KafkaError, message: Kept | None, msg: Message, order: Order, attempt: int
    ) -> None:
        """A failed delivery report of ``message`` (as produced, at ``order`` in
        produce order) or, should it not be found (never seen), of the report's own
        message."""
        if message is None:
            log.error("kafka sink: a failed message was not kept; producing it without headers")
            message = (msg.topic() or "", msg.value(), msg.key(), ())
        code = err.code()
        if code == KafkaError._PURGE_QUEUE:  # our own purge (only we purge): back in line
            self._backlog.append((order, message, attempt))
            self.holding = True  # should it land after a release: what was released too
            return
        self.stats.delivery_errors += 1
        SINK_ERRORS.labels(self.label).inc()
        self.last_error = f"{err.name()}: {err.str()}"
        topic, _, key, _ = message
        if code in _PERMANENT or (attempt >= MAX_ATTEMPTS and code not in _AWAY):
            self.stats.dropped += 1
            SINK_DROPS.labels(self.label).inc()
            action = f"dropped after {attempt} attempt(s)"
        else:
            self.stats.retried += 1
            # The broker being away is no failed attempt: retried until it is back.
            self._backlog.append((order, message, attempt if code in _AWAY else attempt + 1))
            if not self.holding:
                # Hold: what librdkafka still queues (newer messages) comes back, to go
                # out again behind this one (not blocking: this runs inside poll).
                self.holding = True
                self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            action = "producing it again"
        self._report(topic, key, err, action)

    def _on_client_error(self, err: KafkaError) -> None:
        self.stats.client_errors += 1
        self.last_error = f"{err.name()}: {err.str()}"
        if err.fatal():
            self._fatal = err
        now = time.monotonic()
        last, _ = self._reported.get(("", "client"), (0.0, 0))
        if err.fatal() or now - last >= REPORT_EVERY_S:
            self._reported[("", "client")] = (now, 0)
            log.warning("kafka sink: %s (librdkafka retries by itself)", self.last_error)

    # ---- reporting ----

    def _report(self, topic: str, key: str | bytes | None, err: KafkaError, action: str) -> None:
        """Log and queue a status record, at most once per topic and error per 10 s."""
        now = time.monotonic()
        slot = (topic, err.name())
        last, suppressed = self._reported.get(slot, (-REPORT_EVERY_S, 0))
        if now - last < REPORT_EVERY_S:
            self._reported[slot] = (last, suppressed + 1)
            return
        self._reported[slot] = (now, 0)
        more = f" (+{suppressed} similar)" if suppressed else ""
        detail = f"kafka delivery to {topic} failed: {err.name()}: {err.str()}; {action}{more}"
        log.warning("kafka sink: %s", detail)
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key or ""
        venue, _, symbol = text.partition(":")
        if venue in VENUES and topic != self.status_topic:
            ts = now_us()
            self._status.append(make_status(venue, symbol or None, "error", ts, detail))

    def _replace_producer(self) -> None:
        log.error("kafka sink: fatal producer error (%s), starting a new producer", self._fatal)
        old = self._producer
        self.holding = True  # the new producer starts with the backlog, in produce order
        old.purge()  # queued messages come back as delivery errors -> produced again
        old.flush(0)  # serves those, and the old producer's pending fatal error callback
        self._fatal = None
        self._producer = Producer(self.config)
        self.stats.producers += 1


def _order_of(held: Held) -> Order:
    return held[0]
