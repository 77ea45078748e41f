"""Hyperliquid: parser, symbols, protocol and replay of the real capture (issue 9).

The capture (fixtures/captures/hyperliquid/, 2025-01-26, coin BTC) holds 46 l2Book
messages, each a full 20-level snapshot, and 9 trades messages carrying 64 trades.
Expected values are read from the capture with ``json`` here, independently of the parser.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from bar_reference import assert_matches, reference
from capture_lines import CAPTURES

from candlewax.symbols import SymbolError, SymbolMap, from_native, to_native
from operators.events import DepthMsg
from sources.capture_venue import venue_mismatch
from sources.frames import RawFrame
from sources.hyperliquid import PROTOCOL, HyperliquidParser
from sources.registry import make_parser
from sources.venue import FrameError

CAPTURE = CAPTURES / "hyperliquid" / "hftbacktest_btc_l2Book_trades_20250126.txt.gz"
BTC = "BTC/USDC:USDC"


def capture_messages(path: Path = CAPTURE) -> list[tuple[int, str, dict[str, Any]]]:
    """(receive ns, raw text, decoded) per line, with the json module."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            ts, _, text = line.rstrip("\n").partition(" ")
            out.append((int(ts), text, json.loads(text)))
    return out


def capture_trades() -> list[dict[str, Any]]:
    return [t for _, _, m in capture_messages() if m["channel"] == "trades" for t in m["data"]]


def frame(text: str, ts_us: int = 1) -> RawFrame:
    return RawFrame("hyperliquid", "c1", ts_us, text)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def replay(capture: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    from candlewax.cli import main

    args = ["replay", str(capture), "--venue", "hyperliquid", "--out", str(out)]
    assert main([*args, "--intervals", "1s,1m"]) == 0
    names = ("trades", "bars", "book", "status", "dead_letter")
    return {name: read_jsonl(out / f"{name}.jsonl") for name in names}


# ---- symbols ----


def test_symbols_are_usdc_perpetuals_and_keep_the_coin_case() -> None:
    assert from_native("hyperliquid", "BTC") == BTC
    assert to_native("hyperliquid", BTC) == "BTC"
    assert from_native("hyperliquid", "kPEPE") == "kPEPE/USDC:USDC"
    assert to_native("hyperliquid", "kPEPE/USDC:USDC") == "kPEPE"
    assert SymbolMap("hyperliquid", ["kPEPE/USDC:USDC"]).unified("kPEPE") == "kPEPE/USDC:USDC"
    for wrong in ("BTC/USD:USDC", "BTC/USDC", "BTC/USDT:USDT"):
        with pytest.raises(SymbolError, match="write BTC/USDC:USDC"):
            to_native("hyperliquid", wrong)


# ---- the capture through the parser ----


def test_every_trade_once_with_its_exact_text_symbol_and_aggressor_side() -> None:
    parser = make_parser("hyperliquid")
    got = [
        item
        for _, text, m in capture_messages()
        if m["channel"] == "trades"
        for item in parser.parse(frame(text))
    ]
    want = capture_trades()
    assert len(got) == len(want) == 64
    assert len({t["trade_id"] for t in got}) == 64
    for record, raw in zip(got, want, strict=True):
        assert record["symbol"] == BTC
        assert (record["trade_id"], record["price"], record["size"]) == (
            str(raw["tid"]),
            raw["px"],
            raw["sz"],
        )
        assert record["side"] == {"B": "buy", "A": "sell"}[raw["side"]]
        assert record["ts_exchange"] == raw["time"] * 1000


def test_side_is_the_aggressor_side_in_the_capture() -> None:
    """B trades print at or above the best ask of the book before them, A trades at or
    below the best bid: B is a taker buy, A a taker sell."""
    books = [
        (m["data"]["time"], m["data"]["levels"])
        for _, _, m in capture_messages()
        if m["channel"] == "l2Book"
    ]
    checked = 0
    for trade in capture_trades():
        before = [levels for t, levels in books if t <= trade["time"]]
        if not before:
            continue  # the replayed past trades precede the first book
        bid, ask = float(before[-1][0][0]["px"]), float(before[-1][1][0]["px"])
        px = float(trade["px"])
        assert px >= ask if trade["side"] == "B" else px <= bid, trade
        checked += 1
    assert checked == 34


def test_every_book_message_is_a_full_snapshot() -> None:
    parser = make_parser("hyperliquid")
    books = [
        (m, parser.parse(frame(text)))
        for _, text, m in capture_messages()
        if m["channel"] == "l2Book"
    ]
    assert len(books) == 46
    for raw, (msg,) in books:
        assert isinstance(msg, DepthMsg)
        assert msg.kind == "snapshot" and msg.symbol == BTC
        assert (msg.first_id, msg.last_id, msg.prev_id, msg.checksum) == (None,) * 4
        bids, asks = raw["data"]["levels"]
        assert msg.bids == [(lvl["px"], lvl["sz"]) for lvl in bids]
        assert msg.asks == [(lvl["px"], lvl["sz"]) for lvl in asks]
        assert msg.ts_exchange == raw["data"]["time"] * 1000


def test_control_frames_carry_nothing_and_errors_become_status() -> None:
    parser = HyperliquidParser(SymbolMap("hyperliquid"))
    ack = (
        '{"channel":"subscriptionResponse","data":{"method":"subscribe",'
        '"subscription":{"type":"trades","coin":"BTC"}}}'
    )
    assert parser.parse(frame(ack)) == []
    assert parser.parse(frame('{"channel":"pong"}')) == []
    (status,) = parser.parse(frame('{"channel":"error","data":"Invalid subscription"}'))
    assert status["event"] == "error" and "Invalid subscription" in status["detail"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[]]}}', "levels must be"),
        (
            '{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[{"px":"-1","sz":"1","n":1}],[]]}}',
            "l2Book bids[0] price",
        ),
        (
            '{"channel":"trades","data":[{"coin":"BTC","side":"X","px":"1","sz":"1","time":1,"tid":1}]}',
            "side must be B or A",
        ),
        (
            '{"channel":"trades","data":[{"coin":"BTC","side":"B","px":"1","sz":"1","time":1,"tid":"7"}]}',
            "tid must be an integer",
        ),
        ('{"channel":"trades","data":{}}', "data must be a list"),
        ('{"channel":"nope","data":{}}', "unknown channel"),
        ("[1]", "not a JSON object"),
    ],
)
def test_malformed_frames_name_their_fault(text: str, reason: str) -> None:
    with pytest.raises(FrameError, match=re.escape(reason)):
        make_parser("hyperliquid").parse(frame(text))


