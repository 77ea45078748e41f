"""Bybit v5 (spot + linear) parser, book rule and replay against the bundled real captures.

The expectations are recomputed here from the capture lines with the stdlib ``json``
(the market of each frame from its connect record's URL), independently of the
production reader and parser.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from capture_lines import CAPTURES

from candlewax.schema import validate_record
from operators.book import BookKeeper
from operators.events import DepthMsg
from sources.bybit import LINEAR, SPOT, market_of
from sources.capture_venue import venue_mismatch
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import iter_capture
from sources.venue import FrameError, Item

MIXED = CAPTURES / "bybit" / "cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz"
HISTORY = CAPTURES / "bybit" / "nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl.gz"


def unified(native: str, market: str) -> str:
    base = native.removesuffix("USDT")
    return f"{base}/USDT:USDT" if market == LINEAR else f"{base}/USDT"


@cache
def reference_pushes(path: Path) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(market, decoded push) of every received Bybit push, in file order per connection."""
    out = []
    urls: dict[str, str] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            rec = json.loads(line)
            if "t" not in rec:  # a raw history line: linear
                out.append((LINEAR, rec))
                continue
            if rec["t"] == "connect":
                urls[rec["conn"]] = rec["addr"]
            elif rec["t"] == "recv":
                market = urls[rec["conn"]].rsplit("/", 1)[1]
                push = json.loads(rec["data"])
                if "topic" in push:
                    out.append((market, push))
    return tuple(out)


@cache
def frames(path: Path) -> tuple[RawFrame, ...]:
    return tuple(f for f in iter_capture(path, "bybit") if isinstance(f, RawFrame))


def parsed(path: Path) -> list[Item]:
    parser = make_parser("bybit")
    return [item for frame in frames(path) for item in parser.parse(frame)]


def trade_key(t: dict[str, Any]) -> tuple[Any, ...]:
    return (t["symbol"], t["trade_id"], t["price"], t["size"], t["side"], t["ts_exchange"])


def test_every_trade_comes_out_once_with_its_exact_text_and_market_symbol() -> None:
    want = Counter(
        (unified(t["s"], market), t["i"], t["p"], t["v"], t["S"].lower(), t["T"] * 1000)
        for market, push in reference_pushes(MIXED)
        if push["topic"].startswith("publicTrade.")
        for t in push["data"]
    )
    got = [i for i in parsed(MIXED) if isinstance(i, dict) and i["type"] == "trade"]
    for record in got:
        validate_record(record)
    assert Counter(trade_key(t) for t in got) == want
    assert len(got) == sum(want.values()) == 347
    # Both markets of the same native name come out apart.
    symbols = {t["symbol"] for t in got}
    assert {"BTC/USDT", "BTC/USDT:USDT", "ETH/USDT", "ETH/USDT:USDT"} <= symbols


def test_every_frame_of_both_captures_parses() -> None:
    for path in (MIXED, HISTORY):
        parser = make_parser("bybit")
        for frame in frames(path):
            parser.parse(frame)  # raises FrameError on anything malformed


def test_market_comes_from_the_connection_url() -> None:
    conns = {f.conn_id for f in frames(MIXED)}
    assert {market_of(c) for c in conns} == {SPOT, LINEAR}
    assert all("wss://stream.bybit.com/v5/public/" in c for c in conns)
    assert market_of("BYBIT.ws.3 wss://stream.bybit.com/v5/public/spot") == SPOT
    assert market_of("bybit-0-1") == LINEAR
    assert market_of("bybit-0-1", default=SPOT) == SPOT
    # A parser configured with spot symbols only reads unmarked connections as spot.
    assert make_parser("bybit", ["BTC/USDT"]).market("bybit-0-1") == SPOT


def reference_books(path: Path) -> dict[str, tuple[dict[str, str], dict[str, str], int]]:
    """Final full book (bids, asks, last u) per unified symbol, rebuilt naively; asserts
    every delta's u is the previous u + 1."""
    books: dict[str, tuple[dict[str, str], dict[str, str], int]] = {}
    for market, push in reference_pushes(path):
        if not push["topic"].startswith("orderbook."):
            continue
        data = push["data"]
        symbol = unified(data["s"], market)
        if push["type"] == "snapshot":
            books[symbol] = ({p: s for p, s in data["b"]}, {p: s for p, s in data["a"]}, data["u"])
            continue
        bids, asks, last = books[symbol]
        assert data["u"] == last + 1, (symbol, data["u"], last)
        for side, levels in ((bids, data["b"]), (asks, data["a"])):
            for price, size in levels:
                if size == "0":
                    side.pop(price, None)
                else:
                    side[price] = size
        books[symbol] = (bids, asks, data["u"])
    return books


def keepers(items: list[Item]) -> tuple[dict[str, BookKeeper], list[dict[str, Any]]]:
    kept: dict[str, BookKeeper] = {}
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, DepthMsg):
            keeper = kept.get(item.symbol)
            if keeper is None:
                keeper = kept[item.symbol] = BookKeeper("bybit", item.symbol, depth=1000)
            out.extend(keeper.on_msg(item))
    return kept, out


