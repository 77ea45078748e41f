"""Where this process stands in its Bytewax cluster.

Every process of a cluster builds the same dataflow; ``Place`` says which of the
``processes`` this one is, so the configured sources can be spread over the processes
(source *i* is read by process *i mod N*) and each process's sinks know their own
partition. One process (``candlewax run`` without ``-p``/``-a``) is ``SINGLE``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    index: int = 0
    processes: int = 1

    def owns(self, position: int) -> bool:
        """True if the configured source at ``position`` is read in this process."""
        return position % self.processes == self.index


SINGLE = Place()


def source_groups(sources: list[tuple[str, list[str]]]) -> list[list[int]]:
    """Indexes of ``(venue, symbols)`` sources that must share one partition, in order.

    A venue:symbol's state (dedupe, bars, book) lives in the partition of the source that
    delivers it, so two sources that may deliver the same venue:symbol are read by one
    partition: same venue, and symbol lists that meet, or one of them empty (a replay of
    every symbol of its capture). List the symbols of each source to let them spread.
    """
    parent = list(range(len(sources)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (venue_i, symbols_i) in enumerate(sources):
        for j in range(i):
            venue_j, symbols_j = sources[j]
            if venue_i == venue_j and (
                not symbols_i or not symbols_j or set(symbols_i) & set(symbols_j)
            ):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(sources)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
