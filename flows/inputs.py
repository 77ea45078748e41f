"""Bytewax sources: one partition per configured source (live or replay).

Items are ``RawFrame`` or plain status / dead-letter dicts. ``STOP`` ends every
partition of this process cleanly (Ctrl-C, the demo's end), so the
end-of-stream reaches every operator and sink.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition

from candlewax.config import KafkaInput, PipelineConfig, SourceConfig
from candlewax.schema import make_dead_letter, now_us
from candlewax.symbols import to_native
from flows.cluster import SINGLE, Place, source_groups
from sources.frames import RawFrame
from sources.kafka_raw import consumer_error, consumer_settings, item_of, kafka_inputs
from sources.live import ConnectionSpec, LiveFeed, market_specs
from sources.registry import protocol
from sources.replay import MalformedLine, Pacer, ReplayStats, iter_capture
from sources.ws_client import ClientSettings

STOP = threading.Event()
# Set by a partition that ends because of STOP while its input could go on (a replay
# with frames left, any live or tailing source): then this end of the run is not the end
# of the stream, and with recovery the open bar windows stay open for the resumed run.
CUT_SHORT = threading.Event()
Item = RawFrame | dict[str, Any]

# Most frames per source batch. Small batches keep a batch's frames and the items made
# from them in CPU cache through every step: on the bundled Binance replay (bench/pipeline.py)
# 100-200 ran ~25% faster than 2000; under ~25 the engine's per-batch cost shows.
SOURCE_BATCH = 128
_IDLE = timedelta(milliseconds=20)
# Frames read by replay partitions in this process (for progress displays).
replay_progress: dict[str, ReplayStats] = {}


def _now() -> datetime:
    return datetime.now(UTC)


def stream_ended() -> bool:
    """True unless a partition of this run was stopped before the end of its input."""
    return not CUT_SHORT.is_set()


def _stopped() -> bool:
    """STOP asked for, noted as a cut-short end (the caller's input could go on)."""
    if STOP.is_set():
        CUT_SHORT.set()
        return True
    return False


class _ReplayPartition(StatefulSourcePartition[Item, int]):
    """Replays a capture; the snapshot is the number of items already emitted."""

    def __init__(self, key: str, src: SourceConfig, resume: int | None) -> None:
        assert src.capture is not None
        self.venue = src.venue
        self.stats = ReplayStats()
        replay_progress[key] = self.stats
        self._items = iter_capture(src.capture, src.venue, stats=self.stats, symbols=src.symbols)
        self._pacer = Pacer(src.pace)
        self._pos = 0
        self._pending: RawFrame | None = None
        self._awake: datetime | None = None
        for _ in range(resume or 0):
            if next(self._items, None) is None:
                break
            self._pos += 1

    def _as_item(self, item: RawFrame | MalformedLine) -> Item:
        if isinstance(item, RawFrame):
            return item
        reason = f"malformed capture line {item.path}:{item.line_no}: {item.reason}"
        return make_dead_letter(self.venue, 0, reason, item.text)

    def next_batch(self) -> list[Item]:
        if _stopped():
            raise StopIteration
        batch: list[Item] = []
        self._awake = None
        while len(batch) < SOURCE_BATCH:
            item = self._pending if self._pending is not None else next(self._items, None)
            self._pending = None
            if item is None:
                if not batch:
                    raise StopIteration
                break
            if isinstance(item, RawFrame):
                delay = self._pacer.delay(item.ts_ingest)
                if delay > 0:
                    self._pending = item
                    self._awake = _now() + timedelta(seconds=delay)
                    break
            batch.append(self._as_item(item))
            self._pos += 1
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._pos


class _LivePartition(StatefulSourcePartition[Item, None]):
    """A LiveFeed (its own asyncio thread) drained without blocking the worker."""

    def __init__(self, key: str, src: SourceConfig) -> None:
        venue_protocol = protocol(src.venue)
        rc = src.reconnect
        settings = ClientSettings(
            backoff_base=rc.base_delay_s,
            backoff_cap=rc.max_delay_s,
            stall_timeout=rc.stall_timeout_s,
            max_lifetime=rc.max_lifetime_s,
            snapshot_delay=rc.snapshot_delay_s,
            pong_timeout=rc.pong_timeout_s,
            resync_min_interval=rc.resync_min_interval_s,
        )
        spec = ConnectionSpec(
            protocol=venue_protocol,
            natives=[to_native(src.venue, s) for s in src.symbols],
            channels=list(src.channels),
            ws_url=src.url,
            rest_url=src.rest_url,
            conn_prefix=f"{key}-",
            settings=settings,
        )
        specs = market_specs(spec, list(src.symbols))
        self._feed = LiveFeed(specs, name=f"candlewax-{key}", max_queued=rc.max_queued)
        self._closed = False
        self._awake: datetime | None = None

    def next_batch(self) -> list[Item]:
        if _stopped():
            if not self._closed:
                self._feed.close()  # joins the connection thread: nothing arrives after
                self._closed = True
            batch = self._feed.poll(SOURCE_BATCH)
            if batch:
                return batch
            raise StopIteration
        batch = self._feed.poll(SOURCE_BATCH)
        # Nothing queued: sleep a little instead of spinning the worker.
        self._awake = None if batch else _now() + _IDLE
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._feed.close()


class _GroupPartition(StatefulSourcePartition[Item, dict[str, Any]]):
    """Several sources that may deliver the same venue:symbol, read as one partition (a
    batch of each in turn, as soon as it is due), so each symbol's state has one home.
    The snapshot holds every member's, by name."""

    def __init__(self, members: dict[str, StatefulSourcePartition[Item, Any]]) -> None:
        self._members = members
        self._done: dict[str, Any] = {}  # the last snapshot of members that ended
        self._due: dict[str, datetime | None] = dict.fromkeys(members)
        self._order = list(members)
        self._next = 0
        self._awake: datetime | None = None

    def next_batch(self) -> list[Item]:
        now = _now()
        for _ in range(len(self._order)):
            if not self._order:
                break
            name = self._order[self._next % len(self._order)]
            due = self._due[name]
            if due is not None and due > now:
                self._next += 1
                continue
            member = self._members[name]
            try:
                batch = list(member.next_batch())
            except StopIteration:
                self._done[name] = member.snapshot()
                member.close()
                self._order.remove(name)
                del self._due[name]
                continue
            self._due[name] = member.next_awake()
            self._next += 1
            self._awake = None
            return batch
        if not self._order:
            raise StopIteration
        dues = list(self._due.values())
        self._awake = None if None in dues else min(d for d in dues if d is not None)
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> dict[str, Any]:
        state = dict(self._done)
        for name in self._order:
            state[name] = self._members[name].snapshot()
        return state

    def close(self) -> None:
        for name in self._order:
            self._members[name].close()


class PipelineSource(FixedPartitionedSource[Item, Any]):
    """One partition per configured live or replay source, named ``<index>-<venue>``;
    sources that may deliver the same venue:symbol share one (``a+b``, flows/cluster.py).

    In a cluster every process lists only the partitions it owns (the *k*-th goes to
    process *k mod N*): Bytewax makes a partition's primary worker one of the workers that
    list it, so each source is read, and its symbols processed, in its own process,
    whatever the names (Bytewax would otherwise hand partitions out by sorted name to the
    least-loaded worker of the whole cluster)."""

    def __init__(self, cfg: PipelineConfig, place: Place = SINGLE) -> None:
        self.sources = {
            f"{i}-{src.venue}": src for i, src in enumerate(cfg.sources) if src.mode != "kafka"
        }
        names = list(self.sources)
        groups = source_groups([(s.venue, s.symbols) for s in self.sources.values()])
        self.groups = {
            "+".join(names[i] for i in group): [names[i] for i in group] for group in groups
        }
        self.local = [name for k, name in enumerate(self.groups) if place.owns(k)]

    def list_parts(self) -> list[str]:
        return list(self.local)

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any
    ) -> StatefulSourcePartition[Item, Any]:
        members = self.groups[for_part]
        if len(members) == 1:
            return self._source(members[0], resume_state)
        resume = resume_state if isinstance(resume_state, dict) else {}
        return _GroupPartition({name: self._source(name, resume.get(name)) for name in members})

    def _source(self, name: str, resume_state: Any) -> StatefulSourcePartition[Item, Any]:
        src = self.sources[name]
        if src.mode == "replay":
            return _ReplayPartition(name, src, resume_state)
        return _LivePartition(name, src)


