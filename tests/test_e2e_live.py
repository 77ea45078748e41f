"""End to end over real sockets on 127.0.0.1: exchange simulator -> live sources ->
Bytewax dataflow -> JSONL, with the bundled captures and injected faults.

The simulator serves at max pace. Where the client must act while frames are
still to come (Binance's first REST snapshot, a resync), the simulator holds the
stream (a ``stall`` fault) or paces it for a second or more, so the checks do not
depend on how fast this machine is.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from bar_reference import assert_matches, reference
from flow_helpers import BTC_SPOT, ETH_SPOT, OKX_TBT, ROOT, Record, read_jsonl, run_replay
from live_helpers import Feed, Outputs, all_of, has_trades, run_live, tape_trade_ids

from candlewax.symbols import from_native
from operators.checksum import okx_checksum
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.tape import Entry, Tape, load_tape

pytestmark = pytest.mark.timeout(120)

SEC = 1_000_000
INTERVALS = {"1s": SEC, "1m": 60 * SEC}
LIMIT = 12_000  # capture frames per Binance simulator (~100 s of trading)
# Recorded 2022/2024 event times: windows close on event time only.
OHLCV = {"intervals": list(INTERVALS), "lateness_ms": 2000, "wall_clock_close": False}
BINANCE_OPS = {"book": {"depth": 5, "emit_interval_ms": 0}, "ohlcv": OHLCV}
OKX_OPS = {"book": {"depth": 25, "emit_interval_ms": 0}, "ohlcv": OHLCV}
# Binance's procedure fetches the REST snapshot 1 s after the first diff: hold the
# stream early for longer than that so the book syncs while most diffs are still to come.
SYNC_STALL = Faults(stall_after=300, stall_seconds=2.0)
BBO_FIELDS = ("bid_price", "bid_size", "ask_price", "ask_size")


@dataclass
class Run:
    out: Path
    records: Outputs
    feeds: list[Feed]


def bbo_vs_ticker(records: Outputs, symbol: str) -> tuple[list[int], list[tuple[Record, Record]]]:
    """Sequences where the rebuilt BBO (origin book, sequence = last applied u) and the
    venue's bookTicker (sequence = its u) describe the same book state; and those
    that disagree."""
    bbos = [r for r in records["book"] if r["type"] == "bbo" and r["symbol"] == symbol]
    rebuilt = {r["sequence"]: r for r in bbos if r["origin"] == "book"}
    matches: list[int] = []
    mismatches: list[tuple[Record, Record]] = []
    for ticker in (r for r in bbos if r["origin"] == "ticker"):
        book = rebuilt.get(ticker["sequence"])
        if book is None:
            continue
        if all(book[f] == ticker[f] for f in BBO_FIELDS):
            matches.append(ticker["sequence"])
        else:
            mismatches.append((book, ticker))
    return matches, mismatches


def read_recording(directory: Path) -> list[Record]:
    """Every line the recorder sink wrote under ``directory``."""
    lines: list[Record] = []
    for path in sorted(directory.rglob("*.ndjson.gz")):
        lines.extend(orjson.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines())
    return lines


def statuses(records: Outputs, symbol: str | None = None) -> list[Record]:
    return [s for s in records["status"] if symbol is None or s["symbol"] == symbol]


def of(records: list[Record], symbol: str) -> list[Record]:
    return [r for r in records if r["symbol"] == symbol]


def without_ingest_time(trades: list[Record]) -> list[Record]:
    return [{k: v for k, v in t.items() if k != "ts_ingest"} for t in trades]


def assert_bars_recomputed(bars: list[Record], trades: list[Record]) -> None:
    assert trades
    for label, length in INTERVALS.items():
        ref = reference(trades, length)
        mine = {b["start"]: b for b in bars if b["interval"] == label}
        assert set(mine) == set(ref), label
        for start, bar in mine.items():
            assert_matches(bar, ref[start], length)


def binance_feed(capture: Path, symbol: str, **sim: Any) -> Feed:
    return Feed(
        "binance",
        [symbol],
        SimulatorThread("binance", capture, limit=LIMIT, original_times=True, **sim),
    )


def every_trade(feeds: list[Feed]) -> Callable[[Outputs], bool]:
    return all_of(
        *(
            has_trades(feed.symbols[0], set(tape_trade_ids(feed.tape, feed.venue, feed.symbols[0])))
            for feed in feeds
        )
    )


# ---- Binance: one clean run shared by several checks ----


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """BTC and ETH spot at max pace, with a recorder sink on the raw frames."""
    out = tmp_path_factory.mktemp("clean")
    feeds = [
        binance_feed(BTC_SPOT, "BTC/USDT", faults=SYNC_STALL),
        binance_feed(ETH_SPOT, "ETH/USDT", faults=SYNC_STALL),
    ]
    recorder = {"type": "recorder", "path": str(out / "recording")}
    records = run_live(feeds, out, BINANCE_OPS, every_trade(feeds), extra_sinks=[recorder])
    return Run(out, records, feeds)


def test_clean_run_delivers_every_trade_once_in_order(clean: Run) -> None:
    for feed in clean.feeds:
        symbol = feed.symbols[0]
        ids = tape_trade_ids(feed.tape, "binance", symbol)
        assert len(ids) > 1000
        assert [t["trade_id"] for t in of(clean.records["trades"], symbol)] == ids
    assert not clean.records["dead_letter"]
    assert not clean.records["late"]
    events = Counter(s["event"] for s in statuses(clean.records))
    assert events["gap_detected"] == events["resync_requested"] == 0


def test_rebuilt_bbo_equals_the_venue_book_ticker(clean: Run) -> None:
    for symbol in ("BTC/USDT", "ETH/USDT"):
        matches, mismatches = bbo_vs_ticker(clean.records, symbol)
        assert not mismatches, mismatches[:3]
        assert len(matches) > 50, symbol


def test_bars_equal_a_recomputation_from_the_same_runs_trades(clean: Run) -> None:
    assert all(bar["final"] for bar in clean.records["bars"])
    for symbol in ("BTC/USDT", "ETH/USDT"):
        assert_bars_recomputed(
            of(clean.records["bars"], symbol), of(clean.records["trades"], symbol)
        )


def by_origin(records: Outputs, symbol: str, origin: str | None) -> list[Record]:
    """Book-channel records of ``symbol``: the venue's tickers, or (None) everything rebuilt."""
    return [
        r
        for r in of(records["book"], symbol)
        if (r.get("origin") == "ticker") == (origin is not None)
    ]