@pytest.mark.parametrize("path", [MIXED, HISTORY], ids=["mixed", "history"])
def test_clean_captures_sync_without_gaps_to_the_reference_book(path: Path) -> None:
    kept, out = keepers(parsed(path))
    assert not [o for o in out if o["type"] == "status"]
    want = reference_books(path)
    assert sorted(kept) == sorted(want)
    for symbol, keeper in kept.items():
        bids, asks, last = want[symbol]
        assert keeper.synced and keeper.gaps == 0 and keeper.last_id == last
        top_bids, top_asks = keeper.book.top(1000)
        assert [tuple(lv) for lv in top_bids] == sorted(bids.items(), key=lambda kv: -float(kv[0]))
        assert [tuple(lv) for lv in top_asks] == sorted(asks.items(), key=lambda kv: float(kv[0]))


def dropped_delta(path: Path, symbol: str) -> tuple[list[Item], int]:
    """The capture's items with the 5th delta of ``symbol`` dropped; its u."""
    items = parsed(path)
    deltas = [
        n
        for n, i in enumerate(items)
        if isinstance(i, DepthMsg) and i.symbol == symbol and i.kind == "update"
    ]
    gone = items[deltas[4]]
    assert isinstance(gone, DepthMsg) and gone.last_id is not None
    return items[: deltas[4]] + items[deltas[4] + 1 :], gone.last_id


@pytest.mark.parametrize(
    ("path", "symbol"),
    [(MIXED, "BTC/USDT"), (MIXED, "BTC/USDT:USDT"), (HISTORY, "XRP/USDT:USDT")],
)
def test_a_dropped_delta_is_a_gap_of_that_symbol_only(path: Path, symbol: str) -> None:
    items, u = dropped_delta(path, symbol)
    kept, out = keepers(items)
    gaps = [o for o in out if o["type"] == "status" and o["event"] == "gap_detected"]
    assert [g["symbol"] for g in gaps] == [symbol]
    assert f"last u+1={u}" in gaps[0]["detail"]
    assert not kept[symbol].synced  # cleared until the next snapshot
    assert all(k.synced for s, k in kept.items() if s != symbol)


def test_repeated_delta_is_ignored_and_u1_snapshot_resets() -> None:
    items = parsed(HISTORY)
    depth = [i for i in items if isinstance(i, DepthMsg)]
    snapshot, deltas = depth[0], depth[1:]
    keeper = BookKeeper("bybit", "XRP/USDT:USDT")
    keeper.on_msg(snapshot)
    keeper.on_msg(deltas[0])
    assert keeper.on_msg(deltas[0]) == [] and keeper.ignored == 1  # reconnect overlap
    restart = snapshot._replace(last_id=1, bids=snapshot.bids[:3], asks=snapshot.asks[:3])
    keeper.on_msg(restart)
    assert keeper.last_id == 1 and len(keeper.book.top(1000)[0]) == 3
    # Deltas now chain from u=1: the next old-numbered delta is a gap, not applied.
    out = keeper.on_msg(deltas[5])
    assert next(o["event"] for o in out if o["type"] == "status") == "gap_detected"


def test_linear_tickers_give_the_merged_bbo_and_spot_tickers_none() -> None:
    want = []
    tops: dict[str, dict[str, str]] = {}
    for market, push in reference_pushes(MIXED):
        if not push["topic"].startswith("tickers.") or market != LINEAR:
            continue
        data = push["data"]
        fields = {
            k: data[k] for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size") if k in data
        }
        top = tops.setdefault(data["symbol"], {})
        top.update(fields)
        if fields and len(top) == 4:
            want.append(
                (
                    unified(data["symbol"], LINEAR),
                    push["ts"] * 1000,
                    *tuple(top[k] for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size")),
                )
            )
    got = [
        (
            b["symbol"],
            b["ts_exchange"],
            b["bid_price"],
            b["bid_size"],
            b["ask_price"],
            b["ask_size"],
        )
        for b in parsed(MIXED)
        if isinstance(b, dict) and b["type"] == "bbo"
    ]
    assert got == want and len(got) > 600
    assert not any(s.count(":") == 0 for s, *_ in got)  # spot tickers carry no bid/ask


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT",'
            '"S":"Buy","v":"-1","p":"1","i":"x"}]}',
            "bybit publicTrade v",
        ),
        (
            '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT",'
            '"S":"Hold","v":"1","p":"1","i":"x"}]}',
            "S must be Buy or Sell",
        ),
        (
            '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],'
            '"a":[],"u":"7"}}',
            "u must be an integer",
        ),
        (
            '{"topic":"orderbook.50.BTCUSDT","type":"patch","ts":1,"data":{"s":"BTCUSDT","b":[],'
            '"a":[],"u":7}}',
            "unknown type 'patch'",
        ),
        (
            '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT",'
            '"b":[["1","0"]],"a":[],"u":7}}',
            "bybit orderbook snapshot b",
        ),
        ('{"topic":"mystery.BTCUSDT","type":"snapshot","ts":1,"data":{}}', "unknown topic"),
        ('{"hello":1}', "neither a push"),
        ("[1]", "not a JSON object"),
    ],
)
def test_malformed_frames_name_the_reason(text: str, reason: str) -> None:
    frame = RawFrame("bybit", "c wss://stream.bybit.com/v5/public/linear", 0, text)
    with pytest.raises(FrameError, match=reason):
        make_parser("bybit").parse(frame)


