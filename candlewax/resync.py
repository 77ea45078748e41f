"""In-process channel from the order-book operator to the live sources.

A book that detects a gap or a checksum mismatch asks the live source of its
venue to resync that one symbol (fetch a REST snapshot or resubscribe). The
book operator and the source of a venue run in the same process in the
deployments we support today (single process, any number of workers); a
request for a venue with no listener in this process returns False; the book
says so in its status detail and waits for the next in-band snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, str], None]  # (native_symbol, reason)

_lock = threading.Lock()
_listeners: dict[str, list[Listener]] = {}


def subscribe(venue: str, listener: Listener) -> Callable[[], None]:
    """Register a listener for a venue; returns the function that removes it."""
    with _lock:
        _listeners.setdefault(venue, []).append(listener)

    def remove() -> None:
        with _lock:
            if listener in _listeners.get(venue, []):
                _listeners[venue].remove(listener)

    return remove


def request(venue: str, native_symbol: str, reason: str) -> bool:
    """Ask every listener of ``venue`` to resync ``native_symbol``.

    Returns False when no live source listens, e.g. in replay."""
    with _lock:
        targets = list(_listeners.get(venue, []))
    for listener in targets:
        listener(native_symbol, reason)
    return bool(targets)