def test_recording_of_a_live_run_replays_to_the_same_output(clean: Run, tmp_path: Path) -> None:
    replayed = run_replay(clean.out / "recording", "binance", tmp_path, operators=BINANCE_OPS)
    live = clean.records
    for symbol in ("BTC/USDT", "ETH/USDT"):
        # Recorded frames keep their receive time, so even ts_ingest is equal.
        assert of(replayed["trades"], symbol) == of(live["trades"], symbol)
        # Rebuilt books and venue tickers leave by separate branches: each in order.
        for origin in ("ticker", None):
            assert by_origin(replayed, symbol, origin) == by_origin(live, symbol, origin)
    key = lambda b: (b["symbol"], b["interval"], b["start"])  # noqa: E731
    assert sorted(replayed["bars"], key=key) == sorted(live["bars"], key=key)
    assert not replayed["dead_letter"]


# ---- Binance: faults ----


def test_disconnects_and_duplicates_lose_and_repeat_nothing(clean: Run, tmp_path: Path) -> None:
    faults = Faults(disconnect_every_msgs=2000, duplicate_every=97)
    feed = binance_feed(BTC_SPOT, "BTC/USDT", faults=faults)
    recording = tmp_path / "recording"
    records = run_live(
        [feed],
        tmp_path,
        BINANCE_OPS,
        every_trade([feed]),
        extra_sinks=[{"type": "recorder", "path": str(recording)}],
    )
    stats = feed.sim.stats
    assert stats.disconnects >= 5 and stats.resumed >= 5 and stats.duplicated > 50
    # The repeats did reach the pipeline: more trade frames came in than trades went out.
    raw = read_recording(recording)
    trade_frames = sum(1 for line in raw if '"e":"trade"' in line["raw"])
    clean_btc = of(clean.records["trades"], "BTC/USDT")
    assert trade_frames > len(clean_btc)

    btc = of(records["trades"], "BTC/USDT")
    assert without_ingest_time(btc) == without_ingest_time(clean_btc)
    key = lambda b: (b["interval"], b["start"])  # noqa: E731
    assert sorted(records["bars"], key=key) == sorted(
        of(clean.records["bars"], "BTC/USDT"), key=key
    )
    assert not records["late"]

    events = Counter(s["event"] for s in statuses(records))
    dropped = [s for s in statuses(records) if "simulated disconnect" in s["detail"]]
    assert len(dropped) == stats.disconnects  # every injected disconnect was seen
    assert all(s["event"] == "disconnected" for s in dropped)
    assert events["reconnecting"] == stats.disconnects
    assert events["connected"] == stats.connections == stats.disconnects + 1


