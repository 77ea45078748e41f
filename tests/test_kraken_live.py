"""Kraken live source over real WebSockets against the simulator serving v2 frames derived
from the real v1 capture (simulator/venues/kraken.py; no real v2 recording exists)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from capture_lines import CAPTURES
from live_helpers import Feed, Outputs, run_live

from candlewax.symbols import from_native
from operators.book import BookKeeper
from operators.checksum import kraken_checksum
from operators.events import DepthMsg
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.tape import Tape, load_tape
from sources.frames import RawFrame
from sources.registry import make_parser

CAPTURE = CAPTURES / "kraken" / "cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"
OPS: dict[str, Any] = {"book": {"depth": 10, "emit_interval_ms": 0}}


def symbols_of(tape: Tape) -> list[str]:
    return sorted({from_native("kraken", e.key.split(":", 1)[1]) for e in tape.entries})


def tape_trades(tape: Tape) -> list[tuple[str, str, str, str]]:
    out = []
    for entry in tape.entries:
        if entry.key.startswith("trade:"):
            for d in orjson.loads(entry.text)["data"]:
                out.append((d["symbol"], str(d["trade_id"]), entry.text, d["side"]))
    return out


def trade_keys(records: Outputs) -> list[tuple[str, str]]:
    return sorted((t["symbol"], t["trade_id"]) for t in records.get("trades", []))


def every_trade(tape: Tape) -> Any:
    want = sorted((s, i) for s, i, _, _ in tape_trades(tape))
    return lambda records: trade_keys(records) == want


def events(records: Outputs) -> list[tuple[str | None, str]]:
    return [(s["symbol"], s["event"]) for s in records.get("status", [])]


def last_books(records: Outputs) -> dict[str, Any]:
    books: dict[str, Any] = {}
    for b in records.get("book", []):
        books[b["symbol"]] = b
    return books


def test_clean_run_gets_every_trade_and_books_passing_their_checksums(tmp_path: Path) -> None:
    tape = load_tape(CAPTURE, "kraken")
    sim = SimulatorThread("kraken", tape, original_times=True)
    symbols = symbols_of(tape)
    assert len(symbols) == 10
    records = run_live([Feed("kraken", symbols, sim)], tmp_path, OPS, every_trade(tape))
    assert trade_keys(records) == sorted((s, i) for s, i, _, _ in tape_trades(tape))
    assert not [e for e in events(records) if e[1] in ("checksum_mismatch", "gap_detected")]
    assert not records.get("dead_letter")
    # Subscribed before the tape's first books: their snapshots come from the tape itself.
    assert sim.stats.venue_counts.get("kraken_snapshots") is None
    # The last book of each symbol: as the venue's last checksum says.
    last_checksum: dict[str, int] = {}
    for entry in tape.entries:
        if entry.book is not None:
            last_checksum[entry.key.split(":", 1)[1]] = orjson.loads(entry.text)["data"][0][
                "checksum"
            ]
    for symbol, book in last_books(records).items():
        levels = [(p, s) for p, s in book["bids"]], [(p, s) for p, s in book["asks"]]
        assert kraken_checksum(*levels) == last_checksum[symbol], symbol


def test_corrupted_checksum_resubscribes_only_that_symbol(tmp_path: Path) -> None:
    tape = load_tape(CAPTURE, "kraken")
    victim = next(e for e in tape.entries if e.key == "book:XMR/USD" and e.depth_no > 100)
    faults = Faults(corrupt_checksum=frozenset({victim.depth_no}))
    sim = SimulatorThread("kraken", tape, faults=faults, original_times=True)
    last = [e for e in tape.entries if e.key == "book:XMR/USD"][-1]
    want = orjson.loads(last.text)["data"][0]["checksum"]

    def resynced(records: Outputs) -> bool:
        book = last_books(records).get("XMR/USD")
        if book is None or ("XMR/USD", "resynced") not in events(records):
            return False
        return bool(kraken_checksum(book["bids"], book["asks"]) == want)

    records = run_live([Feed("kraken", symbols_of(tape), sim)], tmp_path, OPS, resynced)
    assert sim.stats.corrupted == 1
    assert [e for e in events(records) if e[0] is not None] == [
        ("XMR/USD", "checksum_mismatch"),
        ("XMR/USD", "resync_requested"),
        ("XMR/USD", "resynced"),
    ]
    assert sim.stats.venue_counts.get("kraken_snapshots") == 1  # the resubscribe's
    assert sim.stats.subscribe_requests == 5  # trade, book, ticker; unsubscribe + subscribe
    assert resynced(records)


def test_disconnects_and_duplicates_lose_and_repeat_no_trade(tmp_path: Path) -> None:
    tape = load_tape(CAPTURE, "kraken")
    faults = Faults(disconnect_every_msgs=700, duplicate_every=7)
    sim = SimulatorThread("kraken", tape, faults=faults, original_times=True)
    records = run_live([Feed("kraken", symbols_of(tape), sim)], tmp_path, OPS, every_trade(tape))
    assert sim.stats.disconnects >= 3 and sim.stats.duplicated > 100
    assert trade_keys(records) == sorted((s, i) for s, i, _, _ in tape_trades(tape))
    counts = Counter(e for _, e in events(records))
    assert counts["connected"] == sim.stats.connections
    assert not counts["checksum_mismatch"]


def top_changing_update(tape: Tape, symbol: str, after: int) -> Any:
    """The first update of ``symbol`` after its ``after``-th that changes its top 10
    (only those can be caught: the checksum covers the top 10, and v2 has no sequence)."""
    keeper = BookKeeper("kraken", symbol)
    parser = make_parser("kraken")
    seen = 0
    for entry in tape.entries:
        if entry.key != f"book:{symbol}":
            continue
        before = keeper.book.top(10)
        for item in parser.parse(RawFrame("kraken", "c", entry.ts, entry.text)):
            assert isinstance(item, DepthMsg)
            keeper.on_msg(item)
        seen += entry.depth_no > 0
        if seen > after and keeper.book.top(10) != before:
            return entry
    raise AssertionError("no such update")


def test_dropped_update_resubscribes_only_that_symbol(tmp_path: Path) -> None:
    tape = load_tape(CAPTURE, "kraken")
    faults = Faults(drop_depth=frozenset({top_changing_update(tape, "XMR/USD", 50).depth_no}))
    sim = SimulatorThread("kraken", tape, faults=faults, original_times=True)

    def resynced(records: Outputs) -> bool:
        return ("XMR/USD", "resynced") in events(records) and every_trade(tape)(records)

    records = run_live([Feed("kraken", symbols_of(tape), sim)], tmp_path, OPS, resynced)
    assert sim.stats.dropped == 1
    assert [e for e in events(records) if e[0] is not None] == [
        ("XMR/USD", "checksum_mismatch"),
        ("XMR/USD", "resync_requested"),
        ("XMR/USD", "resynced"),
    ]
    assert trade_keys(records) == sorted((s, i) for s, i, _, _ in tape_trades(tape))
