"""One lasting CPython thread state per engine worker thread.

Bytewax's workers are Rust threads. Every call they make into Python (each batch of
each step) takes the GIL through ``PyGILState_Ensure`` and gives it back through
``PyGILState_Release``; on a thread that has no thread state of its own, that pair
creates and destroys one per call, and on CPython 3.11 that is an allocation, page
faults and ``munmap`` each time. Measured (docs/benchmarks.md): a 2-process cluster
spent about twice the CPU of one process even with no item crossing processes.

``pin_thread_state()`` takes one extra ``PyGILState_Ensure`` reference on the
calling worker thread and never releases it, so the thread keeps its state and the
per-call pairs only bump a counter. The GIL itself is not held any longer than
before: the extra reference is taken while the engine already holds the GIL for
this call, and ``PyGILState_Release`` still releases the GIL when the engine's call
ends. The cost is one thread state (a few KB) left per worker thread when it ends.
``CANDLEWAX_PIN_THREAD_STATE=0`` turns it off (to measure the difference).
"""

from __future__ import annotations

import ctypes
import os
import threading

_pinned = threading.local()


def pin_thread_state() -> None:
    """Keep this thread's Python thread state for the thread's life (idempotent)."""
    if getattr(_pinned, "done", False):
        return
    if (
        threading.current_thread() is threading.main_thread()
        or os.environ.get("CANDLEWAX_PIN_THREAD_STATE", "1") == "0"
    ):
        _pinned.done = True  # the main thread's state lives as long as the interpreter
        return
    ensure = ctypes.pythonapi.PyGILState_Ensure
    ensure.restype = ctypes.c_int
    ensure()
    _pinned.done = True