def test_binance_gap_is_detected_and_resynced_from_a_new_rest_snapshot(tmp_path: Path) -> None:
    pace = 20  # slow enough that the book is synced (REST snapshot at ~1 s) before the drop
    tape = load_tape(BTC_SPOT, "binance", 10_000)
    first = tape.entries[0].ts
    drop = next(e for e in tape.entries if e.depth_no and e.ts - first >= 2.5 * pace * SEC)
    reveal = next(e for e in tape.entries[drop.index + 1 :] if e.depth_no)
    end = next(e for e in tape.entries if e.ts - reveal.ts >= 0.5 * pace * SEC)
    tape = Tape(tape.venue, tape.entries[: end.index], tape.seeds)
    # Hold the stream right after the diff that reveals the gap: the resync happens
    # while the simulator waits, and the rest of the tape checks the resynced book.
    faults = Faults(
        drop_depth=frozenset({drop.depth_no}), stall_after=reveal.index + 5, stall_seconds=1.5
    )
    sim = SimulatorThread("binance", tape, pace=f"{pace}x", faults=faults, original_times=True)
    feed = Feed("binance", ["BTC/USDT"], sim)
    records = run_live([feed], tmp_path, BINANCE_OPS, every_trade([feed]))

    assert feed.sim.stats.dropped == 1
    events = [(s["event"], s["detail"]) for s in statuses(records, "BTC/USDT")]
    assert [e for e, _ in events] == ["gap_detected", "resync_requested", "resynced"]
    assert f"u={reveal.last_id}" in events[0][1]
    assert drop.last_id is not None and reveal.last_id is not None
    resynced_at = int(events[2][1].rsplit("=", 1)[1])
    assert resynced_at >= reveal.last_id  # a snapshot newer than the gap
    assert feed.sim.stats.rest_snapshots == 2  # the first sync and the resync

    matches, mismatches = bbo_vs_ticker(records, "BTC/USDT")
    assert not mismatches, mismatches[:3]
    assert sum(1 for seq in matches if seq < drop.last_id) > 10
    assert sum(1 for seq in matches if seq > resynced_at) > 10
    # Nothing was emitted from the broken book: no rebuilt state inside the gap.
    rebuilt = [r["sequence"] for r in records["book"] if r.get("origin") == "book"]
    assert not [seq for seq in rebuilt if drop.last_id <= seq < resynced_at]


# ---- OKX ----


def okx_symbols(tape: Tape) -> list[str]:
    return sorted({from_native("okx", e.book.split(":", 1)[1]) for e in tape.entries if e.book})


def okx_book_frames(tape: Tape) -> dict[str, list[Entry]]:
    """Book frames that change the book (a book record each), by unified symbol."""
    frames: dict[str, list[Entry]] = defaultdict(list)
    for entry in tape.entries:
        if entry.book is not None and (entry.bids or entry.asks):
            frames[from_native("okx", entry.book.split(":", 1)[1])].append(entry)
    return frames


def checksum_of(entry: Entry) -> int:
    value = orjson.loads(entry.text)["data"][0]["checksum"]
    assert isinstance(value, int) and value != 0
    return value


def book_checksum(record: Record) -> int:
    bids = [(price, size) for price, size in record["bids"]]
    asks = [(price, size) for price, size in record["asks"]]
    return okx_checksum(bids, asks)


def books_of(records: Outputs) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for record in records["book"]:
        if record["type"] == "book":
            out[record["symbol"]].append(record)
    return out


@pytest.mark.parametrize("seq_ids", [False, True], ids=["checksum", "seqId"])
def test_okx_every_book_state_passes_its_checksum(tmp_path: Path, seq_ids: bool) -> None:
    sim = SimulatorThread("okx", OKX_TBT, okx_seq_ids=seq_ids, original_times=True)
    frames = okx_book_frames(sim.simulator.tape)
    symbols = okx_symbols(sim.simulator.tape)
    assert len(symbols) == 10

    def all_books(records: Outputs) -> bool:
        counts = Counter(r["symbol"] for r in records.get("book", []) if r["type"] == "book")
        return all(counts[s] >= len(entries) for s, entries in frames.items())

    records = run_live([Feed("okx", symbols, sim)], tmp_path, OKX_OPS, all_books)

    events = Counter(s["event"] for s in statuses(records))
    assert events["checksum_mismatch"] == events["gap_detected"] == 0
    books = books_of(records)
    checked = 0
    for symbol in symbols:
        # One book per frame, in order: pair them and recompute each frame's checksum
        # from the emitted top 25 (the records do not carry the venue's checksum).
        assert len(books[symbol]) == len(frames[symbol]), symbol
        for record, entry in zip(books[symbol], frames[symbol], strict=True):
            assert record["ts_exchange"] == int(entry.ts_text) * 1000
            assert record["sequence"] == (entry.last_id if seq_ids else None)
            assert book_checksum(record) == checksum_of(entry)
            checked += 1
    assert checked == 3668  # 20 snapshots + every update carrying levels


