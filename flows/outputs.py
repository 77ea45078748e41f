"""Bytewax sinks around the engine-free writers in ``sinks/``.

Where a record is written decides whether it crosses workers; per sink type:

- per worker (``DynamicSink``: each worker its own writer, nothing routed): ``null``,
  ``redis`` and the metrics counter;
- per process (``ProcessSink``: partitions listed only by the process whose sources they
  are named after, so records stay in it): ``kafka``, whose writer must make everything
  durable at each epoch's end (a stateful partition's snapshot) before recovery moves on;
- one writer for the whole cluster (``WriterSink``: a single partition, every record is
  routed to its worker): files (``jsonl``, ``parquet``, ``recorder``: one writer per
  file), the terminal (``stdout``, ``console``) and ``websocket`` (one server address).
  In a cluster, these records cross processes (pickled).

Writers flush per batch, so a hard stop loses at most the batch in flight. Writers
opened in this process are tracked so the runner can close them if the engine is
interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from candlewax.config import ConsoleSink as ConsoleSinkConfig
from candlewax.config import JsonlSink as JsonlSinkConfig
from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.config import NullSink as NullSinkConfig
from candlewax.config import ParquetSink as ParquetSinkConfig
from candlewax.config import PipelineConfig, SinkConfig
from candlewax.config import RecorderSink as RecorderSinkConfig
from candlewax.config import RedisSink as RedisSinkConfig
from candlewax.config import StdoutSink as StdoutSinkConfig
from candlewax.config import WebsocketSink as WebsocketSinkConfig
from candlewax.metrics import SINK_DROPS, SINK_ERRORS, observe_items
from flows.cluster import SINGLE, Place
from flows.threadstate import pin_thread_state
from sinks.base import SinkError
from sinks.console import ConsoleSink
from sinks.jsonl import JsonlSink
from sinks.parquet import ParquetBarSink
from sinks.recorder import Recorder
from sinks.stdout import StdoutSink

log = logging.getLogger(__name__)
_VALUE = itemgetter(1)
OPEN_WRITERS: list[Any] = []


class _MetricsPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        try:
            observe_items(items)
        except Exception:
            log.exception("metrics: could not count a batch of records")


class MetricsSink(DynamicSink[Any]):
    """Counts every output record into the Prometheus registry, on each worker."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MetricsPartition:
        # Every worker builds this sink once, on its own thread, before any batch:
        # the one place to keep that thread's Python state (flows.threadstate).
        pin_thread_state()
        return _MetricsPartition()


# Records discarded by "null" sinks in this process, by step name (benchmarks read it).
NULL_WRITTEN: dict[str, int] = {}


class NullWriter:
    """Counts and drops records: the cheapest sink, for measuring the flow itself."""

    def __init__(self, name: str) -> None:
        self.name = name
        NULL_WRITTEN.setdefault(name, 0)

    def write_batch(self, values: list[Any]) -> None:
        NULL_WRITTEN[self.name] += len(values)

    def close(self) -> None:
        pass


class _Writing:
    def __init__(self, name: str, writer: Any) -> None:
        self.name = name
        self.writer = writer
        OPEN_WRITERS.append(writer)

    def _write(self, values: list[Any]) -> None:
        try:
            self.writer.write_batch(values)
        except SinkError:
            # Raised before anything was written (the writers' contract): retrying the
            # records one by one writes each good record exactly once.
            self._one_by_one(values)

    def _one_by_one(self, values: list[Any]) -> None:
        """Write the records a refused batch held; each refused record is counted
        (candlewax_sink_errors_total / _dropped_total) and logged."""
        for value in values:
            try:
                self.writer.write_batch([value])
            except SinkError as exc:
                SINK_ERRORS.labels(self.name).inc()
                SINK_DROPS.labels(self.name).inc()
                log.error("sink %s refused a record: %s", self.name, exc)

    def close(self) -> None:
        self.writer.close()
        if self.writer in OPEN_WRITERS:
            OPEN_WRITERS.remove(self.writer)


class _WriterPartition(_Writing, StatefulSinkPartition[Any, None]):
    def write_batch(self, values: list[Any]) -> None:
        self._write(values)

    def snapshot(self) -> None:
        # Epoch end: writers that buffer (Kafka) make everything so far durable before
        # the engine keeps the epoch's snapshot, so recovery never skips a record.
        checkpoint = getattr(self.writer, "checkpoint", None)
        if checkpoint is not None:
            checkpoint()
        return None


