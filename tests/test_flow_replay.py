"""The whole dataflow over real captures, in replay mode."""

from __future__ import annotations

import gzip
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from bar_reference import assert_matches, reference
from flow_helpers import BTC_SPOT, ETH_SPOT, OKX_TBT, outputs, run_replay

from candlewax.schema import validate_record
from sinks.parquet import read_bars

SEC = 1_000_000
LENGTH = {"1s": SEC, "1m": 60 * SEC}


@pytest.fixture(scope="module")
def btc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return run_replay(BTC_SPOT, "binance", tmp_path_factory.mktemp("btc"))


def test_every_record_matches_the_contract(btc: dict[str, list[dict]]) -> None:
    for records in btc.values():
        for record in records:
            validate_record(record)
    assert not btc["dead_letter"]
    assert not btc["late"]


def test_trades_complete_unique_and_exact(btc: dict[str, list[dict]]) -> None:
    trades = btc["trades"]
    assert len(trades) == 9757  # every trade frame of the capture (SOURCE.md)
    assert len({t["trade_id"] for t in trades}) == len(trades)
    # Exact text as sent by Binance, eight decimals, no float artifacts.
    assert all(len(t["price"].split(".")[1]) == 8 for t in trades)
    assert trades[0]["price"] == "61837.63000000"


def test_bars_equal_independent_recomputation(btc: dict[str, list[dict]]) -> None:
    bars = btc["bars"]
    assert all(b["final"] for b in bars)
    for label, length in LENGTH.items():
        ref = reference(btc["trades"], length)
        mine = {b["start"]: b for b in bars if b["interval"] == label}
        assert set(mine) == set(ref)
        for start, bar in mine.items():
            assert_matches(bar, ref[start], length)


def test_book_snapshots_are_ordered_and_crossed_never(btc: dict[str, list[dict]]) -> None:
    books = [r for r in btc["book"] if r["type"] == "book"]
    assert len(books) > 300  # one per second of a 346 s capture
    for book in books:
        bids = [Decimal(p) for p, _ in book["bids"]]
        asks = [Decimal(p) for p, _ in book["asks"]]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < asks[0]
        assert len(bids) == len(asks) == 20


def test_malformed_lines_and_frames_go_to_dead_letter(tmp_path: Path) -> None:
    lines = gzip.decompress(BTC_SPOT.read_bytes()).splitlines()[:400]
    bad_frame = b'1723161254300000000 {"stream":"btcusdt@trade","data":{"e":"trade","p":"1"'
    bad_event = (
        b'1723161254300000001 {"stream":"btcusdt@trade","data":{"e":"trade",'
        b'"s":"BTCUSDT","t":"x","p":"abc","q":null,"T":1,"m":true}}'
    )
    not_a_line = b"garbage without a timestamp"
    lines[50:50] = [bad_frame, bad_event, not_a_line]
    capture = tmp_path / "broken.txt.gz"
    capture.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    out = run_replay(capture, "binance", tmp_path / "out")
    dead = out["dead_letter"]
    raws = {d["raw"] for d in dead}
    assert bad_frame.split(b" ", 1)[1].decode() in raws
    assert not_a_line.decode() in raws
    assert len(dead) == 3
    assert all(d["reason"] for d in dead)
    # The flow went on: every good trade of the slice is there.
    good_trades = sum(1 for line in lines if b'"e":"trade"' in line) - 2
    assert len(out["trades"]) == good_trades


def test_okx_books_pass_checksums_through_the_flow(tmp_path: Path) -> None:
    out = run_replay(
        OKX_TBT,
        "okx",
        tmp_path,
        operators={"book": {"depth": 25, "emit_interval_ms": 0}, "ohlcv": {"intervals": ["1m"]}},
    )
    events = Counter(s["event"] for s in out["status"])
    assert events["checksum_mismatch"] == 0
    assert events["gap_detected"] == 0
    books = [r for r in out["book"] if r["type"] == "book"]
    assert len({b["symbol"] for b in books}) == 10  # every instrument of the capture


def test_two_workers_give_the_same_output(tmp_path: Path, btc: dict[str, list[dict]]) -> None:
    two = run_replay(BTC_SPOT, "binance", tmp_path, workers=2)
    assert sorted(t["trade_id"] for t in two["trades"]) == sorted(
        t["trade_id"] for t in btc["trades"]
    )
    key = lambda b: (b["interval"], b["start"])  # noqa: E731
    assert sorted(two["bars"], key=key) == sorted(btc["bars"], key=key)


def test_parquet_bars_equal_jsonl_bars(tmp_path: Path) -> None:
    from candlewax.config import parse_config
    from flows.runner import run_pipeline

    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)}],
            "operators": {"ohlcv": {"intervals": ["1s"]}, "book": {"enabled": False}},
            "sinks": [
                {"type": "jsonl", "path": str(tmp_path / "j")},
                {"type": "parquet", "path": str(tmp_path / "p"), "flush_every": 100},
            ],
        }
    )
    run_pipeline(cfg)
    jsonl = outputs(tmp_path / "j")["bars"]
    frame = read_bars(tmp_path / "p").sort("start")
    assert frame.height == len(jsonl)
    rows = frame.to_dicts()
    for row, bar in zip(rows, sorted(jsonl, key=lambda b: b["start"]), strict=True):
        for field in ("open", "high", "low", "close", "volume", "vwap", "trades", "start"):
            assert str(row[field]) == str(bar[field]), field


def test_two_one_symbol_captures_of_one_venue_both_sync(tmp_path: Path) -> None:
    from candlewax.config import parse_config
    from flows.runner import run_pipeline

    cfg = parse_config(
        {
            "sources": [
                {"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)},
                {"venue": "binance", "mode": "replay", "capture": str(ETH_SPOT)},
            ],
            "operators": {"ohlcv": {"intervals": ["1m"]}},
            "sinks": [{"type": "jsonl", "path": str(tmp_path)}],
        }
    )
    run_pipeline(cfg)
    out = outputs(tmp_path)
    assert out["dead_letter"] == []
    books = Counter(r["symbol"] for r in out["book"] if r["type"] == "book")
    assert set(books) == {"BTC/USDT", "ETH/USDT"}
    trades = Counter(t["symbol"] for t in out["trades"])
    assert trades == {"BTC/USDT": 9757, "ETH/USDT": 6106}
