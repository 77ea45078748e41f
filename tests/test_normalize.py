"""Normalize operator (frame -> keyed items / dead letters) and the venue registry."""

from __future__ import annotations

from collections import Counter

import pytest
from capture_lines import CAPTURES, capture_frames

from candlewax.schema import validate_record
from candlewax.symbols import SymbolMap
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.frames import RawFrame
from sources.registry import PARSERS, PROTOCOLS, UnsupportedVenue, make_parser
from sources.venue import Item

SPOT_BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"


class BrokenParser:
    """A parser with a bug (not a FrameError): the flow must survive it."""

    venue = "okx"

    def __init__(self, symbols: SymbolMap) -> None:
        self.symbols = symbols

    def parse(self, frame: RawFrame) -> list[Item]:
        return [{"type": "trade", "symbol": None}] if frame.text == "x" else [1 / 0]  # type: ignore[list-item]

    def symbol_of(self, frame: RawFrame) -> str | None:
        return None


def test_capture_items_are_keyed_by_venue_and_symbol() -> None:
    normalize = Normalizer({"binance": make_parser("binance", None)})
    keys: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for frame in capture_frames(SPOT_BTC, "binance"):
        for key, item in normalize(frame):
            keys[key] += 1
            kinds[item.kind if isinstance(item, DepthMsg) else item["type"]] += 1
    assert keys == {"binance:BTC/USDT": 41249}
    assert kinds == {"trade": 9757, "update": 3451, "bbo": 28040, "snapshot": 1}
    counts = normalize.stats["binance"]
    assert (counts.frames, counts.items, counts.dead_letters) == (41249, 41249, 0)


def test_multi_symbol_keys_and_control_frames() -> None:
    normalize = Normalizer({"okx": make_parser("okx", None)})
    keys = Counter(key for f in capture_frames(OKX_V5, "okx") for key, _ in normalize(f))
    assert keys == {"okx:BTC/USD:BTC-220527": 105, "okx:UNI/USD:UNI": 95, "okx:BTC/USDT": 192}
    error = RawFrame("okx", "c", 9, '{"event":"error","code":"60012","msg":"Invalid request"}')
    ((key, status),) = normalize(error)
    assert key == "okx:" and isinstance(status, dict) and status["event"] == "error"
    counts = normalize.stats["okx"]
    # 410 recv frames (18 subscribe acks, 392 data items) + the error event and its status
    assert (counts.frames, counts.items, counts.dead_letters) == (411, 393, 0)


def test_any_parser_exception_becomes_a_dead_letter() -> None:
    normalize = Normalizer({"okx": BrokenParser(SymbolMap("okx"))})
    frame = RawFrame("okx", "c", 12, "{}")
    ((key, letter),) = normalize(frame)
    assert key == "okx:" and isinstance(letter, dict)
    validate_record(letter)
    assert letter["reason"] == "ZeroDivisionError: division by zero" and letter["raw"] == "{}"
    # A status-like item without symbol is keyed "venue:"
    assert normalize(frame._replace(text="x"))[0][0] == "okx:"
    assert normalize.stats["okx"].dead_letters == 1


def test_frame_of_unconfigured_venue_is_a_dead_letter() -> None:
    normalize = Normalizer({"okx": make_parser("okx", None)})
    ((key, letter),) = normalize(RawFrame("kraken", "c", 1, '{"channel":"heartbeat"}'))
    assert key == "kraken:" and isinstance(letter, dict)
    assert "no parser for venue 'kraken'" in letter["reason"]
    assert normalize.stats["kraken"].dead_letters == 1 and normalize.stats["kraken"].frames == 1


def test_registry() -> None:
    # Venues are added one module at a time (issue 9): these at least, each with both parts.
    assert (
        set(PARSERS)
        == set(PROTOCOLS)
        >= {
            "binance",
            "binance-usdm",
            "okx",
            "bybit",
            "kraken",
            "hyperliquid",
            "coinbase",
        }
    )
    for venue in PARSERS:
        assert make_parser(venue, None).venue == venue == PROTOCOLS[venue].venue
    parser = make_parser("binance-usdm", ["BTC/USDT:USDT"])
    frame = RawFrame(
        "binance-usdm", "c", 1, '{"lastUpdateId":1,"bids":[],"asks":[]}', "depth_snapshot:"
    )
    (snapshot,) = parser.parse(frame)
    assert isinstance(snapshot, DepthMsg) and snapshot.symbol == "BTC/USDT:USDT"
    with pytest.raises(UnsupportedVenue, match=f"supported: {', '.join(sorted(PARSERS))}$"):
        make_parser("nope", None)


def test_a_batch_is_normalized_as_frame_by_frame() -> None:
    """``Normalizer.batch`` (the fused pipelines' hot loop) gives the items and counts of
    calling the normalizer frame by frame: venues interleaved, a status dict in between,
    frames the typed path declines, dead letters and a venue without a parser."""
    binance = list(capture_frames(SPOT_BTC, "binance"))[:400]
    okx = list(capture_frames(OKX_V5, "okx"))[:60]
    status = {"type": "status", "venue": "okx", "symbol": None, "event": "connected"}
    batch: list[object] = [*binance[:150], *okx[:30], status, binance[150]._replace(text="{")]
    batch += [RawFrame("deribit", "c", 1, "{}"), *okx[30:], *binance[151:], status]

    def keyed(item: object) -> tuple[str, object]:
        return ("status", item)

    def parsers() -> Normalizer:
        return Normalizer(
            {"binance": make_parser("binance", None), "okx": make_parser("okx", None)}
        )

    one_by_one, batched = parsers(), parsers()
    expected = [
        kv
        for item in batch
        for kv in (one_by_one(item) if isinstance(item, RawFrame) else [keyed(item)])
    ]
    assert batched.batch(batch, keyed) == expected
    assert batched.stats == one_by_one.stats
    assert batched.stats["binance"].dead_letters == batched.stats["deribit"].dead_letters == 1
    assert batched.batch([], keyed) == [] and batched.stats == one_by_one.stats
