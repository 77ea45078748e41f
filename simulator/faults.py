"""Fault injection settings of the simulator.

Counting conventions (all 1-based):
- ``drop_depth`` / ``corrupt_checksum`` name book updates by their number on
  the tape (the k-th depth diff of the capture); each fault fires once, the
  first time that frame is sent, so a reconnect overlap re-sends it intact.
- ``duplicate_every`` and ``disconnect_every_msgs`` count data frames sent on
  one connection.
- ``stall_after`` counts data frames sent by the whole simulator; the stall
  happens once.

The frame edits themselves are the venue's (``VenueSim.corrupt_checksum``; a
dropped update needs none: the venue's sequence ids show the gap).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    disconnect_every_s: float | None = None
    disconnect_every_msgs: int | None = None
    drop_depth: frozenset[int] = frozenset()
    duplicate_every: int | None = None
    corrupt_checksum: frozenset[int] = frozenset()
    stall_after: int | None = None
    stall_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("disconnect_every_msgs", "duplicate_every", "stall_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.disconnect_every_s is not None and self.disconnect_every_s <= 0:
            raise ValueError("disconnect_every_s must be > 0")
        if any(k < 1 for k in (*self.drop_depth, *self.corrupt_checksum)):
            raise ValueError("drop_depth / corrupt_checksum numbers are 1-based")
        if self.stall_seconds < 0:
            raise ValueError("stall_seconds must be >= 0")
