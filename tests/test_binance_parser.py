"""Binance spot / USD-M parser and protocol against the bundled real captures."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from typing import Any

import pytest
from capture_lines import CAPTURES, capture_frames

from candlewax.schema import validate_record
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.binance import PROTOCOL, USDM_PROTOCOL, BinanceParser, BinanceUsdmParser
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.registry import make_parser
from sources.venue import FrameError, Item

SPOT_BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"


@cache
def spot_frames() -> list[RawFrame]:
    return list(capture_frames(SPOT_BTC, "binance"))


def first_frame(stream_suffix: str) -> RawFrame:
    return next(f for f in spot_frames() if f'@{stream_suffix}"' in f.text[:40])


def with_data(frame: RawFrame, **changes: Any) -> RawFrame:
    """A real captured frame with fields of its event replaced (None deletes)."""
    obj = json.loads(frame.text)
    for key, value in changes.items():
        if value is None:
            del obj["data"][key]
        else:
            obj["data"][key] = value
    return frame._replace(text=json.dumps(obj))


def only_record(items: list[Item]) -> dict[str, Any]:
    (item,) = items
    assert isinstance(item, dict)
    return item


def only_depth(items: list[Item]) -> DepthMsg:
    (item,) = items
    assert isinstance(item, DepthMsg)
    return item


def expected_items(frame: RawFrame) -> Any:
    """What the parser must emit, computed from the raw JSON independently."""
    obj = json.loads(frame.text)
    if frame.hint:
        return ("snapshot", obj["lastUpdateId"], obj["bids"], obj["asks"])
    d = obj["data"]
    if d.get("e") == "trade":
        side = "sell" if d["m"] else "buy"
        return ("trade", str(d["t"]), d["p"], d["q"], side, d["T"] * 1000)
    if d.get("e") == "depthUpdate":
        return ("update", d["U"], d["u"], d["b"], d["a"], d["E"] * 1000)
    return ("bbo", d["u"], d["b"], d["B"], d["a"], d["A"], frame.ts_ingest)


def emitted(item: Any) -> Any:
    if isinstance(item, DepthMsg):
        bids, asks = [list(lvl) for lvl in item.bids], [list(lvl) for lvl in item.asks]
        if item.kind == "snapshot":
            return ("snapshot", item.last_id, bids, asks)
        return ("update", item.first_id, item.last_id, bids, asks, item.ts_exchange)
    if item["type"] == "trade":
        return tuple(item[k] for k in ("type", "trade_id", "price", "size", "side", "ts_exchange"))
    keys = ("sequence", "bid_price", "bid_size", "ask_price", "ask_size", "ts_exchange")
    return ("bbo", *(item[k] for k in keys))


def test_spot_capture_parses_completely_with_exact_text() -> None:
    parser = BinanceParser(SymbolMap("binance"))
    counts: Counter[str] = Counter()
    for frame in spot_frames():
        items = parser.parse(frame)
        assert len(items) == 1, frame.text[:200]
        item = items[0]
        assert emitted(item) == expected_items(frame)
        if isinstance(item, DepthMsg):
            counts[item.kind] += 1
            assert (item.venue, item.symbol, item.checksum) == ("binance", "BTC/USDT", None)
            assert item.prev_id is None and item.conn_id == SPOT_BTC.name
            assert all(type(p) is str and type(q) is str for p, q in item.bids + item.asks)
        else:
            counts[item["type"]] += 1
            assert item["symbol"] == "BTC/USDT"
            assert item["ts_ingest"] == frame.ts_ingest
            validate_record(item)
    # SOURCE.md: depth@100ms 3451, trade 9757, bookTicker 28040, one REST snapshot
    assert counts == {"update": 3451, "trade": 9757, "bbo": 28040, "snapshot": 1}


def test_snapshot_without_symbol_uses_the_streams_only_symbol() -> None:
    snapshot = next(f for f in spot_frames() if f.hint == SNAPSHOT_HINT)
    diff = first_frame("depth@100ms")
    # Known in advance from the configuration: fine even before any data.
    assert only_depth(make_parser("binance", ["BTC/USDT"]).parse(snapshot)).symbol == "BTC/USDT"
    unconfigured = make_parser("binance", None)
    with pytest.raises(FrameError, match="before any data"):
        unconfigured.parse(snapshot)
    unconfigured.parse(diff)
    assert only_depth(unconfigured.parse(snapshot)).symbol == "BTC/USDT"
    # Two symbols seen: the snapshot cannot be attributed.
    unconfigured.parse(with_data(diff, s="ETHUSDT"))
    with pytest.raises(FrameError, match="stream of 2 symbols"):
        unconfigured.parse(snapshot)
    # A named hint needs no guess.
    named = snapshot._replace(hint=SNAPSHOT_HINT + "ETHUSDT")
    assert only_depth(unconfigured.parse(named)).symbol == "ETH/USDT"


def test_raw_stream_frames_parse_like_combined_ones() -> None:
    parser = make_parser("binance", None)
    for suffix in ("trade", "depth@100ms", "bookTicker"):
        combined = first_frame(suffix)
        raw = combined._replace(text=json.dumps(json.loads(combined.text)["data"]))
        assert parser.parse(raw) == parser.parse(combined)


def test_usdm_capture_parses_completely() -> None:
    parser = BinanceUsdmParser(SymbolMap("binance-usdm"))
    counts: Counter[str] = Counter()
    for frame in capture_frames(USDM, "binance-usdm"):
        items = parser.parse(frame)
        obj = json.loads(frame.text)
        if frame.hint:
            (snap,) = items
            assert isinstance(snap, DepthMsg) and snap.kind == "snapshot"
            assert snap.last_id == obj["lastUpdateId"] and snap.ts_exchange == obj["T"] * 1000
            assert snap.symbol == frame.hint.removeprefix(SNAPSHOT_HINT)[:-4] + "/USDT:USDT"
            counts["snapshot"] += 1
            continue
        d = obj["data"]
        if d["e"] == "kline":
            assert items == []
            counts["kline"] += 1
            continue
        (item,) = items
        if isinstance(item, DepthMsg):
            assert (item.first_id, item.last_id, item.prev_id) == (d["U"], d["u"], d["pu"])
            assert [list(lvl) for lvl in item.bids] == d["b"]
            counts["update"] += 1
            continue
        validate_record(item)
        assert item["venue"] == "binance-usdm" and item["symbol"].endswith("/USDT:USDT")
        assert item["ts_exchange"] == d["T"] * 1000
        if d["e"] == "aggTrade":
            assert item["trade_id"] == f"agg:{d['a']}" and item["price"] == d["p"]
        else:
            assert (item["bid_price"], item["ask_size"], item["sequence"]) == (
                d["b"],
                d["A"],
                d["u"],
            )
        counts[d["e"]] += 1
    assert counts == {"snapshot": 4, "update": 764, "bookTicker": 613, "aggTrade": 91, "kline": 67}


def test_aggregate_and_raw_trade_ids_do_not_collide() -> None:
    trade = first_frame("trade")
    t = json.loads(trade.text)["data"]["t"]
    agg = with_data(trade, e="aggTrade", a=t, t=None)
    parser = make_parser("binance", None)
    raw_id = only_record(parser.parse(trade))["trade_id"]
    agg_id = only_record(parser.parse(agg))["trade_id"]
    assert (raw_id, agg_id) == (str(t), f"agg:{t}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"result":null,"id":1}', None),
        ('{"result":["btcusdt@trade"],"id":"list1"}', None),
        ('{"e":"serverShutdown","E":1723161255208}', "planned_reconnect"),
        ('{"code":2,"msg":"Invalid request: unknown property","id":7}', "error"),
        ('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}', "error"),
    ],
)
def test_control_frames(text: str, expected: str | None) -> None:
    items = make_parser("binance", None).parse(RawFrame("binance", "c", 5, text))
    if expected is None:
        assert items == []
    else:
        status = only_record(items)
        validate_record(status)
        assert status["event"] == expected and status["symbol"] is None


def malformed_frames() -> list[tuple[str, RawFrame, str]]:
    trade, depth, ticker = (
        first_frame("trade"),
        first_frame("depth@100ms"),
        first_frame("bookTicker"),
    )
    return [
        ("truncated", trade._replace(text=trade.text[:-7]), "invalid JSON"),
        ("empty", trade._replace(text=""), "invalid JSON"),
        ("not an object", trade._replace(text="[1,2]"), "malformed"),
        ("missing price", with_data(trade, p=None), "missing field 'p'"),
        ("numeric price", with_data(trade, p=61837.63), "trade p must be a decimal string"),
        ("string time", with_data(trade, T="1723161255342"), "T must be"),
        ("string maker flag", with_data(trade, m="true"), "m must be a bool"),
        ("string trade id", with_data(trade, t="x1"), "id an integer"),
        ("unknown symbol", with_data(trade, s="???"), "cannot"),
        ("unknown event", with_data(trade, e="markPriceUpdate"), "unknown event type"),
        ("forceOrder", with_data(trade, e="forceOrder"), "unknown event type"),
        ("string update id", with_data(depth, U="1"), "must be integers"),
        (
            "numeric levels",
            with_data(depth, b=[[1.5, 2.0]]),
            "b[0] price must be a decimal string, got 1.5",
        ),
        ("level triple", with_data(depth, a=[["1", "2", "3"]]), "malformed"),
        ("levels object", with_data(depth, b={"1": "2"}), "levels must be a list"),
        ("missing final id", with_data(depth, u=None), "missing field 'u'"),
        ("ticker number", with_data(ticker, B=3.5), "bookTicker B must be a decimal string"),
        ("no event", trade._replace(text='{"stream":"x","data":{"s":"BTCUSDT"}}'), "neither"),
    ]


@pytest.mark.parametrize(("name", "frame", "reason"), malformed_frames())
def test_malformed_frames_become_dead_letters(name: str, frame: RawFrame, reason: str) -> None:
    with pytest.raises(FrameError, match=reason.replace("[", r"\[").replace("?", r"\?")):
        make_parser("binance", None).parse(frame)
    normalize = Normalizer({"binance": make_parser("binance", None)})
    ((key, letter),) = normalize(frame)
    assert key == "binance:" and isinstance(letter, dict)
    validate_record(letter)
    assert letter["raw"] == frame.text and letter["reason"].startswith("FrameError: ")
    assert letter["ts_ingest"] == frame.ts_ingest
    counts = normalize.stats["binance"]
    assert (counts.frames, counts.items, counts.dead_letters) == (1, 0, 1)


def test_usdm_depth_requires_pu() -> None:
    depth = json.loads(first_frame("depth@100ms").text)
    frame = RawFrame("binance-usdm", "c", 1, json.dumps(depth))  # spot diff: no pu
    with pytest.raises(FrameError, match="missing field 'pu'"):
        make_parser("binance-usdm", None).parse(frame)
    depth["data"]["pu"] = depth["data"]["U"] - 1
    (msg,) = make_parser("binance-usdm", None).parse(frame._replace(text=json.dumps(depth)))
    assert isinstance(msg, DepthMsg) and msg.prev_id == depth["data"]["U"] - 1


def test_symbol_of() -> None:
    parser = make_parser("binance", None)
    assert parser.symbol_of(first_frame("bookTicker")) == "BTC/USDT"
    assert parser.symbol_of(RawFrame("binance", "c", 1, '{"result":null,"id":1}')) is None
    assert parser.symbol_of(RawFrame("binance", "c", 1, "{oops")) is None
    snap = RawFrame("binance", "c", 1, "{}", SNAPSHOT_HINT + "ETHBTC")
    assert parser.symbol_of(snap) == "ETH/BTC"


def test_protocols() -> None:
    url = PROTOCOL.connect_url(PROTOCOL.default_ws_url, ["BTCUSDT"], ["trades", "book", "bbo"])
    assert url == (
        "wss://stream.binance.com:9443/stream?streams="
        "btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker"
    )
    two = USDM_PROTOCOL.connect_url("ws://127.0.0.1:9/", ["BTCUSDT", "ETHUSDT"], ["book"])
    assert two == "ws://127.0.0.1:9/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    assert PROTOCOL.snapshot_url("https://api.binance.com", "btcusdt") == (
        "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5000"
    )
    assert USDM_PROTOCOL.snapshot_url(USDM_PROTOCOL.default_rest_url or "", "BTCUSDT") == (
        "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    )
    assert USDM_PROTOCOL.default_ws_url == "wss://fstream.binance.com"
    for proto in (PROTOCOL, USDM_PROTOCOL):
        assert proto.subscribe_messages(["BTCUSDT"], ["trades"]) == []
        assert proto.resync_messages("BTCUSDT") == []
        assert proto.app_ping_text is None and proto.max_lifetime == 24 * 3600
        assert not proto.is_control("pong")
    with pytest.raises(ValueError, match="unknown channels"):
        PROTOCOL.connect_url("wss://x", ["BTCUSDT"], ["candles"])
    with pytest.raises(ValueError, match="exceed 1024"):
        PROTOCOL.connect_url(
            "wss://x", [f"S{i}USDT" for i in range(342)], ["trades", "book", "bbo"]
        )