def test_bbo_channel() -> None:
    """The documented ``bbo`` push (no capture holds one): a null side is empty."""
    parser = make_parser("hyperliquid")
    text = (
        '{"channel":"bbo","data":{"coin":"BTC","time":1737918843542,"bbo":'
        '[{"px":"105055.0","sz":"3.03622","n":5},{"px":"105056.0","sz":"6.34472","n":13}]}}'
    )
    (bbo,) = parser.parse(frame(text))
    assert (bbo["bid_price"], bbo["bid_size"], bbo["ask_price"], bbo["ask_size"]) == (
        "105055.0",
        "3.03622",
        "105056.0",
        "6.34472",
    )
    assert (bbo["symbol"], bbo["origin"], bbo["ts_exchange"]) == (BTC, "ticker", 1737918843542000)
    typed = parser.typed(frame(text))  # type: ignore[attr-defined]
    assert typed == [(f"hyperliquid:{BTC}", bbo)]
    (empty,) = parser.parse(frame(text.replace('{"px":"105055.0","sz":"3.03622","n":5}', "null")))
    assert empty["bid_price"] is None and empty["ask_price"] == "105056.0"


# ---- protocol ----


def test_protocol_subscribes_one_frame_per_coin_and_channel() -> None:
    frames = PROTOCOL.subscribe_messages(["BTC", "kPEPE"], ["trades", "book", "bbo"])
    assert [orjson.loads(f) for f in frames][:3] == [
        {"method": "subscribe", "subscription": {"type": t, "coin": "BTC"}}
        for t in ("trades", "l2Book", "bbo")
    ]
    assert len(frames) == 6
    assert PROTOCOL.app_ping_text == '{"method":"ping"}'
    assert PROTOCOL.app_ping_interval is not None and PROTOCOL.app_ping_interval < 60
    assert PROTOCOL.is_control('{"channel":"pong"}')
    assert not PROTOCOL.is_control(capture_messages()[0][1])
    with pytest.raises(ValueError, match="exceed the venue's 1000"):
        PROTOCOL.subscribe_messages([f"C{n}" for n in range(501)], ["trades", "book"])
    with pytest.raises(ValueError, match="unknown channels"):
        PROTOCOL.subscribe_messages(["BTC"], ["candles"])
    unsub, sub = (orjson.loads(f) for f in PROTOCOL.resync_messages("BTC"))
    assert unsub["method"] == "unsubscribe" and sub["method"] == "subscribe"
    assert sub["subscription"] == {"type": "l2Book", "coin": "BTC"}


