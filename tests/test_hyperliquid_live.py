"""Hyperliquid live over the simulator (real WebSockets), from the real capture (issue 9).

The simulator serves fixtures/captures/hyperliquid/ (46 l2Book pushes, 9 trades pushes
with 64 trades) with the venue's protocol; the live source must deliver every trade once
and the same books as a replay of the capture, through disconnects and duplicates.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from live_helpers import Feed, Outputs, has_trades, run_live
from websockets.asyncio.client import connect

from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.server import Simulator

pytestmark = pytest.mark.timeout(120)

CAPTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "captures"
    / "hyperliquid"
    / "hftbacktest_btc_l2Book_trades_20250126.txt.gz"
)
BTC = "BTC/USDC:USDC"
OHLCV = {"intervals": ["1s", "1m"], "lateness_ms": 2000, "wall_clock_close": False}
OPS = {"book": {"depth": 20, "emit_interval_ms": 0}, "ohlcv": OHLCV}


def capture_trade_ids(sim: SimulatorThread) -> set[str]:
    return {
        str(t["tid"])
        for e in sim.simulator.tape.entries
        if e.key == "trades:BTC"
        for t in orjson.loads(e.text)["data"]
    }


def last_capture_book(sim: SimulatorThread) -> tuple[list[list[str]], list[list[str]]]:
    last = [e for e in sim.simulator.tape.entries if e.key == "l2Book:BTC"][-1]
    bids, asks = orjson.loads(last.text)["data"]["levels"]
    return [[x["px"], x["sz"]] for x in bids], [[x["px"], x["sz"]] for x in asks]


def has_last_book(sim: SimulatorThread) -> Any:
    want = last_capture_book(sim)

    def check(records: Outputs) -> bool:
        books = [r for r in records.get("book", []) if r["type"] == "book"]
        return bool(books) and (books[-1]["bids"], books[-1]["asks"]) == want

    return check


def live(tmp_path: Path, **sim_options: Any) -> tuple[Outputs, SimulatorThread]:
    sim = SimulatorThread("hyperliquid", CAPTURE, original_times=True, **sim_options)
    ids = capture_trade_ids(sim)
    book = has_last_book(sim)
    trades = has_trades(BTC, ids)
    records = run_live(
        [Feed("hyperliquid", [BTC], sim, ["trades", "book"])],
        tmp_path,
        OPS,
        lambda r: trades(r) and book(r),
    )
    return records, sim


def trades_without_ingest(records: Outputs) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in t.items() if k != "ts_ingest"} for t in records["trades"]),
        key=lambda t: (t["ts_exchange"], t["trade_id"]),
    )


def book_states(records: list[dict[str, Any]]) -> list[Any]:
    """The successive book states written (a state repeated by an emit left out: the
    replay and live book operators may emit on different ticks)."""
    states: list[Any] = []
    for r in records:
        if r["type"] == "book" and (not states or states[-1] != (r["bids"], r["asks"])):
            states.append((r["bids"], r["asks"]))
    return states


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Outputs, SimulatorThread]:
    return live(tmp_path_factory.mktemp("clean"))


def test_clean_run_gets_every_trade_once_and_the_last_book(
    clean: tuple[Outputs, SimulatorThread],
) -> None:
    records, sim = clean
    ids = [t["trade_id"] for t in records["trades"]]
    assert sorted(ids) == sorted(capture_trade_ids(sim)) and len(ids) == 64
    assert all(t["symbol"] == BTC for t in records["trades"])
    assert has_last_book(sim)(records)
    events = {s["event"] for s in records["status"]}
    assert {"connected", "subscribed"} <= events
    assert not events & {"gap_detected", "checksum_mismatch"}
    assert (
        sim.stats.venue_counts.get("hyperliquid_snapshots", 0) == 0
    )  # subscribed before any book passed


def test_live_equals_the_replay_of_the_capture(
    clean: tuple[Outputs, SimulatorThread], tmp_path: Path
) -> None:
    from candlewax.cli import main

    records, _ = clean
    args = ["replay", str(CAPTURE), "--venue", "hyperliquid", "--out", str(tmp_path)]
    assert main([*args, "--intervals", "1s,1m"]) == 0
    replayed = [orjson.loads(x) for x in (tmp_path / "trades.jsonl").read_bytes().splitlines()]
    assert trades_without_ingest({"trades": replayed}) == trades_without_ingest(records)
    # Every book state the capture holds, in order (the replay's book operator throttles
    # its emits by default, so the live run, emitting every change, is compared with the
    # capture's own snapshots).
    capture_books = [
        {"type": "book", "bids": bids, "asks": asks}
        for bids, asks in (
            [[[x["px"], x["sz"]] for x in side] for side in orjson.loads(e.text)["data"]["levels"]]
            for e in clean[1].simulator.tape.entries
            if e.key == "l2Book:BTC"
        )
    ]
    assert book_states(records["book"]) == book_states(capture_books)


def test_disconnects_and_duplicates_lose_and_repeat_nothing(
    clean: tuple[Outputs, SimulatorThread], tmp_path: Path
) -> None:
    faults = Faults(disconnect_every_msgs=12, duplicate_every=5)
    records, sim = live(tmp_path, faults=faults)
    assert sim.stats.disconnects >= 3 and sim.stats.duplicated >= 5
    assert trades_without_ingest(records) == trades_without_ingest(clean[0])
    assert has_last_book(sim)(records)
    assert (
        sim.stats.venue_counts.get("hyperliquid_snapshots", 0) >= 1
    )  # a resubscribe got the book at once
    events = [s["event"] for s in records["status"]]
    assert events.count("connected") == sim.stats.connections == sim.stats.disconnects + 1
    assert "gap_detected" not in events


def test_a_dropped_book_push_goes_unnoticed_and_the_next_one_heals(tmp_path: Path) -> None:
    """No sequence numbers: nothing can tell a push was lost (no gap event, no resync),
    and the next full snapshot makes the book right again."""
    records, sim = live(tmp_path, faults=Faults(drop_depth=frozenset({5, 30})))
    assert sim.stats.dropped == 2
    assert has_last_book(sim)(records)
    assert not {"gap_detected", "resynced"} & {s["event"] for s in records["status"]}


def test_protocol_ping_ack_and_book_on_subscribe() -> None:
    """Ping/pong, an ack, the capture's frames byte for byte, an error for a bad request.
    (A late subscriber's book sent at once is counted in the disconnect test.)"""
    sim = Simulator("hyperliquid", CAPTURE, original_times=True)
    first_book = next(e.text for e in sim.tape.entries if e.key == "l2Book:BTC")

    async def session() -> list[str]:
        await sim.start()
        try:
            async with connect(sim.ws_url) as ws:
                await ws.send('{"method":"ping"}')
                sub = {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}
                await ws.send(orjson.dumps(sub).decode())
                got = [str(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
                await ws.send('{"method":"nope"}')
                while '"error"' not in got[-1]:
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)))
                return got
        finally:
            await sim.stop()

    got = asyncio.run(session())
    assert got[0] == '{"channel":"pong"}'
    ack = orjson.loads(got[1])
    assert ack["channel"] == "subscriptionResponse"
    assert ack["data"]["subscription"] == {"type": "l2Book", "coin": "BTC"}
    assert got[2] == first_book  # byte for byte as recorded
    assert sim.stats.app_pings == 1
    assert orjson.loads(got[-1])["channel"] == "error"