class _MemoryPartition(StatefulSourcePartition[Item, int]):
    def __init__(self, items: Sequence[Item], batch_size: int, resume: int | None) -> None:
        self._items = items
        self._batch = batch_size
        self._pos = resume or 0

    def next_batch(self) -> list[Item]:
        if self._pos >= len(self._items) or _stopped():
            raise StopIteration
        batch = list(self._items[self._pos : self._pos + self._batch])
        self._pos += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._pos


class MemorySource(FixedPartitionedSource[Item, int]):
    """Items already in memory, one partition per named sequence, in batches like a
    replay: for benchmarks and tests that must not measure file reading."""

    def __init__(self, parts: dict[str, Sequence[Item]], batch_size: int = SOURCE_BATCH) -> None:
        self.parts = parts
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _MemoryPartition:
        return _MemoryPartition(self.parts[for_part], self.batch_size, resume_state)


def source_for(cfg: PipelineConfig, place: Place = SINGLE) -> PipelineSource:
    return PipelineSource(cfg, place)


def start_run() -> None:
    CUT_SHORT.clear()  # a new run: nothing of it was stopped yet


def kafka_frames(flow: Dataflow, cfg: PipelineConfig) -> Stream[Any] | None:
    """RawFrames and status dicts of the raw topics of ``mode: kafka`` sources (stage 2),
    None without such sources."""
    kafka = kafka_inputs(cfg)
    streams: list[Stream[Any]] = []
    groups: dict[str, dict[str, tuple[str, KafkaInput]]] = {}
    for topic, (venue, kin) in kafka.items():  # one Bytewax input per consumer setting
        settings = kin.model_dump_json(exclude={"topic", "topic_prefix"})
        groups.setdefault(settings, {})[topic] = (venue, kin)
    for i, topics in enumerate(groups.values()):
        step = "kafka_input" if i == 0 else f"kafka_input_{i}"
        messages = op.input(step, flow, _kafka_source(topics))
        streams.append(op.flat_map_batch(f"{step}_frames", messages, _kafka_items(topics)))
    if not streams:
        return None
    return streams[0] if len(streams) == 1 else op.merge("inputs", *streams)


