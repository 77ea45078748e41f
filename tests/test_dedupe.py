"""Bounded trade de-duplication on real Binance BTCUSDT trades."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from binance_trades import btcusdt_trades

from operators.dedupe import Deduper

Record = dict[str, Any]


def ids(trades: list[Record]) -> list[str]:
    return [t["trade_id"] for t in trades]


def test_reconnect_overlaps_are_dropped() -> None:
    trades = btcusdt_trades()
    deduper = Deduper()
    received: list[Record] = []
    resent = 0
    # Each "connection" delivers 1000 trades; every reconnect first re-sends the
    # last 250 the previous connection already delivered (as exchanges replay on
    # resubscribe), in batches that straddle old and new trades.
    for start in range(0, len(trades), 1000):
        overlap = trades[max(0, start - 250) : start]
        resent += len(overlap)
        stream = [dict(t) for t in overlap] + trades[start : start + 1000]
        for i in range(0, len(stream), 90):
            received += deduper.filter(stream[i : i + 90])
    assert ids(received) == ids(trades)
    assert deduper.dropped == resent > 0


def test_replay_of_everything_is_dropped() -> None:
    trades = btcusdt_trades()
    deduper = Deduper()
    assert deduper.filter(trades) == trades
    assert deduper.filter(btcusdt_trades()) == []
    assert deduper.dropped == len(trades) == len(deduper)


def test_duplicates_inside_one_batch() -> None:
    trades = btcusdt_trades()[:10]
    batch = [trades[0], trades[1], trades[0], trades[2], trades[2], trades[2]]
    assert ids(Deduper().filter(batch)) == ids(trades[:3])


def test_memory_is_bounded_and_old_ids_are_forgotten() -> None:
    trades = btcusdt_trades()
    deduper = Deduper(capacity=1000)
    for i in range(0, len(trades), 128):
        deduper.filter(trades[i : i + 128])
        assert len(deduper) == min(i + 128, len(trades), 1000)
    recent = trades[-1000:]
    assert deduper.filter(recent) == []
    # The documented trade-off: an id older than the window is not recognised.
    oldest = trades[-1001]
    assert deduper.filter([oldest]) == [oldest]
    assert len(deduper) == 1000
    assert deduper.seen(trades[-999]["trade_id"])  # the window moved by one: -1000 left
    assert not deduper.seen(trades[-1000]["trade_id"])


def test_snapshot_restores_the_same_window() -> None:
    trades = btcusdt_trades()
    deduper = Deduper(capacity=3000)
    deduper.filter(trades[:5000])
    deduper.filter(trades[4990:5000])
    restored = pickle.loads(pickle.dumps(deduper))
    assert (restored.capacity, restored.dropped, len(restored)) == (3000, 10, 3000)
    assert restored.filter(trades[2000:5100]) == trades[5000:5100]
    # still bounded and forgetting in the original order after the restore
    assert len(restored) == 3000
    assert restored.filter([trades[2099]]) == [trades[2099]]  # evicts 2100
    assert restored.filter([trades[2101], trades[2100]]) == [trades[2100]]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Deduper(capacity=0)
