"""Engine side of ``candlewax bench``: frames from memory, spread over a cluster's processes.

``OwnedMemorySource`` is the bench's stand-in for the configured replay sources: one
partition per capture, and in a cluster each process lists only the captures it owns
(capture *i* belongs to process *i mod N*, as configured sources do, flows/cluster.py), so
each process only has to load those. The flow around it is the production one
(``flows.pipeline.build_flow``): every partition normalizes and runs its symbols'
pipelines itself, nothing crosses processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main
from bytewax.testing import run_main

from candlewax.config import PipelineConfig
from flows.cluster import Place, source_groups
from flows.inputs import SOURCE_BATCH, Item

# Frames emitted by the sources of this process in the current run (the bench checks that
# the processes together emit every frame once).
EMITTED: list[int] = [0]


def groups(cfg: PipelineConfig) -> list[list[int]]:
    """The captures read by each partition (those that may share a symbol: one)."""
    return source_groups([(src.venue, src.symbols) for src in cfg.sources])


def owned(cfg: PipelineConfig, index: int, processes: int) -> list[int]:
    """Indexes of the captures process ``index`` of ``processes`` reads."""
    place = Place(index, processes)
    return [i for k, group in enumerate(groups(cfg)) if place.owns(k) for i in group]


class _Partition(StatefulSourcePartition[Item, list[int]]):
    """Captures in turn, a batch of each, as a partition of several sources reads them."""

    def __init__(self, captures: list[Sequence[Item]], batch_size: int) -> None:
        self._captures = captures
        self._pos = [0] * len(captures)
        self._left = [i for i, c in enumerate(captures) if c]
        self._next = 0
        self._batch = batch_size

    def next_batch(self) -> list[Item]:
        while self._left:
            i = self._left[self._next % len(self._left)]
            pos = self._pos[i]
            batch = list(self._captures[i][pos : pos + self._batch])
            if not batch:
                self._left.remove(i)
                continue
            self._pos[i] = pos + len(batch)
            self._next += 1
            EMITTED[0] += len(batch)
            return batch
        raise StopIteration

    def snapshot(self) -> list[int]:
        return list(self._pos)


class OwnedMemorySource(FixedPartitionedSource[Item, list[int]]):
    """``captures[i]`` holds the frames of capture ``i`` if this process reads it (else it
    may be empty: it is never looked at); partitions are grouped as configured sources
    are (``flows.inputs.PipelineSource``)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        captures: Sequence[Sequence[Item]],
        place: Place,
        batch_size: int = SOURCE_BATCH,
    ) -> None:
        self.captures = captures
        self.parts = {"+".join(map(str, g)): g for g in groups(cfg)}
        self.mine = [name for k, name in enumerate(self.parts) if place.owns(k)]
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self.mine)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Partition:
        # (Never resumed: the bench runs without recovery.)
        captures = [self.captures[i] for i in self.parts[for_part]]
        return _Partition(captures, self.batch_size)


def run_here(flow: Dataflow) -> None:
    """One worker in this thread (what ``candlewax run`` does with ``workers: 1``)."""
    EMITTED[0] = 0
    run_main(flow)  # type: ignore[no-untyped-call]


def run_cluster_process(flow: Dataflow, addresses: list[str], process_id: int) -> None:
    """This process as member ``process_id`` of a cluster of ``len(addresses)`` processes,
    one worker each (``candlewax run -a ... -i``, as a StatefulSet runs it)."""
    EMITTED[0] = 0
    cli_main(flow, addresses=addresses, process_id=process_id, workers_per_process=1)  # type: ignore[no-untyped-call]