class _WorkerPartition(_Writing, StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        self._write(list(map(_VALUE, items)))  # a dynamic sink gets (key, value)


class WriterSink(FixedPartitionedSink[Any, None]):
    """One partition named after the sink; ``make`` opens the writer on its worker."""

    def __init__(self, name: str, make: Callable[[], Any]) -> None:
        self.name = name
        self.make = make

    def list_parts(self) -> list[str]:
        return [self.name]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WriterPartition:
        return _WriterPartition(self.name, self.make())


class _Lazy:
    """A writer opened at its first batch: a process with several partitions of one
    ``ProcessSink`` writes through the first only, and the others open nothing."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.writer: Any = None

    def write_batch(self, values: list[Any]) -> None:
        if self.writer is None:
            self.writer = self.make()
        self.writer.write_batch(values)

    def checkpoint(self) -> None:
        if self.writer is not None and hasattr(self.writer, "checkpoint"):
            self.writer.checkpoint()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProcessSink(FixedPartitionedSink[Any, None]):
    """Records written by the process that made them, through a stateful partition (its
    snapshot is the epoch-end checkpoint).

    One partition per source partition, ``<name>@<source partition>``: names that do not
    depend on the number of processes, so a recovery store resumes on a rescaled cluster.
    Each process lists the partitions of its own sources (Bytewax makes one of its
    workers their primary) and ``part_fn``, called where the record is, names the first
    of them. (A process with no source of its own writes through ``name``, on process 0:
    the records of ``mode: kafka`` sources, keyed, go there anyway.)"""

    def __init__(self, name: str, make: Callable[[], Any], parts: list[str], place: Place) -> None:
        self.name = name
        self.make = make
        named = [f"{name}@{part}" for part in parts]
        own = [p for k, p in enumerate(named) if place.owns(k)]
        # Also ``name`` alone, on process 0: the one partition of a flow without fused
        # sources (stage 2), and of stores written before there were several.
        self.own = own + ([name] if place.index == 0 else [])
        # Bytewax indexes part_fn's answer into the sorted names of every partition.
        self.index = sorted([*named, name]).index(own[0] if own else name)

    def list_parts(self) -> list[str]:
        return list(self.own)

    def part_fn(self, item_key: str) -> int:
        return self.index

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WriterPartition:
        return _WriterPartition(self.name, _Lazy(self.make))


class WorkerSink(DynamicSink[Any]):
    """A writer on every worker; records are written where they are made."""

    def __init__(self, name: str, make: Callable[[], Any]) -> None:
        self.name = name
        self.make = make

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WorkerPartition:
        return _WorkerPartition(self.name, self.make())


AnySink = WriterSink | ProcessSink | WorkerSink


def _writer_factory(name: str, sink: SinkConfig) -> Callable[[], Any]:
    if isinstance(sink, NullSinkConfig):
        return lambda: NullWriter(name)
    if isinstance(sink, StdoutSinkConfig):
        return lambda: StdoutSink(channels=sink.channels)
    if isinstance(sink, ConsoleSinkConfig):
        return lambda: ConsoleSink(intervals=sink.intervals)
    if isinstance(sink, JsonlSinkConfig):
        return lambda: JsonlSink(sink.path, channels=sink.channels, append=sink.append)
    if isinstance(sink, ParquetSinkConfig):
        return lambda: ParquetBarSink(sink.path, rows_per_file=sink.flush_every)
    if isinstance(sink, RedisSinkConfig):
        from sinks.redis import RedisSink

        return lambda: RedisSink(sink)
    if isinstance(sink, WebsocketSinkConfig):
        from sinks.fanout.writers import FanoutWriter

        return lambda: FanoutWriter(name, sink)
    if isinstance(sink, KafkaSinkConfig):
        raise TypeError("kafka sinks are built by _kafka_sinks (records + raw frames)")
    return lambda: Recorder(sink.path)


def sinks_for(
    cfg: PipelineConfig, place: Place = SINGLE, parts: list[str] | None = None
) -> list[tuple[str, AnySink, str]]:
    """(step name, sink, input kind) per configured sink; kind "frames" or "records";
    ``parts``: the source partitions of the cluster, in order (per-process sinks have
    one partition each)."""
    parts = parts or []
    out: list[tuple[str, AnySink, str]] = []
    for i, sink in enumerate(cfg.sinks):
        name = f"sink_{i}_{sink.type}"
        if isinstance(sink, KafkaSinkConfig):
            out.extend(_kafka_sinks(name, sink, cfg, place, parts))
            continue
        kind = "frames" if isinstance(sink, RecorderSinkConfig) else "records"
        make = _writer_factory(name, sink)
        if isinstance(sink, NullSinkConfig | RedisSinkConfig):
            out.append((name, WorkerSink(name, make), kind))
        else:
            out.append((name, WriterSink(name, make), kind))
        if isinstance(sink, WebsocketSinkConfig) and sink.raw:
            out.append((f"{name}_raw", _raw_frames_sink(f"{name}_raw", sink), "frames"))
    return out


def _raw_frames_sink(name: str, sink: WebsocketSinkConfig) -> WriterSink:
    """Raw venue frames to the same fan-out server (``raw: true`` subscribers)."""
    from sinks.fanout.writers import RawFrameWriter

    return WriterSink(name, lambda: RawFrameWriter(name, sink))


def _kafka_sinks(
    name: str, sink: KafkaSinkConfig, cfg: PipelineConfig, place: Place, parts: list[str]
) -> list[tuple[str, AnySink, str]]:
    """Records to the normalized topics; raw frames (unless read from Kafka) to raw topics."""
    from sinks.kafka import KafkaRawSink, KafkaRecordSink

    venues = sorted({src.venue for src in cfg.sources})
    records = ProcessSink(name, lambda: KafkaRecordSink(sink, venues), parts, place)
    out: list[tuple[str, AnySink, str]] = [(name, records, "records")]
    raw = sink.raw if sink.raw is not None else all(src.mode != "kafka" for src in cfg.sources)
    if raw:
        raw_name = f"{name}_raw"
        raw_sink = ProcessSink(raw_name, lambda: KafkaRawSink(sink, venues), parts, place)
        out.append((raw_name, raw_sink, "frames"))
    return out


def close_open_writers() -> None:
    while OPEN_WRITERS:
        OPEN_WRITERS.pop().close()