def test_replies() -> None:
    parser = make_parser("bybit")
    ack = '{"success":true,"ret_msg":"","conn_id":"x","req_id":"","op":"subscribe"}'
    assert parser.parse(RawFrame("bybit", "c", 0, ack)) == []
    bad = '{"success":false,"ret_msg":"Invalid symbol :[publicTrade.NOPE]","op":"subscribe"}'
    (status,) = parser.parse(RawFrame("bybit", "c", 0, bad))
    assert isinstance(status, dict) and status["event"] == "error"
    assert "Invalid symbol" in status["detail"]


def test_capture_venue_evidence() -> None:
    assert venue_mismatch(MIXED, "bybit") is None
    assert venue_mismatch(HISTORY, "bybit") is None
    found = venue_mismatch(MIXED, "okx")
    assert found is not None and found.recorded == "bybit"
    assert (
        venue_mismatch(
            CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz", "bybit"
        )
        is not None
    )


def level_one(market: str) -> RawFrame:
    """A real orderbook.200 snapshot of ``market`` as Bybit's level-1 book sends it: the
    topic orderbook.1 and the best level of each side (no capture has orderbook.1)."""
    frame = next(
        f
        for f in frames(MIXED)
        if market_of(f.conn_id) == market
        and '"type":"snapshot"' in f.text
        and "orderbook" in f.text
    )
    push = json.loads(frame.text)
    push["topic"] = push["topic"].replace("orderbook.200.", "orderbook.1.")
    push["data"]["b"], push["data"]["a"] = push["data"]["b"][:1], push["data"]["a"][:1]
    return frame._replace(text=json.dumps(push, separators=(",", ":")))


@pytest.mark.parametrize("market", [SPOT, LINEAR])
def test_level_one_book_is_a_bbo_on_both_paths(market: str) -> None:
    from operators.normalize import Normalizer

    frame = level_one(market)
    push = json.loads(frame.text)
    (bbo,) = make_parser("bybit").parse(frame)
    assert isinstance(bbo, dict) and bbo["type"] == "bbo"
    assert bbo["symbol"] == unified(push["data"]["s"], market)
    assert [bbo["bid_price"], bbo["bid_size"]] == push["data"]["b"][0]
    assert [bbo["ask_price"], bbo["ask_size"]] == push["data"]["a"][0]
    assert bbo["sequence"] == push["data"]["u"]
    typed_parser = make_parser("bybit")
    assert typed_parser.typed(frame)  # the fast path takes it
    typed = Normalizer({"bybit": typed_parser})
    careful = Normalizer({"bybit": make_parser("bybit")}, typed=False)
    delta = push | {"type": "delta"}
    zero = json.loads(frame.text)
    zero["data"]["b"][0][1] = "0"
    empty = json.loads(frame.text)
    empty["data"]["b"] = []
    for changed in (push, delta, zero, empty):
        text = json.dumps(changed, separators=(",", ":"))
        variant = frame._replace(text=text)
        assert typed(variant) == careful(variant), text[:200]


def test_protocol_subscribes_per_market_in_batches_of_ten() -> None:
    from sources.bybit import PROTOCOL, BybitProtocol, market_url

    spot, linear = BybitProtocol(SPOT), BybitProtocol(LINEAR)
    natives = [f"C{n}USDT" for n in range(7)]
    sub = [json.loads(m) for m in linear.subscribe_messages(natives, ["trades", "book", "bbo"])]
    assert [len(m["args"]) for m in sub] == [10, 10, 1]
    assert sub[0]["op"] == "subscribe"
    assert sub[0]["args"][:3] == ["publicTrade.C0USDT", "orderbook.200.C0USDT", "tickers.C0USDT"]
    (spot_sub,) = spot.subscribe_messages(["BTCUSDT"], ["bbo", "book"])
    assert json.loads(spot_sub)["args"] == ["orderbook.1.BTCUSDT", "orderbook.200.BTCUSDT"]
    assert [json.loads(m) for m in PROTOCOL.resync_messages("SOLUSDT")] == [
        {"op": "unsubscribe", "args": ["orderbook.200.SOLUSDT"]},
        {"op": "subscribe", "args": ["orderbook.200.SOLUSDT"]},
    ]
    with pytest.raises(ValueError, match="unknown channels"):
        spot.subscribe_messages(["BTCUSDT"], ["candles"])
    assert market_url("wss://stream.bybit.com/v5/public/linear", SPOT) == (
        "wss://stream.bybit.com/v5/public/spot"
    )
    assert market_url("ws://127.0.0.1:9000", LINEAR) == "ws://127.0.0.1:9000/v5/public/linear"
    assert PROTOCOL.app_ping_text == '{"op":"ping"}' and PROTOCOL.app_ping_interval == 20.0
