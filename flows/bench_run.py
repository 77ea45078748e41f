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

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main
from bytewax.testing import run_main

from flows.cluster import Place
from flows.inputs import SOURCE_BATCH, Item

# Frames emitted by the sources of this process in the current run (the bench checks that
# the processes together emit every frame once).
EMITTED: list[int] = [0]


def owned(count: int, index: int, workers: int) -> list[int]:
    """Indexes of the captures process ``index`` of ``workers`` reads."""
    return [i for i in range(count) if Place(index, workers).owns(i)]


class _Partition(StatefulSourcePartition[Item, int]):
    def __init__(self, frames: Sequence[Item], batch_size: int, resume: int | None) -> None:
        self._frames = frames
        self._batch = batch_size
        self._pos = resume or 0

    def next_batch(self) -> list[Item]:
        pos = self._pos
        batch = list(self._frames[pos : pos + self._batch])
        if not batch:
            raise StopIteration
        self._pos = pos + len(batch)
        EMITTED[0] += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._pos


class OwnedMemorySource(FixedPartitionedSource[Item, int]):
    """``captures[i]`` holds the frames of capture ``i`` if this process reads it (else it
    may be empty: it is never looked at)."""

    def __init__(
        self, captures: Sequence[Sequence[Item]], place: Place, batch_size: int = SOURCE_BATCH
    ) -> None:
        self.captures = captures
        self.mine = [str(i) for i in range(len(captures)) if place.owns(i)]
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self.mine)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(self.captures[int(for_part)], self.batch_size, resume_state)


def run_here(flow: Dataflow) -> None:
    """One worker in this thread (what ``candlewax run`` does with ``workers: 1``)."""
    EMITTED[0] = 0
    run_main(flow)  # type: ignore[no-untyped-call]


def run_cluster_process(flow: Dataflow, addresses: list[str], process_id: int) -> None:
    """This process as member ``process_id`` of a cluster of ``len(addresses)`` processes,
    one worker each (``candlewax run -a ... -i``, as a StatefulSet runs it)."""
    EMITTED[0] = 0
    cli_main(flow, addresses=addresses, process_id=process_id, workers_per_process=1)  # type: ignore[no-untyped-call]
