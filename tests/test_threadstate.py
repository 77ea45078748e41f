"""flows.threadstate: the pinned thread state never holds the GIL beyond the call."""

from __future__ import annotations

import threading
import time

import pytest

from flows import threadstate


def test_pinning_a_worker_thread_leaves_the_gil_to_other_threads() -> None:
    pinned = threading.Event()
    release = threading.Event()
    progress: list[int] = []

    def worker() -> None:
        threadstate.pin_thread_state()
        threadstate.pin_thread_state()  # idempotent: one extra reference, not two
        pinned.set()
        release.wait(30)  # blocks without the GIL, as the engine's Rust code does

    def counter() -> None:
        for i in range(200):
            progress.append(i)
            time.sleep(0.001)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert pinned.wait(30)
    other = threading.Thread(target=counter)
    other.start()
    other.join(30)
    release.set()
    thread.join(30)
    assert progress == list(range(200))  # the pinned thread did not keep the GIL
    assert not thread.is_alive()


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWAX_PIN_THREAD_STATE", "0")
    calls: list[int] = []
    monkeypatch.setattr(threadstate.ctypes.pythonapi, "PyGILState_Ensure", lambda: calls.append(1))
    done = threading.Event()

    def worker() -> None:
        threadstate.pin_thread_state()
        done.set()

    threading.Thread(target=worker).start()
    assert done.wait(30)
    assert calls == []
