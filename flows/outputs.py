"""Bytewax sinks around the engine-free writers in ``sinks/``.

Every writer gets a single partition, so exactly one worker owns each file
(items are routed to it); writers flush per batch, so a hard stop loses at
most the batch in flight. Writers opened in this process are tracked so the
runner can close them if the engine is interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from candlewax.config import ConsoleSink as ConsoleSinkConfig
from candlewax.config import JsonlSink as JsonlSinkConfig
from candlewax.config import ParquetSink as ParquetSinkConfig
from candlewax.config import PipelineConfig, SinkConfig
from candlewax.config import RecorderSink as RecorderSinkConfig
from candlewax.config import StdoutSink as StdoutSinkConfig
from sinks.console import ConsoleSink
from sinks.jsonl import JsonlSink
from sinks.parquet import ParquetBarSink
from sinks.recorder import Recorder
from sinks.stdout import StdoutSink

OPEN_WRITERS: list[Any] = []


class _WriterPartition(StatefulSinkPartition[Any, None]):
    def __init__(self, writer: Any) -> None:
        self.writer = writer
        OPEN_WRITERS.append(writer)

    def write_batch(self, values: list[Any]) -> None:
        self.writer.write_batch(values)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.writer.close()
        if self.writer in OPEN_WRITERS:
            OPEN_WRITERS.remove(self.writer)


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
        return _WriterPartition(self.make())


def _writer_factory(sink: SinkConfig) -> Callable[[], Any]:
    if isinstance(sink, StdoutSinkConfig):
        return lambda: StdoutSink(channels=sink.channels)
    if isinstance(sink, ConsoleSinkConfig):
        return lambda: ConsoleSink(intervals=sink.intervals)
    if isinstance(sink, JsonlSinkConfig):
        return lambda: JsonlSink(sink.path, channels=sink.channels, append=sink.append)
    if isinstance(sink, ParquetSinkConfig):
        return lambda: ParquetBarSink(sink.path, rows_per_file=sink.flush_every)
    return lambda: Recorder(sink.path)


def sinks_for(cfg: PipelineConfig) -> list[tuple[str, WriterSink, str]]:
    """(step name, sink, input kind) per configured sink; kind "frames" or "records"."""
    out: list[tuple[str, WriterSink, str]] = []
    for i, sink in enumerate(cfg.sinks):
        name = f"sink_{i}_{sink.type}"
        kind = "frames" if isinstance(sink, RecorderSinkConfig) else "records"
        out.append((name, WriterSink(name, _writer_factory(sink)), kind))
    return out


def close_open_writers() -> None:
    while OPEN_WRITERS:
        OPEN_WRITERS.pop().close()
