"""Prometheus metrics of this process (one registry, shared by every component).

Naming: ``candlewax_<what>_<unit>``; labels are low-cardinality (venue,
symbol, sink, event). Components increment these directly; the HTTP endpoint
of the fan-out server exposes ``REGISTRY``. Connection state and message
rates derive from the counters (``rate(candlewax_frames_total[1m])``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

FRAMES = Counter(
    "candlewax_frames_total", "Raw frames received per venue", ["venue"], registry=REGISTRY
)
RECORDS = Counter(
    "candlewax_records_total",
    "Normalized records produced, by venue and record type",
    ["venue", "type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "candlewax_dead_letters_total", "Frames sent to the dead-letter output", ["venue"],
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
    "candlewax_late_trades_total", "Trades that missed their bar window", ["venue"],
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


def observe_record(record: dict[str, Any]) -> None:
    """Count one output record (called once per record on the way to the sinks)."""
    kind = record["type"]
    venue = str(record.get("venue") or record.get("trade", {}).get("venue", ""))
    RECORDS.labels(venue, kind).inc()
    if kind == "status":
        event = record["event"]
        STATUS_EVENTS.labels(venue, event).inc()
        if event == "connected":
            CONNECTED.labels(venue).inc()
        elif event == "disconnected":
            CONNECTED.labels(venue).dec()
    elif kind == "dead_letter":
        DEAD_LETTERS.labels(venue).inc()
    elif kind == "late":
        LATE_TRADES.labels(venue).inc()


def exposition() -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(REGISTRY)