@pytest.mark.parametrize("seq_ids", [False, True], ids=["checksum", "seqId"])
def test_okx_corrupted_checksum_resubscribes_and_resyncs(tmp_path: Path, seq_ids: bool) -> None:
    tape = load_tape(OKX_TBT, "okx")
    sent = [e for e in tape.entries if e.key.split(":", 1)[0] in ("books", "trades")]
    symbol, book = "UNI/USD:UNI", "books:UNI-USD-SWAP"  # a deep book (400 asks)
    updates = [i for i, e in enumerate(sent) if e.book == book and e.depth_no and e.bids + e.asks]
    at = updates[len(updates) // 2]
    victim = sent[at]
    # Hold the stream a few frames after the corrupted update: the resubscribe and
    # its snapshot happen meanwhile, and every later update must then apply cleanly.
    held = at + 6
    faults = Faults(
        corrupt_checksum=frozenset({victim.depth_no}), stall_after=held, stall_seconds=1.5
    )
    sim = SimulatorThread("okx", tape, okx_seq_ids=seq_ids, faults=faults, original_times=True)
    after = [e for e in sent[held:] if e.book == book and (e.bids or e.asks)]
    assert len(after) > 20
    symbols = okx_symbols(tape)

    def resynced_and_served(records: Outputs) -> bool:
        books = [r for r in records.get("book", []) if r["symbol"] == symbol]
        return len(books) > 0 and books[-1]["ts_exchange"] == int(after[-1].ts_text) * 1000

    records = run_live([Feed("okx", symbols, sim)], tmp_path, OKX_OPS, resynced_and_served)

    assert sim.stats.corrupted == 1
    events = statuses(records, symbol)
    assert [s["event"] for s in events] == ["checksum_mismatch", "resync_requested", "resynced"]
    assert f"checksum={checksum_of(victim) + 1}" in events[0]["detail"]
    assert sim.stats.okx_snapshots == 1  # the resubscribe got a fresh snapshot
    assert sim.stats.subscribe_requests == 3  # subscribe, then unsubscribe + subscribe
    assert not [s for s in statuses(records) if s["symbol"] not in (None, symbol)]

    books = books_of(records)[symbol]
    # Before the corruption: one book per frame, each passing that frame's checksum.
    before = [e for e in sent[:at] if e.book == book and (e.bids or e.asks)]
    # Then the resubscribe snapshot (books as of the held position), then every update.
    assert len(books) == len(before) + 1 + len(after)
    resync = books[len(before)]
    for record, entry in zip(
        books[: len(before)] + books[-len(after) :], before + after, strict=True
    ):
        assert record["ts_exchange"] == int(entry.ts_text) * 1000
        assert record["sequence"] == (entry.last_id if seq_ids else None)
        assert book_checksum(record) == checksum_of(entry)
    last_held = [e for e in sent[:held] if e.book == book][-1]
    assert resync["ts_exchange"] == int(last_held.ts_text) * 1000
    assert resync["sequence"] == (last_held.last_id if seq_ids else None)
    assert book_checksum(resync) == checksum_of(last_held)


# ---- Ctrl-C ----


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_ctrl_c_stops_cleanly_and_flushes_the_open_bars(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with SimulatorThread(
        "binance", BTC_SPOT, pace="recorded", limit=LIMIT, original_times=True
    ) as sim:
        pipeline = {
            "sources": [
                {
                    "venue": "binance",
                    "symbols": ["BTC/USDT"],
                    "url": sim.ws_url,
                    "rest_url": sim.rest_url,
                }
            ],
            "operators": {"book": {"depth": 5}, "ohlcv": OHLCV},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        }
        config = tmp_path / "live.yaml"
        config.write_text(yaml.safe_dump(pipeline))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX__")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "candlewax.cli", "run", str(config)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while lines(out / "trades.jsonl") < 30 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    text = stderr.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text

    raw = (out / "trades.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    trades = [orjson.loads(line) for line in raw.splitlines()]  # every line complete JSON
    assert len(trades) >= 30
    bars = read_jsonl(out / "bars.jsonl")
    # The end-of-stream flush closed the windows still open at Ctrl-C, so the
    # bars account for every trade written.
    assert all(bar["final"] for bar in bars)
    assert_bars_recomputed(bars, trades)
    last = sorted(trades, key=lambda t: t["ts_exchange"])[-1]  # stable: ties keep arrival order
    assert any(b["interval"] == "1m" and b["last_trade_id"] == last["trade_id"] for b in bars)
