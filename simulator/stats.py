"""The simulator's counters."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class SimStats:
    """Counters (read them from any thread; they only grow).

    A venue module counts what is its own (say, in-band snapshots of a new venue)
    with :meth:`add`; names that are not fields below land in ``venue_counts``."""

    tape_frames: int = 0
    connections: int = 0
    resumed: int = 0  # connections that resumed a known subscription set
    frames_sent: int = 0  # data frames written, duplicates included
    duplicated: int = 0
    dropped: int = 0
    corrupted: int = 0
    disconnects: int = 0  # injected
    stalls: int = 0
    finished: int = 0  # connections that reached the end of the tape
    laps: int = 0  # laps started after the first (``loop``), over all subscription sets
    rest_snapshots: int = 0
    okx_snapshots: int = 0
    subscribe_requests: int = 0
    app_pings: int = 0  # text (application) pings answered, e.g. OKX "ping"
    ping_replies: int = 0  # connections on which the client answered our ping frames
    venue_counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        if name in _FIELDS:
            setattr(self, name, getattr(self, name) + n)
        else:
            self.venue_counts[name] = self.venue_counts.get(name, 0) + n

    def as_dict(self) -> dict[str, int]:
        """Every counter by name, venue counters after the fixed ones."""
        counts = {name: getattr(self, name) for name in _FIELDS}
        counts.update(self.venue_counts)
        return counts


_FIELDS = tuple(f.name for f in fields(SimStats) if f.name != "venue_counts")
