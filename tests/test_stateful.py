"""The engine adapters ask to be woken only for work they can do."""

from __future__ import annotations

import time

from candlewax.config import parse_config
from candlewax.schema import make_trade
from flows.stateful import ohlcv_logic


def logic(wall_clock_close: bool, partial: bool):  # type: ignore[no-untyped-def]
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "symbols": ["BTC/USDT"]}],
            "operators": {
                "ohlcv": {
                    "intervals": ["1m"],
                    "partial_updates": partial,
                    "wall_clock_close": wall_clock_close,
                }
            },
            "sinks": [{"type": "stdout"}],
        },
        env={},
    )
    return ohlcv_logic(cfg)(None)


TRADE = make_trade("binance", "BTC/USDT", 1_723_161_255_342_000, 1, "1", "61837.63", "0.02", "buy")


def test_no_wakeup_for_a_window_close_wall_clock_cannot_reach() -> None:
    # Replay-style: event times from 2024, no wall-clock closing. Waking for the window
    # end (in the past) would call on_notify in a loop that can never close it.
    ohlcv = logic(wall_clock_close=False, partial=True)
    out, _ = ohlcv.on_batch([TRADE])
    assert [b["final"] for b in out] == [False]  # the first in-progress update went out
    assert ohlcv.notify_at() is None  # nothing changed since: no wake-up at all
    ohlcv.on_batch([{**TRADE, "trade_id": "2"}])
    due = ohlcv.notify_at()  # a change: the next update, a second later on the wall clock
    assert due is not None and due.timestamp() > time.time()


def test_wall_clock_close_wakes_for_the_window_end() -> None:
    ohlcv = logic(wall_clock_close=True, partial=False)
    ohlcv.on_batch([TRADE])
    due = ohlcv.notify_at()
    assert due is not None and due.timestamp() * 1e6 >= 1_723_161_300_000_000
