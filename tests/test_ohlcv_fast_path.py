"""The BarBuilder's shortcuts (a trade in time everywhere goes straight into the finest
window; windows close only once the watermark reaches the next due end) change nothing:
trades one at a time, and in lists with the dedupe step before them, give the records
of the Decimal builder (bench/ohlcv_baseline.py, the version before the scaled
integers), byte for byte, on the random streams of test_ohlcv_integers and on the real
Binance trades, whose bars also equal the independent recomputation."""

from __future__ import annotations

import pickle
import random
from typing import Any

import orjson
import pytest
from bar_reference import assert_matches, reference
from binance_trades import btcusdt_trades
from test_ohlcv_integers import STREAMS, random_stream

from bench import ohlcv_baseline
from operators.dedupe import Deduper
from operators.ohlcv import BarBuilder

Record = dict[str, Any]
SEC = 1_000_000


def _one_at_a_time(make: Any, trades: list[Record], intervals: list[str], **options: Any) -> bytes:
    builder = make("binance", "X/Y", intervals, **options)
    out: list[Record] = []
    for i, trade in enumerate(trades):
        out += builder.on_trades(
            [trade], trade.get("ts_ingest", 0) if isinstance(trade, dict) else 0
        )
        if i % 97 == 0:
            out.append({"wakeup": builder.next_wakeup(), "partial": builder.next_partial()})
            out += builder.open_bars()
        if i == len(trades) // 2 and make is BarBuilder:
            builder = pickle.loads(pickle.dumps(builder))
        if i == 2 * len(trades) // 3:
            out += builder.flush()  # later trades: in time for the finest, late for others
    return orjson.dumps(out + builder.flush())


@pytest.mark.parametrize(("seed", "intervals", "options"), STREAMS)
def test_one_trade_at_a_time_equals_the_decimal_builder(
    seed: int, intervals: list[str], options: dict[str, Any]
) -> None:
    trades = random_stream(random.Random(seed), [1, 1000, 250_000][seed % 3])
    ours = _one_at_a_time(BarBuilder, trades, intervals, **options)
    assert ours == _one_at_a_time(ohlcv_baseline.BarBuilder, trades, intervals, **options)
    assert b'"type":"late"' in ours and b'"type":"bar"' in ours


def test_quiet_market_closes_by_on_time_only_when_due() -> None:
    builder = BarBuilder("binance", "X/Y", ["1s", "1m"], lateness_us=0, fill_empty=True)
    trade = {
        "ts_exchange": 5 * SEC + 1,
        "trade_id": "1",
        "price": "2.5",
        "size": "1",
        "side": "buy",
        "ts_ingest": 0,
    }
    assert builder.on_trades([trade], 0) == []
    assert builder.on_time(0, 6 * SEC - 1) == []  # the 1s window ends at 6 s
    bars = builder.on_time(0, 8 * SEC)  # its bar, then two filled ones
    assert [(b["start"], b["filled"]) for b in bars] == [
        (5 * SEC, False),
        (6 * SEC, True),
        (7 * SEC, True),
    ]
    later = dict(trade, ts_exchange=8 * SEC + 5, trade_id="2")
    assert builder.on_trades([later], 0) == []
    assert [
        b["start"] for b in builder.on_trades([dict(later, ts_exchange=9 * SEC, trade_id="3")], 0)
    ] == [8 * SEC]


def test_real_trades_in_lists_after_dedupe_equal_the_recomputation() -> None:
    trades = btcusdt_trades()
    resent = trades[1000:1200]  # a reconnect re-sends a stretch
    stream = trades[:1200] + [dict(t) for t in resent] + trades[1200:]
    deduper = Deduper()
    builder = BarBuilder("binance", "BTC/USDT", ["1s", "1m"], lateness_us=2 * SEC)
    out: list[Record] = []
    for i in range(0, len(stream), 37):
        out += builder.on_trades(deduper.filter(stream[i : i + 37]), 0)
    out += builder.flush()
    assert deduper.dropped == len(resent)
    for label, length in (("1s", SEC), ("1m", 60 * SEC)):
        bars = [r for r in out if r["type"] == "bar" and r["interval"] == label]
        expected = reference(trades, length)
        assert [b["start"] for b in bars] == sorted(expected)
        for bar in bars:
            assert_matches(bar, expected[bar["start"]], length)
