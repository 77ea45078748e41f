"""Kraken v2 parser: on the v2 frames derived from the real v1 capture (no real v2
recording exists; simulator/venues/kraken_v2.py) and on the documented v2 shapes."""

from __future__ import annotations

import json
import random
from functools import cache
from typing import Any

import orjson
import pytest
from capture_lines import CAPTURES, capture_frames
from test_typed_decode import CHECK_IDS, CHECKS, mutations, pair

from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.normalize import Normalizer
from simulator.venues.kraken_v2 import V2Deriver
from sources import numbers
from sources.frames import RawFrame
from sources.kraken import BOOK_DEPTH, PROTOCOL
from sources.registry import make_parser

CAPTURE = CAPTURES / "kraken" / "cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"


@cache
def v2_frames() -> tuple[RawFrame, ...]:
    return tuple(V2Deriver().frames(capture_frames(CAPTURE, "kraken")))


def frame(text: str) -> RawFrame:
    return RawFrame("kraken", "c1", 1_700_000_000_000_000, text)


def test_derived_v2_books_verify_every_checksum_with_exact_number_text() -> None:
    parser = make_parser("kraken")
    keepers: dict[str, BookKeeper] = {}
    statuses = []
    for f in v2_frames():
        for item in parser.parse(f):
            if isinstance(item, DepthMsg):
                assert item.first_id == BOOK_DEPTH
                keeper = keepers.setdefault(item.symbol, BookKeeper("kraken", item.symbol))
                statuses += [o for o in keeper.on_msg(item) if o["type"] == "status"]
    assert statuses == []
    # v2 sends a checksum on snapshots too: 10 snapshots + 4269 updates.
    assert sum(k.checksum_checks for k in keepers.values()) == 4279
    assert sum(k.checksum_failures for k in keepers.values()) == 0


def test_numbers_keep_their_wire_text_where_a_float_would_not() -> None:
    snapshot = next(f for f in v2_frames() if '"snapshot"' in f.text and "KSM/BTC" in f.text)
    assert '"price":0.000' in snapshot.text or '"price":0.00' in snapshot.text
    depth = make_parser("kraken").parse(snapshot)[0]
    assert isinstance(depth, DepthMsg)
    raw = json.loads(snapshot.text, parse_float=str)["data"][0]
    assert depth.asks == [(lvl["price"], lvl["qty"]) for lvl in raw["asks"]]
    floats = orjson.loads(snapshot.text)["data"][0]["asks"]
    assert any(str(lvl["qty"]) != q for lvl, (_, q) in zip(floats, depth.asks, strict=True))


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_typed_path_gives_the_careful_items_on_every_derived_frame(checks: numbers.Checks) -> None:
    typed, careful, parser = pair("kraken", checks)
    declined = 0
    for f in v2_frames():
        try:
            parser.typed(f)
        except Exception:
            assert f.text == '{"channel":"heartbeat"}', f.text[:200]
            declined += 1
        assert typed(f) == careful(f), f.text[:200]
    assert typed.stats == careful.stats
    assert declined == 92


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_typed_path_agrees_on_mutated_v2_frames(checks: numbers.Checks) -> None:
    typed, careful, _ = pair("kraken", checks)
    rng = random.Random("kraken-v2")
    kinds: dict[str, int] = {}
    compared = letters = 0
    for original in v2_frames():
        kind = original.text[:40].split('"symbol"')[0]
        if kinds.get(kind, 0) >= 3:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
        for text in mutations(original, rng):
            f = original._replace(text=text)
            got, want = typed(f), careful(f)
            assert got == want, (text[:300], got, want)
            compared += 1
            letters += any(isinstance(i, dict) and i["type"] == "dead_letter" for _, i in want)
    assert typed.stats == careful.stats
    assert compared > 300 and letters > compared / 4, (compared, letters)


def test_trades_keep_text_id_side_and_time() -> None:
    # Shape of the documented v2 trade push (spot-websocket-v2/trade).
    text = (
        '{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",'
        '"price":0.5117,"qty":40.00000000,"ord_type":"market","trade_id":4665906,'
        '"timestamp":"2023-09-25T07:49:37.708706Z"}]}'
    )
    [trade] = Normalizer({"kraken": make_parser("kraken")})(frame(text))
    record: dict[str, Any] = trade[1]  # type: ignore[assignment]
    assert (record["symbol"], record["price"], record["size"]) == (
        "MATIC/USD",
        "0.5117",
        "40.00000000",
    )
    assert (record["trade_id"], record["side"]) == ("4665906", "sell")
    assert record["ts_exchange"] == 1695628177708706


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
            '"price":"100.5","qty":1,"ord_type":"limit","trade_id":1,'
            '"timestamp":"2023-09-25T07:49:37.708706Z"}]}',
            "price must be a JSON number",
        ),
        (
            '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":'
            '[{"price":100.5,"qty":-1}],"asks":[],"checksum":1,'
            '"timestamp":"2023-09-25T07:49:37.708706Z"}]}',
            "size",
        ),
        ('{"channel":"ohlc","type":"update","data":[]}', "ohlc"),
    ],
)
def test_bad_v2_frames_are_dead_letters_with_a_reason(text: str, reason: str) -> None:
    [(_, letter)] = Normalizer({"kraken": make_parser("kraken")})(frame(text))
    assert isinstance(letter, dict) and letter["type"] == "dead_letter"
    assert reason in letter["reason"] and letter["raw"] == text


@pytest.mark.parametrize(
    "text",
    [
        '{"channel":"heartbeat"}',
        '{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z"}',
        '{"method":"subscribe","result":{"channel":"book","symbol":"BTC/USD","depth":1000},'
        '"success":true,"time_in":"2023-09-25T09:04:31.742599Z"}',
        '{"channel":"status","type":"update","data":[{"version":"2.0.0","system":"online"}]}',
    ],
)
def test_control_frames_carry_nothing(text: str) -> None:
    assert make_parser("kraken").parse(frame(text)) == []


def test_subscribe_and_resync_frames() -> None:
    subs = [
        orjson.loads(t)
        for t in PROTOCOL.subscribe_messages(["BTC/USD", "ETH/USD"], ["trades", "book", "bbo"])
    ]
    assert [s["params"]["channel"] for s in subs] == ["trade", "book", "ticker"]
    assert subs[1]["params"] == {
        "channel": "book",
        "symbol": ["BTC/USD", "ETH/USD"],
        "depth": BOOK_DEPTH,
    }
    unsub, sub = (orjson.loads(t) for t in PROTOCOL.resync_messages("ETH/USD"))
    assert (unsub["method"], sub["method"]) == ("unsubscribe", "subscribe")
    assert sub["params"]["symbol"] == ["ETH/USD"] and sub["params"]["channel"] == "book"


def test_simulator_moves_rfc3339_times_and_trade_ids_keeping_microseconds() -> None:
    from simulator.venues.kraken import KrakenSim

    sim = KrakenSim("kraken")
    trade = next(f.text for f in v2_frames() if f.text.startswith('{"channel":"trade"'))
    [ms] = sim.event_times_ms(trade)
    moved = sim.restamp(trade, 86_400_000 + 1_500)
    assert list(sim.event_times_ms(moved)) == [ms + 86_400_000 + 1_500]
    before = make_parser("kraken").parse(frame(trade))[0]
    after = make_parser("kraken").parse(frame(sim.lap_shift(trade, 1_000, 7)))[0]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["ts_exchange"] == before["ts_exchange"] + 1_000_000
    assert int(after["trade_id"]) == int(before["trade_id"]) + 7
