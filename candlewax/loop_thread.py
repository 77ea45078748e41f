"""An asyncio service on its own event loop in a daemon thread.

The exchange simulator and the WebSocket fan-out server both run beside
synchronous code (the Bytewax worker, tests, the demo): ``start()`` returns
once the service listens, ``stop()`` shuts it down from any thread, and
``loop`` lets callers hand work over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopThread(Generic[T]):
    """Runs ``start_service()`` (returning T once ready) until ``stop()``, then
    ``stop_service()``, on a fresh event loop in a daemon thread."""

    def __init__(
        self,
        start_service: Callable[[], Awaitable[T]],
        stop_service: Callable[[], Awaitable[None]],
        name: str,
    ) -> None:
        self._start_service = start_service
        self._stop_service = stop_service
        self._name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start(self, timeout: float = 10.0) -> T:
        """Start the thread; returns what the service's start returned (its address)."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self._ready.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                raise

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready = await self._start_service()
        self._ready.set_result(ready)
        try:
            await self._stop.wait()
        finally:
            await self._stop_service()
