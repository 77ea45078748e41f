"""Run a :class:`Simulator` in a background thread (demo, tests, notebooks)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from typing import Any

from simulator.server import SimStats, Simulator


class SimulatorThread:
    """``start()`` returns (host, port) once the server listens; ``stop()`` shuts it down.

    Takes the same arguments as :class:`Simulator`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built here so the capture is read and options checked in the caller's thread.
        self.simulator = Simulator(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        self._thread = threading.Thread(target=self._run, name="candlewax-simulator", daemon=True)
        self._thread.start()
        return self._started.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # already stopped
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

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

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        address = await self.simulator.start()
        self._started.set_result(address)
        try:
            await self._stop.wait()
        finally:
            await self.simulator.stop()
