"""Run a :class:`Simulator` in a background thread (demo, tests, notebooks)."""

from __future__ import annotations

from typing import Any

from candlewax.loop_thread import LoopThread
from simulator.server import SimStats, Simulator


class SimulatorThread:
    """``start()`` returns (host, port) once the server listens; ``stop()`` shuts it down.

    Takes the same arguments as :class:`Simulator`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built here so the capture is read and options checked in the caller's thread.
        self.simulator = Simulator(*args, **kwargs)
        self._thread = LoopThread(self.simulator.start, self.simulator.stop, "candlewax-simulator")

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        return self._thread.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> SimStats:
        return self.simulator.stats

    @property
    def ws_url(self) -> str:
        return self.simulator.ws_url

    @property
    def rest_url(self) -> str | None:
        return self.simulator.rest_url