def _kafka_source(topics: dict[str, tuple[str, KafkaInput]]) -> Source[Any]:
    """Bytewax's KafkaSource: one partition per Kafka partition; its offsets are kept
    only in the recovery store (without recovery a run starts at ``starting_offset``)."""
    from bytewax.connectors.kafka import KafkaSource
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    kin = next(iter(topics.values()))[1]
    source = KafkaSource(
        kin.brokers,
        list(topics),
        tail=kin.tail,
        starting_offset=OFFSET_BEGINNING if kin.starting_offset == "beginning" else OFFSET_END,
        add_config=consumer_settings(kin),
        batch_size=SOURCE_BATCH,
        raise_on_errors=False,  # a broker hiccup becomes a status record, not a crash
    )
    return _StoppableSource(source)


class _StoppableSource(FixedPartitionedSource[Any, Any]):
    """A source whose partitions also end at ``STOP``: Bytewax's KafkaSource with
    ``tail`` never ends by itself, so Ctrl-C would need a second, flushless one."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any]) -> None:
        self.inner = inner

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppablePartition:
        return _StoppablePartition(self.inner.build_part(step_id, for_part, resume_state))


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    """Delegates everything (the snapshot is the inner offset, so recovery resumes
    after the last emitted message); only ``next_batch`` checks ``STOP`` first."""

    def __init__(self, inner: StatefulSourcePartition[Any, Any]) -> None:
        self.inner = inner
        self._awake: datetime | None = None

    def next_batch(self) -> Iterable[Any]:
        if _stopped():
            raise StopIteration
        batch = list(self.inner.next_batch())
        # An idle tailing consumer would be polled again at once, every millisecond:
        # after an empty poll, rest a little (like the live partitions do).
        self._awake = None if batch else _now() + _IDLE
        return batch

    def next_awake(self) -> datetime | None:
        inner = self.inner.next_awake()
        if inner is None:
            return self._awake
        return inner if self._awake is None else max(inner, self._awake)

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


def _kafka_items(topics: dict[str, tuple[str, KafkaInput]]) -> Any:
    from bytewax.connectors.kafka import KafkaError

    venue_of = {topic: venue for topic, (venue, _) in topics.items()}
    any_venue = next(iter(venue_of.values()))

    def items(batch: list[Any]) -> list[Item]:
        out: list[Item] = []
        for msg in batch:
            if isinstance(msg, KafkaError):
                venue = venue_of.get(msg.msg.topic or "", any_venue)
                out.append(consumer_error(venue, now_us(), str(msg.err)))
            else:
                out.append(item_of(venue_of[msg.topic], msg.value, msg.headers))
        return out

    return items
