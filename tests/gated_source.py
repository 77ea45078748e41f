"""A source of frames from memory that halts at given positions until the test says go."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.frames import RawFrame

Gates = dict[int, tuple[threading.Event, threading.Event]]


class _GatedPartition(StatefulSourcePartition[RawFrame, int]):
    def __init__(self, frames: list[RawFrame], gates: Gates):
        self.frames = frames
        self.gates = gates  # position -> (event to set on arrival, event to wait for)
        self.pos = 0
        self.awake: datetime | None = None

    def next_batch(self) -> list[RawFrame]:
        if self.pos >= len(self.frames):
            raise StopIteration
        gate = self.gates.get(self.pos)
        if gate is not None:
            arrived, proceed = gate
            arrived.set()
            if not proceed.is_set():  # wait without blocking the worker (sinks keep going)
                self.awake = datetime.now(UTC) + timedelta(milliseconds=50)
                return []
        end = min([p for p in self.gates if p > self.pos] + [self.pos + 128, len(self.frames)])
        batch = self.frames[self.pos : end]
        self.pos = end
        return batch

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int:
        return self.pos


class GatedSource(FixedPartitionedSource[RawFrame, int]):
    """Frames from memory that stop at given positions until the test lets them go on."""

    def __init__(self, frames: list[RawFrame], gates: Gates):
        self.frames = frames
        self.gates = gates

    def list_parts(self) -> list[str]:
        return ["gated"]

    def build_part(self, step_id: str, for_part: str, resume: int | None) -> _GatedPartition:
        return _GatedPartition(self.frames, self.gates)
