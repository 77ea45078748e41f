"""Sources whose partitions normalize and run every symbol's pipeline themselves.

A source partition (one configured source: it owns its symbols) hands each batch of
frames to its ``SymbolPipelines`` and emits the output records, so nothing downstream is
keyed or routed to another worker: in a cluster, a record is made and written on the
worker that read its frame.

- State: the snapshot of a partition is (the inner source's snapshot, the pipelines'
  pickled state), taken at one point of the stream, so recovery resumes both together.
- Timers (live book emit interval, wall-clock bar close, partial bars): the partition's
  ``next_awake`` is the earliest of its inner source's and its pipelines' due times.
- End: when the inner partition ends, the pipelines' ``on_eof`` output goes out (open
  bars, last books) before the partition ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)

from candlewax.schema import now_us
from flows import inputs
from operators.symbol_pipeline import KeyedItem, SymbolPipelines

MakePipelines = Callable[[], SymbolPipelines]


def _at(due_us: int | None) -> datetime | None:
    """The engine's wake-up time; None (never) for a time no datetime can hold."""
    if due_us is None:
        return None
    try:
        return datetime.fromtimestamp(due_us / 1e6, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


class _Fused:
    """What the stateful and stateless fused partitions share."""

    def __init__(self, inner: Any, pipelines: SymbolPipelines) -> None:
        self.inner = inner
        self.pipelines = pipelines
        self.ended = False
        self.timed = pipelines.settings.timed
        # The pipelines' earliest due time, asked once per batch (in next_awake): the
        # timers are looked at only once it has passed.
        self.due_us: int | None = None

    def next_batch(self) -> list[KeyedItem]:
        if self.ended:
            raise StopIteration
        try:
            batch: Iterable[Any] = self.inner.next_batch()
        except StopIteration:
            self.ended = True
            out = self.pipelines.on_eof(inputs.stream_ended())
            if not out:
                raise
            return out
        out = self.pipelines.on_batch(batch)
        if self.due_us is not None:
            now = now_us()
            if now >= self.due_us:
                out.extend(self.pipelines.on_time(now))
        return out

    def next_awake(self) -> datetime | None:
        if self.ended:
            return None
        inner: datetime | None = self.inner.next_awake()
        if not self.timed:
            return inner
        self.due_us = self.pipelines.due()
        if inner is None:
            return None  # the inner source has more now (or the engine's cooldown applies)
        due = _at(self.due_us)
        return inner if due is None else min(inner, due)

    def close(self) -> None:
        self.inner.close()


class _FusedStateful(_Fused, StatefulSourcePartition[KeyedItem, Any]):
    def snapshot(self) -> Any:
        inner = self.inner.snapshot()
        if not self.pipelines.settings.resumable:
            return inner  # no recovery store: nothing keeps the pipelines' state
        return (inner, self.pipelines.snapshot())


class _FusedStateless(_Fused, StatelessSourcePartition[KeyedItem]):
    pass


def _split_resume(resume: Any) -> tuple[Any, Any]:
    """(inner state, pipelines state) of a snapshot; a store written before the
    pipelines ran in the source holds the inner state alone."""
    if isinstance(resume, tuple) and len(resume) == 2 and isinstance(resume[1], bytes):
        return resume
    return resume, None


class FusedSource(FixedPartitionedSource[KeyedItem, Any]):
    """``inner``'s partitions, each running the pipelines of what it reads."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], make: MakePipelines) -> None:
        self.inner = inner
        self.make = make

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _FusedStateful:
        inner_state, pipelines_state = _split_resume(resume_state)
        pipelines = self.make()
        if pipelines_state is not None:
            pipelines.restore(pipelines_state)
        return _FusedStateful(self.inner.build_part(step_id, for_part, inner_state), pipelines)


class FusedDynamicSource(DynamicSource[KeyedItem]):
    """The same over a ``DynamicSource`` (benchmarks: frames from memory per worker)."""

    def __init__(self, inner: DynamicSource[Any], make: MakePipelines) -> None:
        self.inner = inner
        self.make = make

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FusedStateless:
        return _FusedStateless(self.inner.build(step_id, worker_index, worker_count), self.make())
