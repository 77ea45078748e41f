"""Engine side of ``candlewax bench``: frames from memory, spread over the cluster's workers.

``SpreadMemorySource`` is a ``DynamicSource``: every worker gets the captures whose index
modulo the worker count is its own index, so with one worker per process, process *p* of
*N* reads captures *p*, *p + N*, ... and each process only has to load those (a
``FixedPartitionedSource`` would place partitions by a hash of their names, possibly all on
one process). A worker reading several captures takes a batch of each in turn, as separate
replay sources would.
"""

from __future__ import annotations

from collections.abc import Sequence

from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.run import cli_main
from bytewax.testing import run_main

from flows.inputs import SOURCE_BATCH, Item

# Frames emitted by the sources of this process in the current run (the bench checks that
# the processes together emit every frame once).
EMITTED: list[int] = [0]


def owned(count: int, index: int, workers: int) -> list[int]:
    """Indexes of the captures worker ``index`` of ``workers`` reads."""
    return list(range(index, count, workers))


class _Partition(StatelessSourcePartition[Item]):
    def __init__(self, captures: list[Sequence[Item]], batch_size: int) -> None:
        self._captures = [c for c in captures if c]
        self._pos = [0] * len(self._captures)
        self._next = 0
        self._batch = batch_size

    def next_batch(self) -> list[Item]:
        while self._captures:
            i = self._next % len(self._captures)
            frames, pos = self._captures[i], self._pos[i]
            batch = list(frames[pos : pos + self._batch])
            if not batch:
                del self._captures[i], self._pos[i]
                continue
            self._pos[i] = pos + len(batch)
            self._next = i + 1
            EMITTED[0] += len(batch)
            return batch
        raise StopIteration


class SpreadMemorySource(DynamicSource[Item]):
    """``captures[i]`` holds the frames of capture ``i`` if this process reads it (else it
    may be empty: it is never looked at)."""

    def __init__(self, captures: Sequence[Sequence[Item]], batch_size: int = SOURCE_BATCH) -> None:
        self.captures = captures
        self.batch_size = batch_size

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        mine = owned(len(self.captures), worker_index, worker_count)
        return _Partition([self.captures[i] for i in mine], self.batch_size)


def run_here(flow: Dataflow) -> None:
    """One worker in this thread (what ``candlewax run`` does with ``workers: 1``)."""
    EMITTED[0] = 0
    run_main(flow)  # type: ignore[no-untyped-call]


def run_cluster_process(flow: Dataflow, addresses: list[str], process_id: int) -> None:
    """This process as member ``process_id`` of a cluster of ``len(addresses)`` processes,
    one worker each (``python -m bytewax.run -a ... -i``, as a StatefulSet runs it)."""
    EMITTED[0] = 0
    cli_main(flow, addresses=addresses, process_id=process_id, workers_per_process=1)  # type: ignore[no-untyped-call]
