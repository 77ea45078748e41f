"""Prometheus metrics of this process (one registry, shared by every component).

Naming: ``candlewax_<what>_<unit>``; labels are low-cardinality (venue,
symbol, sink, event). Components increment these directly; the HTTP endpoint
of the fan-out server exposes ``REGISTRY``. Connection state and message
rates derive from the counters (``rate(candlewax_frames_total[1m])``).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS = Counter(
    "candlewax_records_total",
    "Normalized records produced, by venue and record type",
    ["venue", "type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "candlewax_dead_letters_total",
    "Frames sent to the dead-letter output",
    ["venue"],
    registry=REGISTRY,
)
STATUS_EVENTS = Counter(
    "candlewax_status_events_total",
    "Status events (connected, disconnected, gap_detected, checksum_mismatch, resynced, ...)",
    ["venue", "event"],
    registry=REGISTRY,
)
CONNECTED = Gauge(
    "candlewax_venue_connected", "Open venue connections", ["venue"], registry=REGISTRY
)
LATE_TRADES = Counter(
    "candlewax_late_trades_total",
    "Trades that missed their bar window",
    ["venue"],
    registry=REGISTRY,
)
SINK_RECORDS = Counter(
    "candlewax_sink_records_total", "Records written per sink", ["sink"], registry=REGISTRY
)
SINK_ERRORS = Counter(
    "candlewax_sink_errors_total", "Delivery/write errors per sink", ["sink"], registry=REGISTRY
)
SINK_DROPS = Counter(
    "candlewax_sink_dropped_total",
    "Records a sink could not deliver and dropped (counted, never silent)",
    ["sink"],
    registry=REGISTRY,
)


# WebSocket fan-out server (sinks/fanout). Updated about once a second, not per message.
WS_CLIENTS = Gauge("candlewax_ws_clients", "Connected WebSocket clients", registry=REGISTRY)
WS_SUBSCRIPTIONS = Gauge(
    "candlewax_ws_subscriptions", "Active WebSocket subscriptions", registry=REGISTRY
)
WS_SENT = Counter(
    "candlewax_ws_messages_sent_total", "Messages written to WebSocket clients", registry=REGISTRY
)
WS_DROPPED = Counter(
    "candlewax_ws_dropped_total", "Messages dropped for slow WebSocket clients", registry=REGISTRY
)
WS_QUEUED = Gauge(
    "candlewax_ws_queued_messages", "Messages waiting in WebSocket client queues", registry=REGISTRY
)
WS_DISCONNECTS = Counter(
    "candlewax_ws_disconnects_total",
    "WebSocket clients closed by the server (too_slow, auth)",
    ["reason"],
    registry=REGISTRY,
)
WS_CLIENT_ERRORS = Counter(
    "candlewax_ws_client_errors_total",
    "Client messages rejected (invalid, rate_limited)",
    ["reason"],
    registry=REGISTRY,
)


class _FrameCounts(Collector):
    """``candlewax_frames_total{venue}`` read at scrape time from the normalizers'
    own counters, so the hot path pays nothing for it."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], dict[str, int]]] = []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "candlewax_frames", "Raw frames received per venue", labels=["venue"]
        )
        totals: dict[str, int] = {}
        for source in list(self.sources):
            for venue, count in source().items():
                totals[venue] = totals.get(venue, 0) + count
        for venue, count in sorted(totals.items()):
            family.add_metric([venue], count)
        yield family


FRAME_COUNTS = _FrameCounts()
REGISTRY.register(FRAME_COUNTS)


def count_frames_from(source: Callable[[], dict[str, int]]) -> None:
    """Register a callable returning frames seen per venue (e.g. a Normalizer's stats)."""
    FRAME_COUNTS.sources.append(source)


def observe_records(records: Iterable[dict[str, Any]]) -> None:
    """Count a batch of output records, aggregated first so the cost per record is a
    dict increment, not a Prometheus label lookup."""
    kinds: dict[tuple[str, str], int] = {}
    events: dict[tuple[str, str], int] = {}
    for record in records:
        kind = record["type"]
        venue = record.get("venue") or record.get("trade", {}).get("venue", "")
        key = (venue, kind)
        kinds[key] = kinds.get(key, 0) + 1
        if kind == "status":
            ekey = (venue, str(record.get("event", "")))
            events[ekey] = events.get(ekey, 0) + 1
    _add(kinds)
    for (venue, event), n in events.items():
        STATUS_EVENTS.labels(venue, event).inc(n)
        if event == "connected":
            CONNECTED.labels(venue).inc(n)
        elif event == "disconnected":
            CONNECTED.labels(venue).dec(n)


_VENUE_AND_TYPE = itemgetter("venue", "type")
_VALUE = itemgetter(1)


def observe_items(items: list[tuple[Any, dict[str, Any]]]) -> None:
    """``observe_records`` of the records of (key, record) items, as the sinks get them.

    Hot (every output record passes here): the common batch, whose records all name
    their venue and none is a status, is tallied by ``collections.Counter`` in C; any
    other batch (a late trade names its venue inside ``trade``, a status counts its
    event too) goes through ``observe_records``."""
    try:
        kinds = Tally(map(_VENUE_AND_TYPE, map(_VALUE, items)))
    except (KeyError, TypeError):
        observe_records(map(_VALUE, items))
        return
    for venue, kind in kinds:
        if not venue or kind == "status":
            observe_records(map(_VALUE, items))
            return
    _add(kinds)


# Each (venue, type)'s counters, looked up once: a Prometheus label lookup costs
# microseconds, several per batch.
_CHILDREN: dict[tuple[str, str], list[Any]] = {}


def _add(kinds: dict[tuple[str, str], int]) -> None:
    for key, n in kinds.items():
        children = _CHILDREN.get(key)
        if children is None:
            children = _CHILDREN[key] = _children(*key)
        for child in children:
            child.inc(n)


def _children(venue: str, kind: str) -> list[Any]:
    children = [RECORDS.labels(venue, kind)]
    if kind == "dead_letter":
        children.append(DEAD_LETTERS.labels(venue))
    elif kind == "late":
        children.append(LATE_TRADES.labels(venue))
    return children


def exposition() -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(REGISTRY)
