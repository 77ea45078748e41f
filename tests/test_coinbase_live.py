"""Coinbase end to end over real sockets on 127.0.0.1: the simulator serving the bundled
Advanced Trade capture -> the live source -> the Bytewax dataflow -> JSONL, checked
against a replay of the same capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from flow_helpers import Record, run_replay
from live_helpers import Feed, Outputs, run_live

from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.tape import load_tape

pytestmark = pytest.mark.timeout(120)

CAPTURE = (
    Path(__file__).resolve().parent.parent
    / "fixtures/captures/coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz"
)
SYMBOLS = ["BTC/USD", "ETH/USD"]
OHLCV = {"intervals": ["1s", "1m"], "lateness_ms": 2000, "wall_clock_close": False}
OPS = {"book": {"depth": 20, "emit_interval_ms": 0}, "ohlcv": OHLCV}
# Coinbase takes one channel per subscribe frame and the simulator streams from the
# first one (market_trades): at max pace the whole tape could pass before level2 is
# subscribed. Hold the stream after its first frames so every channel is subscribed
# first, whatever the machine's load.
HOLD: dict[str, Any] = {"stall_after": 2, "stall_seconds": 1.5}


def trade_ids() -> set[str]:
    ids: set[str] = set()
    for entry in load_tape(CAPTURE, "coinbase").entries:
        if entry.key.startswith("market_trades:"):
            for event in orjson.loads(entry.text)["events"]:
                ids.update(t["trade_id"] for t in event["trades"])
    return ids


def served(records: Outputs) -> bool:
    """Every trade out, and each symbol's last book equal to the replay's."""
    return {t["trade_id"] for t in records.get("trades", [])} >= trade_ids()


def last_books(records: Outputs) -> dict[str, tuple[Any, Any]]:
    last: dict[str, tuple[Any, Any]] = {}
    for record in records["book"]:
        if record["type"] == "book":
            last[record["symbol"]] = (record["bids"], record["asks"])
    return last


def trades_without_ingest(records: Outputs) -> list[Record]:
    return sorted(
        ({k: v for k, v in t.items() if k != "ts_ingest"} for t in records["trades"]),
        key=lambda t: (t["symbol"], t["trade_id"]),
    )


def statuses(records: Outputs) -> list[Record]:
    """Status records but the connection's own (connected, subscribed, and the
    disconnect when the run stops)."""
    own = ("connected", "subscribed", "disconnected")
    return [s for s in records["status"] if s["event"] not in own]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    return run_replay(CAPTURE, "coinbase", tmp_path_factory.mktemp("replay"), operators=OPS)


def feed(**sim: Any) -> Feed:
    return Feed(
        "coinbase", SYMBOLS, SimulatorThread("coinbase", CAPTURE, original_times=True, **sim)
    )


def book_settled(replayed: Outputs) -> Any:
    want = last_books(replayed)

    def check(records: Outputs) -> bool:
        return served(records) and last_books(records) == want

    return check


def test_clean_live_run_equals_the_replay(tmp_path: Path, replayed: Outputs) -> None:
    live = feed(faults=Faults(**HOLD))
    records = run_live([live], tmp_path, OPS, book_settled(replayed))
    assert len(records["trades"]) == len(replayed["trades"]) == 279
    assert trades_without_ingest(records) == trades_without_ingest(replayed)
    assert last_books(records) == last_books(replayed)
    assert not records["dead_letter"] and not records["late"]
    assert not statuses(records)
    # market_trades, level2, ticker and heartbeats: one subscribe frame each.
    assert live.sim.stats.subscribe_requests == 4
    # Every book update of the tape reached the client (none passed unsubscribed).
    assert live.sim.stats.frames_sent == len(load_tape(CAPTURE, "coinbase").entries)


def test_a_dropped_book_update_resyncs_every_book_of_the_connection(
    tmp_path: Path, replayed: Outputs
) -> None:
    faults = Faults(drop_depth=frozenset({300}), **HOLD)
    live = feed(faults=faults)
    records = run_live([live], tmp_path, OPS, book_settled(replayed))
    assert live.sim.stats.dropped == 1
    events = Counter((s["symbol"], s["event"]) for s in statuses(records))
    for symbol in SYMBOLS:  # sequence_num is per connection: no book on it is trusted
        assert events[(symbol, "gap_detected")] == 1
        assert events[(symbol, "resync_requested")] == 1
        assert events[(symbol, "resynced")] == 1
    assert sum(events.values()) == 6
    # Initial 4 subscribes, then unsubscribe + subscribe level2 for each product.
    assert live.sim.stats.subscribe_requests == 4 + 2 * len(SYMBOLS)
    assert last_books(records) == last_books(replayed)
    assert trades_without_ingest(records) == trades_without_ingest(replayed)


def test_disconnects_and_duplicates_lose_and_repeat_nothing(
    tmp_path: Path, replayed: Outputs
) -> None:
    live = feed(faults=Faults(disconnect_every_msgs=250, duplicate_every=7, **HOLD))
    records = run_live([live], tmp_path, OPS, book_settled(replayed))
    stats = live.sim.stats
    # The hold serves the first connection only: later ones may race their level2
    # subscription (and get a built snapshot), so they are not counted on.
    assert stats.disconnects >= 1 and stats.resumed >= 1 and stats.duplicated > 20
    assert trades_without_ingest(records) == trades_without_ingest(replayed)
    assert last_books(records) == last_books(replayed)
    # Duplicates repeat their sequence_num (ignored); each new connection counts from 0.
    gaps = [s for s in statuses(records) if s["event"] == "gap_detected"]
    assert gaps == []


def test_restamp_moves_every_iso_time_by_the_offset_keeping_its_digits() -> None:
    from simulator.venues import venue_sim
    from sources.coinbase import _micros

    sim = venue_sim("coinbase")
    day_ms = 86_400_000 + 1_500  # a day and 1.5 s: crosses the date, moves the fraction
    entries = load_tape(CAPTURE, "coinbase").entries
    trade = next(e for e in entries if e.key.startswith("market_trades:"))
    level = next(e for e in entries if e.book and e.depth_no)
    for entry in (trade, level):
        before = orjson.loads(entry.text)
        after = orjson.loads(sim.restamp(entry.text, day_ms))
        assert _micros(after["timestamp"], "t") - _micros(before["timestamp"], "t") == day_ms * 1000
        assert len(after["timestamp"]) == len(before["timestamp"])
        event, moved = before["events"][0], after["events"][0]
        for old, new in zip(event.get("trades", []), moved.get("trades", []), strict=True):
            assert _micros(new["time"], "t") - _micros(old["time"], "t") == day_ms * 1000
            assert (new["price"], new["size"], new["trade_id"]) == (
                old["price"],
                old["size"],
                old["trade_id"],
            )
        for old, new in zip(event.get("updates", []), moved.get("updates", []), strict=True):
            assert (
                _micros(new["event_time"], "t") - _micros(old["event_time"], "t") == day_ms * 1000
            )
    assert list(sim.event_times_ms(trade.text)) == [
        _micros(orjson.loads(trade.text)["timestamp"], "t") // 1000
    ]
