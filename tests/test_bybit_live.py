"""Bybit live source end to end over real sockets: the simulator serving the real
spot + linear capture on /v5/public/spot and /v5/public/linear -> one connection per
market -> Bytewax dataflow -> JSONL; compared with the replay of the same capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from capture_lines import CAPTURES
from flow_helpers import Record
from live_helpers import Feed, Outputs, run_live

from operators.book import BookKeeper
from operators.events import DepthMsg
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.tape import Tape, load_tape
from sources.bybit import LINEAR, PROTOCOL
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import iter_capture

pytestmark = pytest.mark.timeout(120)

MIXED = CAPTURES / "bybit" / "cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz"
OHLCV = {"intervals": ["1s"], "lateness_ms": 2000, "wall_clock_close": False}
DEPTH = 25
OPS = {"book": {"depth": DEPTH, "emit_interval_ms": 0}, "ohlcv": OHLCV}
SYMBOLS = [
    "BTC/USDT",
    "ETH/USDT",
    "BTC/USDT:USDT",
    "DOGE/USDT:USDT",
    "ETH/USDT:USDT",
    "SOL/USDT:USDT",
]


def replay_items() -> list[Any]:
    parser = make_parser("bybit")
    frames = [f for f in iter_capture(MIXED, "bybit") if isinstance(f, RawFrame)]
    return [item for frame in frames for item in parser.parse(frame)]


def trade_keys(trades: list[Record]) -> Counter[tuple[Any, ...]]:
    return Counter((t["symbol"], t["trade_id"], t["price"], t["size"], t["side"]) for t in trades)


def final_books() -> dict[str, tuple[list[Any], list[Any]]]:
    """Top ``DEPTH`` per symbol at the end of the replay."""
    keepers: dict[str, BookKeeper] = {}
    for item in replay_items():
        if isinstance(item, DepthMsg):
            keeper = keepers.setdefault(item.symbol, BookKeeper("bybit", item.symbol, DEPTH))
            keeper.on_msg(item)
    return {s: k.book.top(DEPTH) for s, k in keepers.items()}


def all_trades_in(records: Outputs) -> bool:
    return len(records.get("trades", [])) >= 347


def statuses(records: Outputs) -> list[Record]:
    return [s for s in records.get("status", []) if s.get("symbol")]


def last_books(records: Outputs) -> dict[str, tuple[list[Any], list[Any]]]:
    books: dict[str, tuple[list[Any], list[Any]]] = {}
    for record in records["book"]:
        if record["type"] == "book":
            books[record["symbol"]] = (
                [tuple(lv) for lv in record["bids"]],
                [tuple(lv) for lv in record["asks"]],
            )
    return books


def feed(tape: Tape | Path = MIXED, **sim: Any) -> Feed:
    return Feed("bybit", SYMBOLS, SimulatorThread("bybit", tape, original_times=True, **sim))


def as_tuples(book: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
    return [tuple(lv) for lv in book[0]], [tuple(lv) for lv in book[1]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    out = tmp_path_factory.mktemp("bybit-clean")
    return run_live([feed()], out, OPS, all_trades_in)


def test_both_markets_stream_every_trade_and_the_replay_books(clean: Outputs) -> None:
    want = [i for i in replay_items() if isinstance(i, dict) and i["type"] == "trade"]
    assert trade_keys(clean["trades"]) == trade_keys(want)
    assert not statuses(clean)  # no gap on a clean run
    books = last_books(clean)
    assert sorted(books) == sorted(SYMBOLS)
    for symbol, book in final_books().items():
        assert books[symbol] == as_tuples(book), symbol


def test_subscribes_per_market_and_pings(tmp_path: Path) -> None:
    fed = feed()
    run_live([fed], tmp_path, OPS, all_trades_in)
    stats = fed.sim.stats
    # Two connections (spot, linear); spot: 2 symbols x (trades, book) = 4 args, one
    # request; linear: 4 symbols x (trades, book, tickers) = 12 args, two requests.
    assert stats.connections == 2
    assert stats.subscribe_requests == 3


def test_disconnects_and_duplicates_lose_and_repeat_nothing(clean: Outputs, tmp_path: Path) -> None:
    fed = feed(faults=Faults(disconnect_every_msgs=400, duplicate_every=37))
    records = run_live([fed], tmp_path, OPS, all_trades_in)
    assert fed.sim.stats.disconnects >= 3 and fed.sim.stats.duplicated > 20
    assert trade_keys(records["trades"]) == trade_keys(clean["trades"])
    assert last_books(records) == last_books(clean)


def test_a_dropped_delta_resyncs_only_that_symbol(clean: Outputs, tmp_path: Path) -> None:
    tape = load_tape(MIXED, "bybit")
    book = f"{LINEAR}|orderbook.200.SOLUSDT"
    linear = [e for e in tape.entries if e.key.startswith(f"{LINEAR}|")]
    updates = [i for i, e in enumerate(linear) if e.book == book and e.depth_no]
    at = updates[len(updates) // 3]
    victim = linear[at]
    reveal = next(e for e in linear[at + 1 :] if e.book == book and e.depth_no)
    # Hold the linear stream right after the delta revealing the gap: the resubscribe
    # and its snapshot happen meanwhile.
    held = linear.index(reveal) + 3
    faults = Faults(drop_depth=frozenset({victim.depth_no}), stall_after=held, stall_seconds=1.5)
    fed = feed(tape, faults=faults)
    records = run_live([fed], tmp_path, OPS, all_trades_in)

    assert fed.sim.stats.dropped == 1
    events = [(s["symbol"], s["event"], s["detail"]) for s in statuses(records)]
    assert [e[:2] for e in events] == [
        ("SOL/USDT:USDT", "gap_detected"),
        ("SOL/USDT:USDT", "resync_requested"),
        ("SOL/USDT:USDT", "resynced"),
    ]
    assert f"u={reveal.last_id}" in events[0][2]
    assert fed.sim.stats.subscribe_requests == 3 + 2  # + unsubscribe and subscribe
    assert fed.sim.stats.venue_counts == {"bybit_snapshots": 1}  # the resubscribe
    # After the resync the book ends where the clean run's does; trades are untouched.
    assert last_books(records) == last_books(clean)
    assert trade_keys(records["trades"]) == trade_keys(clean["trades"])


def test_ping_pong_and_acks_over_a_real_socket() -> None:
    """The simulator answers Bybit's JSON ping and subscribe as Bybit does, and the
    protocol recognises the pong as control (the keep-alive the client sends every 20 s)."""
    from websockets.sync.client import connect

    sim = SimulatorThread("bybit", MIXED, original_times=True)
    sim.start()
    try:
        spot_url = sim.ws_url.replace("/linear", "/spot")
        with connect(spot_url) as ws:
            assert PROTOCOL.app_ping_text is not None
            ws.send(PROTOCOL.app_ping_text)
            pong = str(ws.recv(timeout=10))
            assert PROTOCOL.is_control(pong), pong
            (subscribe,) = PROTOCOL.subscribe_messages(["BTCUSDT"], ["trades"])
            ws.send(subscribe)
            ack = str(ws.recv(timeout=10))
            assert '"success":true' in ack and '"op":"subscribe"' in ack
            assert not PROTOCOL.is_control(ack)
            first = str(ws.recv(timeout=10))
            assert first.startswith('{"topic":"publicTrade.BTCUSDT"')  # spot's, not linear's
            assert '"i":"2' in first  # spot trade ids are numbers; linear ones UUIDs
        assert sim.stats.app_pings == 1
    finally:
        sim.stop()


def test_default_run_moves_every_event_time_to_now(tmp_path: Path) -> None:
    """Without original_times the simulator shifts ts/cts/T (and funding times) by one
    offset: trades keep their spacing and land within seconds of the wall clock."""
    import time

    sim = SimulatorThread("bybit", MIXED)
    records = run_live([Feed("bybit", SYMBOLS, sim)], tmp_path, OPS, all_trades_in)
    recorded = sorted(t["ts_exchange"] for t in clean_trades())
    got = sorted(t["ts_exchange"] for t in records["trades"])
    offset = got[0] - recorded[0]
    assert [t - offset for t in got] == recorded
    assert abs(got[0] - time.time() * 1_000_000) < 120 * 1_000_000


def clean_trades() -> list[Record]:
    return [i for i in replay_items() if isinstance(i, dict) and i["type"] == "trade"]
