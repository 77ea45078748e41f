"""Coinbase Advanced Trade: the bundled real capture replayed end to end, checked against
independent recomputations from the raw frames (trades, final books, bars), and the
connection-wide ``sequence_num`` gap rule on altered copies of the capture."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from bar_reference import assert_matches, reference
from capture_lines import CAPTURES, capture_frames

from candlewax.cli import main
from candlewax.symbols import to_native
from operators.book import BookKeeper
from operators.events import DepthMsg
from sources.coinbase import PROTOCOL
from sources.registry import make_parser

CAPTURE = CAPTURES / "coinbase" / "cryptofeed_advanced_trade_2026-08-09.jsonl.gz"
UNIFIED = {"BTC-USD": "BTC/USD", "ETH-USD": "ETH/USD"}
DEPTH = 20


@cache
def lines() -> list[str]:
    with gzip.open(CAPTURE, "rt") as f:
        return f.read().splitlines()


def messages() -> list[dict[str, Any]]:
    return [json.loads(json.loads(line)["data"]) for line in lines() if '"t":"recv"' in line]


def expected_trades() -> list[tuple[str, str, str, str, str]]:
    """(symbol, trade_id, price, size, aggressor side) straight from the raw frames."""
    out = []
    for msg in messages():
        if msg["channel"] == "market_trades":
            for event in msg["events"]:
                for t in event["trades"]:
                    side = {"BUY": "sell", "SELL": "buy"}[t["side"]]  # maker side on the wire
                    out.append(
                        (UNIFIED[t["product_id"]], t["trade_id"], t["price"], t["size"], side)
                    )
    return out


def expected_books() -> dict[str, tuple[list[list[str]], list[list[str]]]]:
    """Final top-20 per symbol, rebuilt with plain dicts of Decimal from the raw frames."""
    books: dict[str, tuple[dict[Decimal, str], dict[Decimal, str]]] = {}
    for msg in messages():
        if msg["channel"] != "l2_data":
            continue
        for event in msg["events"]:
            if event["type"] == "snapshot":
                books[event["product_id"]] = ({}, {})
            bids, asks = books[event["product_id"]]
            for u in event["updates"]:
                side = bids if u["side"] == "bid" else asks
                if Decimal(u["new_quantity"]) == 0:
                    side.pop(Decimal(u["price_level"]), None)
                else:
                    side[Decimal(u["price_level"])] = u["new_quantity"]
    result = {}
    for native, (bids, asks) in books.items():
        top_bids = [[str(p), bids[p]] for p in sorted(bids, reverse=True)[:DEPTH]]
        top_asks = [[str(p), asks[p]] for p in sorted(asks)[:DEPTH]]
        result[UNIFIED[native]] = (top_bids, top_asks)
    return result


def replay(capture: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    code = main(
        ["replay", str(capture), "--venue", "coinbase", "--out", str(out), "--intervals", "1s,1m"]
    )
    assert code == 0
    return {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("trades", "bars", "book", "status", "late", "dead_letter")
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return replay(CAPTURE, tmp_path_factory.mktemp("clean"))


def test_every_trade_comes_out_once_with_its_exact_text(clean: dict[str, Any]) -> None:
    got = [(t["symbol"], t["trade_id"], t["price"], t["size"], t["side"]) for t in clean["trades"]]
    want = expected_trades()
    assert len(want) == 279 and len({t[:2] for t in want}) == 279
    assert sorted(got) == sorted(want)
    assert clean["dead_letter"] == [] and clean["late"] == []


def test_clean_capture_has_no_gap_and_the_books_equal_a_recomputation(
    clean: dict[str, Any],
) -> None:
    assert clean["status"] == []  # sequence_num 0..1029 is contiguous
    last: dict[str, Any] = {}
    for record in clean["book"]:
        if record["type"] == "book":
            last[record["symbol"]] = record
    want = expected_books()
    assert set(last) == set(want) == {"BTC/USD", "ETH/USD"}
    for symbol, (bids, asks) in want.items():
        # The book keeps the venue's price text; compare prices as numbers.
        got_bids = [[str(Decimal(p)), s] for p, s in last[symbol]["bids"]]
        got_asks = [[str(Decimal(p)), s] for p, s in last[symbol]["asks"]]
        assert (got_bids, got_asks) == (bids, asks), symbol


@pytest.mark.parametrize("interval_us", [1_000_000, 60_000_000])
def test_bars_equal_an_independent_recomputation(clean: dict[str, Any], interval_us: int) -> None:
    name = {1_000_000: "1s", 60_000_000: "1m"}[interval_us]
    for symbol in UNIFIED.values():
        trades = [t for t in clean["trades"] if t["symbol"] == symbol]
        ref = reference(trades, interval_us)
        bars = [
            b
            for b in clean["bars"]
            if b["symbol"] == symbol and b["interval"] == name and not b["filled"]
        ]
        assert [b["start"] for b in bars] == sorted(ref)
        for bar in bars:
            assert_matches(bar, ref[bar["start"]], interval_us)


def _copy(tmp_path: Path, keep: Any) -> Path:
    """A copy of the capture keeping the lines ``keep(index, line)`` accepts."""
    path = tmp_path / "altered.jsonl.gz"
    kept = [line for n, line in enumerate(lines()) if keep(n, line)]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(kept) + "\n")
    return path


def _seq(line: str) -> int | None:
    if '"t":"recv"' not in line:
        return None
    seq: int = json.loads(json.loads(line)["data"])["sequence_num"]
    return seq


def test_a_dropped_frame_is_a_gap_for_every_book_of_the_connection(tmp_path: Path) -> None:
    # Drop a ticker frame (not even a book frame) once both books are synced: sequence_num
    # skips, so neither book can be trusted any more.
    dropped = next(
        n
        for n, line in enumerate(lines())
        if (_seq(line) or 0) > 100 and '\\"channel\\":\\"ticker\\"' in line
    )
    out = replay(_copy(tmp_path, lambda n, _: n != dropped), tmp_path / "out")
    gaps = [s for s in out["status"] if s["event"] == "gap_detected"]
    assert sorted(s["symbol"] for s in gaps) == ["BTC/USD", "ETH/USD"]
    lost = _seq(lines()[dropped])
    assert all(f"sequence_num {lost}..{lost} lost" in s["detail"] for s in gaps)
    # A replay cannot resubscribe: the books stay empty, no book is emitted after the gap.
    assert out["book"] and out["trades"]


def test_a_gap_before_a_product_has_a_book_leaves_it_alone(tmp_path: Path) -> None:
    # Frames 0..12 carry no l2_data yet: a lost one touches no book.
    dropped = next(n for n, line in enumerate(lines()) if _seq(line) == 9)
    out = replay(_copy(tmp_path, lambda n, _: n != dropped), tmp_path / "out")
    assert out["status"] == []


def test_a_duplicated_book_frame_is_ignored(tmp_path: Path, clean: dict[str, Any]) -> None:
    twice = next(
        n for n, line in enumerate(lines()) if (_seq(line) or 0) > 50 and "l2_data" in line
    )
    path = tmp_path / "dup.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines()[: twice + 1] + lines()[twice:]) + "\n")
    out = replay(path, tmp_path / "out")
    assert out["status"] == []
    final = {b["symbol"]: b for b in out["book"] if b["type"] == "book"}
    want = {b["symbol"]: b for b in clean["book"] if b["type"] == "book"}
    assert {s: (b["bids"], b["asks"]) for s, b in final.items()} == {
        s: (b["bids"], b["asks"]) for s, b in want.items()
    }


def test_parser_marks_the_gap_for_each_book_seen_on_that_connection_only() -> None:
    parser = make_parser("coinbase", None)
    frames = list(capture_frames(CAPTURE, "coinbase"))
    for frame in frames[:200]:
        parser.parse(frame)
    later = frames[201]
    markers = [i for i in parser.parse(later) if isinstance(i, DepthMsg) and i.first_id]
    assert sorted(m.symbol for m in markers) == ["BTC/USD", "ETH/USD"]
    assert all(m.first_id == 201 - 1 and m.last_id == 201 for m in markers)
    # The same frame on another connection starts that connection's count: no gap.
    other = make_parser("coinbase", None)
    items = other.parse(later._replace(conn_id="another"))
    assert all(not isinstance(i, DepthMsg) or i.first_id in (None, i.last_id) for i in items)


def test_a_book_update_without_a_snapshot_on_its_connection_is_a_gap() -> None:
    """After a reconnect, an update arriving before the new connection's snapshot (or
    with that snapshot lost) must not extend a book synced on the old connection."""
    frames = list(capture_frames(CAPTURE, "coinbase"))
    parser = make_parser("coinbase", None)
    keeper = BookKeeper("coinbase", "BTC/USD", depth=DEPTH)
    events: list[str] = []

    def feed(frame: Any) -> None:
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg) and item.symbol == "BTC/USD":
                events.extend(r["event"] for r in keeper.on_msg(item) if r["type"] == "status")

    update = next(
        n for n, f in enumerate(frames) if n > 100 and '"update","product_id":"BTC' in f.text
    )
    for frame in frames[:update]:
        feed(frame)
    assert keeper.synced and events == []
    feed(frames[update]._replace(conn_id="reconnected"))
    assert not keeper.synced
    assert events == ["gap_detected", "resync_requested"]


def test_venue_mismatch_names_coinbase() -> None:
    from sources.capture_venue import venue_mismatch

    assert venue_mismatch(CAPTURE, "coinbase") is None
    found = venue_mismatch(CAPTURE, "okx")
    assert found is not None and found.recorded == "coinbase"
    okx = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
    found = venue_mismatch(okx, "coinbase")
    assert found is not None and found.recorded == "okx"


def test_protocol_subscribes_one_channel_per_frame_with_heartbeats() -> None:
    frames = [json.loads(f) for f in PROTOCOL.subscribe_messages(["BTC-USD"], ["trades", "book"])]
    assert [f["channel"] for f in frames] == ["market_trades", "level2", "heartbeats"]
    assert all(f["type"] == "subscribe" and f["product_ids"] == ["BTC-USD"] for f in frames)
    resync = [json.loads(f) for f in PROTOCOL.resync_messages("ETH-USD")]
    assert [(f["type"], f["channel"], f["product_ids"]) for f in resync] == [
        ("unsubscribe", "level2", ["ETH-USD"]),
        ("subscribe", "level2", ["ETH-USD"]),
    ]


@pytest.mark.parametrize(
    ("symbol", "fix"),
    [("BTC/USD:USD", "write BTC/USD"), ("BTC/USDC", "write BTC/USD")],
)
def test_symbols_coinbase_does_not_serve_are_one_line_errors(
    tmp_path: Path, symbol: str, fix: str
) -> None:
    import subprocess
    import sys

    config = tmp_path / "p.yaml"
    config.write_text(
        f"name: p\nsources:\n  - venue: coinbase\n    symbols: ['{symbol}']\n"
        f"sinks:\n  - {{type: jsonl, path: {tmp_path / 'out'}}}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "candlewax.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert fix in run.stderr + run.stdout and "Traceback" not in run.stderr
    assert len((run.stderr + run.stdout).strip().splitlines()) == 1
    assert to_native("coinbase", "BTC/USD") == "BTC-USD"
