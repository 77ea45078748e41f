"""OKX v5 parser and protocol against the bundled real captures."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from typing import Any

import pytest
from capture_lines import CAPTURES, capture_frames

from candlewax.schema import validate_record
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.frames import RawFrame
from sources.okx import PROTOCOL
from sources.registry import make_parser
from sources.venue import FrameError, Item

V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
LEGACY = CAPTURES / "okx" / "cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"


@cache
def frames(path: Any) -> list[RawFrame]:
    return list(capture_frames(path, "okx"))


def first(channel: str, action: str | None = None) -> RawFrame:
    for frame in frames(V5) + frames(LEGACY):
        obj = json.loads(frame.text)
        arg = obj.get("arg", {})
        if arg.get("channel") == channel and obj.get("action") == action and "event" not in obj:
            return frame
    raise LookupError(channel)


def edited(frame: RawFrame, channel: str | None = None, **fields: Any) -> RawFrame:
    """A real captured push with its channel renamed or data[0] fields replaced (None deletes)."""
    obj = json.loads(frame.text)
    if channel:
        obj["arg"]["channel"] = channel
    for key, value in fields.items():
        if value is None:
            obj["data"][0].pop(key, None)
        else:
            obj["data"][0][key] = value
    return frame._replace(text=json.dumps(obj))


def replaced(frame: RawFrame, **fields: Any) -> RawFrame:
    """A real captured push with top-level fields replaced."""
    return frame._replace(text=json.dumps(json.loads(frame.text) | fields))


def only_depth(items: list[Item]) -> DepthMsg:
    (item,) = items
    assert isinstance(item, DepthMsg)
    return item


def only_record(items: list[Item]) -> dict[str, Any]:
    (item,) = items
    assert isinstance(item, dict)
    return item


def pairs(levels: list[list[str]]) -> list[tuple[str, str]]:
    return [(lvl[0], lvl[1]) for lvl in levels]


def check_capture(path: Any) -> Counter[str]:
    """Parse every frame; compare each output with the raw JSON decoded independently."""
    parser = make_parser("okx", None)
    counts: Counter[str] = Counter()
    for frame in frames(path):
        items = parser.parse(frame)
        obj = json.loads(frame.text)
        if "event" in obj:
            assert items == []
            counts["event:" + obj["event"]] += 1
            continue
        channel = obj["arg"]["channel"]
        assert len(items) == len(obj["data"])
        for item, d in zip(items, obj["data"], strict=True):
            if isinstance(item, DepthMsg):
                assert item.kind == obj["action"] and item.venue == "okx"
                assert (item.bids, item.asks) == (pairs(d["bids"]), pairs(d["asks"]))
                assert item.checksum == d["checksum"] and item.checksum != 0
                assert (item.first_id, item.last_id, item.prev_id) == (None, None, None)
                assert item.ts_exchange == int(d["ts"]) * 1000
                counts[f"{channel}:{item.kind}"] += 1
                continue
            validate_record(item)
            assert item["ts_exchange"] == int(d["ts"]) * 1000
            assert item["ts_ingest"] == frame.ts_ingest
            if channel == "trades":
                got = [item[k] for k in ("trade_id", "price", "size", "side")]
                assert got == [d["tradeId"], d["px"], d["sz"], d["side"]]
            else:
                assert item["origin"] == "ticker"
                assert (item["bid_price"], item["bid_size"]) == (
                    d["bidPx"] or None,
                    d["bidSz"] or None,
                )
                assert (item["ask_price"], item["ask_size"]) == (
                    d["askPx"] or None,
                    d["askSz"] or None,
                )
            counts[channel] += 1
    return counts


def test_v5_capture_parses_completely() -> None:
    # SOURCE.md: books 3 snapshots + 287 updates, trades 74, tickers 28
    assert check_capture(V5) == {
        "books:snapshot": 3,
        "books:update": 287,
        "trades": 74,
        "tickers": 28,
        "event:subscribe": 18,
    }


def test_legacy_capture_parses_completely() -> None:
    # SOURCE.md: books-l2-tbt 20 snapshots + 3659 updates over 10 instIds (spot, swap, options)
    assert check_capture(LEGACY) == {
        "books-l2-tbt:snapshot": 20,
        "books-l2-tbt:update": 3659,
        "trades": 19,
        "tickers": 19,
        "event:subscribe": 60,
    }


def test_instrument_names_map_to_unified_symbols() -> None:
    parser = make_parser("okx", None)
    seen = {parser.symbol_of(f) for f in frames(V5) + frames(LEGACY)} - {None}
    assert {"BTC/USD:BTC-220527", "UNI/USD:UNI", "BTC/USDT", "PROPS/ETH"} <= seen
    assert {"BTC/USD:BTC-220325-40000-C", "ETH/USD:ETH-220624-12000-P"} <= seen
    assert len(seen) == 12


def test_seq_ids_are_parsed_when_present() -> None:
    update = first("books", "update")
    msg = only_depth(make_parser("okx", None).parse(edited(update, seqId=15, prevSeqId=10)))
    assert (msg.first_id, msg.last_id, msg.prev_id) == (None, 15, 10)
    snapshot = first("books", "snapshot")
    msg = only_depth(make_parser("okx", None).parse(edited(snapshot, seqId=10, prevSeqId=-1)))
    assert (msg.kind, msg.last_id, msg.prev_id) == ("snapshot", 10, -1)


@pytest.mark.parametrize("zero", [0, "0"])
def test_zero_checksum_means_absent(zero: Any) -> None:
    frame = edited(first("books", "update"), checksum=zero)
    assert only_depth(make_parser("okx", None).parse(frame)).checksum is None
    absent = edited(first("books", "update"), checksum=None)
    assert only_depth(make_parser("okx", None).parse(absent)).checksum is None
    as_text = edited(first("books", "update"), checksum="-914047754")
    assert only_depth(make_parser("okx", None).parse(as_text)).checksum == -914047754


def test_books5_is_a_snapshot_on_every_push() -> None:
    push = json.loads(first("books", "snapshot").text)
    del push["action"]  # books5 pushes carry no action
    push["arg"]["channel"] = "books5"
    top5 = push["data"][0]
    top5["bids"], top5["asks"] = top5["bids"][:5], top5["asks"][:5]
    frame = RawFrame("okx", "c", 1, json.dumps(push))
    msg = only_depth(make_parser("okx", None).parse(frame))
    assert msg.kind == "snapshot" and msg.bids == pairs(top5["bids"])


def test_bbo_tbt_becomes_a_ticker_bbo() -> None:
    snap = first("books", "snapshot")
    d = json.loads(snap.text)["data"][0]
    bbo = edited(snap, "bbo-tbt", bids=d["bids"][:1], asks=d["asks"][:1], seqId=42, checksum=None)
    record = only_record(make_parser("okx", None).parse(bbo))
    validate_record(record)
    assert (record["bid_price"], record["bid_size"]) == tuple(d["bids"][0][:2])
    assert (record["ask_price"], record["sequence"], record["origin"]) == (
        d["asks"][0][0],
        42,
        "ticker",
    )
    one_sided = only_record(make_parser("okx", None).parse(edited(bbo, asks=[])))
    assert one_sided["ask_price"] is None and one_sided["bid_price"] == d["bids"][0][0]


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("pong", None),
        (
            '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3"}',
            None,
        ),
        (
            '{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3"}',
            None,
        ),
        ('{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3"}', "error"),
        (
            '{"event":"notice","code":"64008","msg":"The connection will soon be closed"}',
            "planned_reconnect",
        ),
    ],
)
def test_control_frames(text: str, event: str | None) -> None:
    items = make_parser("okx", None).parse(RawFrame("okx", "c", 3, text))
    if event is None:
        assert items == []
        return
    status = only_record(items)
    validate_record(status)
    assert status["event"] == event and status["symbol"] is None and "code" in status["detail"]


def malformed_frames() -> list[tuple[str, RawFrame, str]]:
    trade, update = first("trades"), first("books", "update")
    return [
        ("truncated", trade._replace(text=trade.text[:-3]), "invalid JSON"),
        ("ping echoed", trade._replace(text="ping"), "invalid JSON"),
        ("unknown channel", edited(trade, "funding-rate"), "unknown channel 'funding-rate'"),
        ("unknown event", trade._replace(text='{"event":"login","code":"0"}'), "unknown event"),
        ("neither push nor event", trade._replace(text='{"arg":{}}'), "not a push or event"),
        ("missing px", edited(trade, px=None), "missing field 'px'"),
        ("numeric px", edited(trade, px=30218.8), "okx trades px must be a decimal string"),
        ("bad side", edited(trade, side="BUY"), "side must be buy or sell"),
        ("ts not ms text", edited(trade, ts="2022-05-13"), "ts must be"),
        ("bad instId", trade._replace(text=trade.text.replace("BTC-USD-220527", "BTC")), "cannot"),
        (
            "unknown action",
            update._replace(text=update.text.replace('"update"', '"patch"')),
            "action",
        ),
        (
            "numeric levels",
            edited(update, asks=[[30249.4, 0, 0, 0]]),
            "price must be a decimal string, got 30249.4",
        ),
        (
            "level too short",
            edited(update, bids=[["30182.6"]]),
            "must be a list",
        ),
        ("bad checksum", edited(update, checksum="abc"), "checksum must be an integer"),
        ("float seqId", edited(update, seqId=1.5), "seqId must be an integer"),
        ("data not a list", replaced(update, data={"asks": []}), "data must be a list"),
        ("data of strings", replaced(update, data=["asks"]), "malformed"),
    ]


@pytest.mark.parametrize(("name", "frame", "reason"), malformed_frames())
def test_malformed_frames_become_dead_letters(name: str, frame: RawFrame, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        make_parser("okx", None).parse(frame)
    ((key, letter),) = Normalizer({"okx": make_parser("okx", None)})(frame)
    assert key == "okx:" and isinstance(letter, dict)
    validate_record(letter)
    assert letter["raw"] == frame.text and reason in letter["reason"]


def test_protocol() -> None:
    assert PROTOCOL.default_ws_url == "wss://ws.okx.com:8443/ws/v5/public"
    assert (
        PROTOCOL.connect_url("ws://127.0.0.1:5/ws", ["BTC-USDT"], ["book"]) == "ws://127.0.0.1:5/ws"
    )
    assert (PROTOCOL.app_ping_text, PROTOCOL.app_ping_interval) == ("ping", 25.0)
    assert PROTOCOL.default_rest_url is None and PROTOCOL.max_lifetime is None
    assert PROTOCOL.snapshot_url("https://www.okx.com", "BTC-USDT") is None
    (sub,) = PROTOCOL.subscribe_messages(["BTC-USDT", "UNI-USD-SWAP"], ["trades", "book", "bbo"])
    assert json.loads(sub) == {
        "op": "subscribe",
        "args": [
            {"channel": "trades", "instId": "BTC-USDT"},
            {"channel": "books", "instId": "BTC-USDT"},
            {"channel": "bbo-tbt", "instId": "BTC-USDT"},
            {"channel": "trades", "instId": "UNI-USD-SWAP"},
            {"channel": "books", "instId": "UNI-USD-SWAP"},
            {"channel": "bbo-tbt", "instId": "UNI-USD-SWAP"},
        ],
    }
    unsub, resub = (json.loads(m) for m in PROTOCOL.resync_messages("BTC-USDT"))
    args = [{"channel": "books", "instId": "BTC-USDT"}]
    assert unsub == {"op": "unsubscribe", "args": args} and resub == {
        "op": "subscribe",
        "args": args,
    }
    assert PROTOCOL.is_control("pong") and not PROTOCOL.is_control('{"event":"subscribe"}')
    with pytest.raises(ValueError, match="unknown channels"):
        PROTOCOL.subscribe_messages(["BTC-USDT"], ["candles"])
