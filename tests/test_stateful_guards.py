"""One bad item never stops the flow: the stateful steps turn failures into dead letters and
keep each key usable. The bad values bypass the venue parsers (a user operator, or records
fed straight to the steps), as anything a future venue or user code lets through would."""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bar_reference import assert_matches, reference
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main
from flow_helpers import BTC_SPOT, run_replay
from user_ops import POISONED

from candlewax.config import BookConfig, DedupeConfig, parse_config
from candlewax.schema import make_trade, now_us, validate_record
from flows.stateful import book_logic, dedupe_logic, ohlcv_logic
from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.ohlcv import BarBuilder

SEC = 1_000_000
LENGTH = {"1s": SEC, "1m": 60 * SEC}
Record = dict[str, Any]


def ohlcv_config(recovery: Path | None = None, **ohlcv: Any) -> Any:
    data: dict[str, Any] = {
        "sources": [{"venue": "binance", "symbols": ["BTC/USDT"]}],
        "operators": {"ohlcv": {"intervals": ["1s"], **ohlcv}},
        "sinks": [{"type": "stdout"}],
    }
    if recovery is not None:
        data["recovery"] = {"dir": str(recovery)}
    return parse_config(data, env={})


# ---- the whole replay flow ----


def test_replay_survives_unusable_prices_and_loses_no_other_bar(tmp_path: Path) -> None:
    # "1e400" once cost its window and the batch's other bars, and crashed the run (a Rust
    # panic) when its window was still open at the end of the replay.
    ops = {
        "user": [{"path": "user_ops:poison_prices", "channels": ["trades"]}],
        "ohlcv": {"intervals": ["1s", "1m"]},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    dead = out["dead_letter"]
    assert len(dead) == len(POISONED)
    for record, trade_id in zip(dead, POISONED, strict=True):
        validate_record(record)
        assert record["reason"].startswith("ohlcv: malformed trade for BTC/USDT")
        assert "1e400" in record["reason"] and trade_id in record["raw"]
    good = [t for t in out["trades"] if t["trade_id"] not in POISONED]
    assert len(good) == len(out["trades"]) - 2 == 9755
    bars = out["bars"]
    assert all(b["final"] for b in bars)
    for label, length in LENGTH.items():
        ref = reference(good, length)
        mine = {b["start"]: b for b in bars if b["interval"] == label}
        assert set(mine) == set(ref)
        for start, bar in mine.items():
            assert_matches(bar, ref[start], length)


def test_a_user_operators_dead_letter_is_not_taken_for_a_trade(tmp_path: Path) -> None:
    ops = {
        "user": [{"path": "user_ops:explode_on_one", "channels": ["trades"]}],
        "ohlcv": {"intervals": ["1m"]},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    (dead,) = out["dead_letter"]  # the user operator's, not a second "malformed trade"
    assert "user_ops:explode_on_one raised RuntimeError" in dead["reason"]
    assert sum(b["trades"] for b in out["bars"]) == 9757


# ---- a live-style run: windows closed on the wall clock by on_notify ----


class _UntilClosed(StatefulSourcePartition[tuple[str, Record], None]):
    """Emits the trades, then keeps the stream open until a final bar is out (or a
    generous limit), so that only on_notify can have closed the window."""

    def __init__(self, trades: list[Record], out: list[Any], seen: threading.Event) -> None:
        self.trades = trades
        self.out = out
        self.seen = seen
        self.sent = False
        self.give_up = datetime.now(UTC) + timedelta(seconds=120)

    def next_batch(self) -> list[tuple[str, Record]]:
        if not self.sent:
            self.sent = True
            return [("binance:BTC/USDT", trade) for trade in self.trades]
        if any(r["type"] == "bar" and r["final"] for _, r in self.out):
            self.seen.set()
            raise StopIteration
        if datetime.now(UTC) > self.give_up:
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(milliseconds=50)

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[tuple[str, Record], None]):
    def __init__(self, *args: Any) -> None:
        self.args = args

    def list_parts(self) -> list[str]:
        return ["only"]

    def build_part(self, step_id: str, for_part: str, resume: None) -> _UntilClosed:
        return _UntilClosed(*self.args)


def test_live_wall_clock_close_survives_an_unusable_price() -> None:
    start = now_us()
    trades = [
        make_trade("binance", "BTC/USDT", start + i, start, str(i), price, "0.5", "buy")
        for i, price in enumerate(["100", "101", "1e400", "99", "100.5"])
    ]
    out: list[Any] = []
    closed_while_open = threading.Event()
    flow = Dataflow("live_guard")
    stream = op.input("in", flow, _Source(trades, out, closed_while_open))
    cfg = ohlcv_config(wall_clock_close=True, lateness_ms=0)
    bars = op.stateful_batch("ohlcv", stream, ohlcv_logic(cfg))
    op.output("out", bars, TestingSink(out))
    run_main(flow)
    records = [r for _, r in out]
    assert closed_while_open.is_set()  # the window closed on the clock, not at the end
    (dead,) = [r for r in records if r["type"] == "dead_letter"]
    assert "1e400" in dead["reason"]
    (bar,) = [r for r in records if r["type"] == "bar"]
    assert bar["final"] and bar["trades"] == 4
    assert (bar["high"], bar["low"], bar["volume"]) == ("101", "99", "2")


# ---- each callback of each step, fed directly ----

TRADE = make_trade("binance", "BTC/USDT", 1_723_161_255_342_000, 1, "1", "61837.63", "0.02", "buy")


class BuggyBuilder(BarBuilder):
    """A BarBuilder with a bug in the methods named in ``broken`` (a guard must catch
    what the operator does not foresee)."""

    broken: set[str]

    def _bug(self, name: str) -> None:
        if name in self.broken:
            raise RuntimeError(f"bug in {name}")

    def on_time(self, now_us: int, event_now_us: int | None = None) -> list[Record]:
        self._bug("on_time")
        return super().on_time(now_us, event_now_us)

    def next_wakeup(self) -> int | None:
        self._bug("next_wakeup")
        return super().next_wakeup()

    def flush(self) -> list[Record]:
        self._bug("flush")
        return super().flush()


def buggy_logic(*broken: str) -> Any:
    builder = BuggyBuilder("binance", "BTC/USDT", ["1s"])
    builder.broken = set(broken)
    logic = ohlcv_logic(ohlcv_config(wall_clock_close=True))(builder)
    logic.on_batch([TRADE])
    return logic


def test_a_failing_timer_is_a_dead_letter_and_no_spin() -> None:
    logic = buggy_logic("on_time")
    assert logic.notify_at() is not None
    out, _ = logic.on_notify()
    (dead,) = out
    assert dead["reason"] == "ohlcv on_notify failed: RuntimeError: bug in on_time"
    assert logic.notify_at() is None  # no wake-up that would fail again at once
    logic.builder.broken.clear()
    later = {**TRADE, "trade_id": "2", "ts_exchange": TRADE["ts_exchange"] + SEC}
    out, _ = logic.on_batch([later])
    assert [r["trades"] for r in out] == [1]  # the key goes on: the first window closes
    assert logic.notify_at() is not None


def test_failing_eof_and_wakeup_time_are_dead_letters() -> None:
    logic = buggy_logic("next_wakeup", "flush")
    assert logic.notify_at() is None
    out, _ = logic.on_eof()
    assert [r["reason"] for r in out] == [
        "ohlcv notify_at failed: RuntimeError: bug in next_wakeup",
        "ohlcv on_eof failed: RuntimeError: bug in flush",
    ]


def test_a_wakeup_time_no_datetime_can_hold_is_no_wakeup() -> None:
    logic = book_logic(BookConfig(emit_interval_ms=1000), live=True)(None)
    far = 10**19  # an int, past year 9999
    snap = DepthMsg(
        "okx", "BTC/USDT", "snapshot", [("1", "1")], [("2", "1")], None, 5, None, None, far, far
    )
    out, _ = logic.on_batch([snap])
    assert [r["type"] for r in out] == ["bbo", "book"]
    update = snap._replace(kind="update", bids=[("1.5", "1")], asks=[], prev_id=5, last_id=6)
    logic.on_batch([update])  # a change within the emit interval: a wake-up is due
    assert logic.notify_at() is None


def test_dedupe_passes_on_a_trade_it_cannot_key() -> None:
    logic = dedupe_logic(DedupeConfig())(None)
    no_id = {k: v for k, v in TRADE.items() if k != "trade_id"}
    listed = {**TRADE, "trade_id": ["1"]}  # unhashable
    out, _ = logic.on_batch([no_id, TRADE, listed, TRADE])
    assert out == [no_id, TRADE, listed]
    assert logic.deduper.unkeyed == 2


def test_ohlcv_batch_without_a_named_trade_is_one_dead_letter() -> None:
    logic = ohlcv_logic(ohlcv_config())(None)
    out, _ = logic.on_batch([{**TRADE, "venue": None}])
    (dead,) = out
    assert "no trade of the batch names its venue and symbol" in dead["reason"]
    out, _ = logic.on_batch([TRADE])  # the next good trade makes the key's builder
    assert out == [] and logic.builder is not None


def unpicklable_diff() -> DepthMsg:
    # A future venue's parser leaves something unpicklable in a buffered diff.
    lock: Any = threading.Lock()
    return DepthMsg(
        "binance", "BTC/USDT", "update", [("1", "1")], [], 10, 11, None, None, 1, 1, lock
    )


def test_a_state_that_cannot_be_pickled_is_a_dead_letter_not_a_crash() -> None:
    logic = book_logic(BookConfig(), durable=True)(None)
    logic.on_batch([unpicklable_diff()])  # buffered until the REST snapshot
    state = logic.snapshot()
    assert pickle.loads(pickle.dumps(state)) is None  # what the engine stores
    out, _ = logic.on_batch([])
    (dead,) = out
    assert dead["reason"].startswith("book snapshot (this key's state will not survive")
    fresh = book_logic(BookConfig(), durable=True)(state)
    assert fresh.keeper is None


def test_a_pickled_state_resumes_and_a_broken_one_starts_afresh(tmp_path: Path) -> None:
    logic = ohlcv_logic(ohlcv_config(recovery=tmp_path))(None)
    logic.on_batch([TRADE])
    resumed = ohlcv_logic(ohlcv_config())(logic.snapshot())
    assert resumed.builder is not None and resumed.builder.trades == 1
    broken = ohlcv_logic(ohlcv_config())(b"not a pickle")
    assert broken.builder is None
    out, _ = broken.on_batch([TRADE])
    (dead,) = [r for r in out if r["type"] == "dead_letter"]
    assert dead["reason"].startswith("ohlcv restore failed: UnpicklingError")


class BuggyKeeper(BookKeeper):
    """A BookKeeper whose output fails once, after the message changed the book."""

    bug = True

    def _emit(self, out: list[Record]) -> None:
        if self.bug:
            self.bug = False
            raise RuntimeError("bug in _emit")
        super()._emit(out)


def test_a_book_failing_mid_message_is_cleared_and_resyncs() -> None:
    def okx(kind: str, seq: int, prev: int | None, bids: list[tuple[str, str]]) -> DepthMsg:
        return DepthMsg("okx", "BTC/USDT", kind, bids, [], None, seq, prev, None, 1, 1)

    logic = book_logic(BookConfig())(BuggyKeeper("okx", "BTC/USDT"))
    out, _ = logic.on_batch([okx("snapshot", 1, None, [("99", "1")]), okx("update", 2, 1, [])])
    # The book may be half-updated: dropped, and a resync asked, as after a gap.
    assert [r.get("event", r["type"]) for r in out] == ["dead_letter", "error", "resync_requested"]
    assert out[0]["reason"] == "book failed: RuntimeError: bug in _emit"
    assert logic.keeper is not None and not logic.keeper.synced
    out, _ = logic.on_batch([okx("snapshot", 5, None, [("98", "1")])])
    assert [r.get("event", r["type"]) for r in out] == ["resynced", "bbo", "book"]