# ---- replay ----


def test_replay_of_the_capture(tmp_path: Path) -> None:
    out = replay(CAPTURE, tmp_path)
    trades = out["trades"]
    assert sorted(t["trade_id"] for t in trades) == sorted(str(t["tid"]) for t in capture_trades())
    assert all(t["symbol"] == BTC for t in trades)
    assert out["status"] == [] and out["dead_letter"] == []  # nothing to detect on a clean run
    # The last book written is the last snapshot's top 20.
    last = [m for _, _, m in capture_messages() if m["channel"] == "l2Book"][-1]["data"]["levels"]
    book = [r for r in out["book"] if r["type"] == "book"][-1]
    assert book["bids"] == [[lvl["px"], lvl["sz"]] for lvl in last[0]]
    assert book["asks"] == [[lvl["px"], lvl["sz"]] for lvl in last[1]]
    assert all(r["sequence"] is None for r in out["book"] if r["type"] == "bbo")
    for label, length in (("1s", 1_000_000), ("1m", 60_000_000)):
        bars = [b for b in out["bars"] if b["interval"] == label]
        ref = reference(trades, length)
        assert sorted(b["start"] for b in bars) == sorted(ref)
        for bar in bars:
            assert_matches(bar, ref[bar["start"]], length)


def _copy_without(
    tmp_path: Path, drop: int | None = None, edit: tuple[int, str, str] | None = None
) -> Path:
    with gzip.open(CAPTURE, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if edit is not None:
        n, old, new = edit
        assert old in lines[n]
        lines[n] = lines[n].replace(old, new, 1)
    if drop is not None:
        del lines[drop]
    path = tmp_path / CAPTURE.name
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_a_dropped_book_message_cannot_be_detected_and_the_next_snapshot_heals(
    tmp_path: Path,
) -> None:
    """No sequence numbers: a lost l2Book push is invisible (no gap event), and harmless,
    since the next push is a whole book: the final book equals the clean run's."""
    clean = replay(CAPTURE, tmp_path / "clean")
    books = [n for n, (_, _, m) in enumerate(capture_messages()) if m["channel"] == "l2Book"]
    dropped = replay(_copy_without(tmp_path, drop=books[10]), tmp_path / "dropped")
    assert dropped["status"] == []
    assert [r for r in dropped["book"] if r["type"] == "book"][-1] == [
        r for r in clean["book"] if r["type"] == "book"
    ][-1]
    assert dropped["trades"] == clean["trades"]


def test_an_altered_book_message_is_a_dead_letter_for_its_symbol(tmp_path: Path) -> None:
    first_book = 0
    path = _copy_without(tmp_path, edit=(first_book, '"px":"105055.0"', '"px":"105O55.0"'))
    out = replay(path, tmp_path / "out")
    (letter,) = out["dead_letter"]
    assert "l2Book bids[0] price" in letter["reason"] and "105O55.0" in letter["raw"]
    assert len(out["trades"]) == 64


# ---- which venue a capture is from ----


def test_a_capture_of_another_venue_is_told_apart() -> None:
    okx = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
    binance = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
    assert venue_mismatch(CAPTURE, "hyperliquid") is None
    found = venue_mismatch(CAPTURE, "okx")
    assert found is not None and found.recorded == "hyperliquid"
    for other in (okx, binance):
        found = venue_mismatch(other, "hyperliquid")
        assert found is not None and found.recorded != "hyperliquid"
