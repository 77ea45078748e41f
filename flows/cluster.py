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
