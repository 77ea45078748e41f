"""The fused per-symbol pipeline (operators/symbol_pipeline.py) keeps the keyed steps'
guards: a failing call is a dead letter and the key keeps running; a book failing half way
is cleared and resynced; a state that cannot be pickled or read costs only its key."""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import user_ops
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main
from test_stateful_guards import TRADE, BuggyBuilder, BuggyKeeper

from candlewax.config import parse_config
from candlewax.schema import now_us
from flows.pipeline import build_flow, build_normalizer, pipeline_settings
from operators.events import DepthMsg
from operators.symbol_pipeline import PipelineSettings, SymbolPipeline, SymbolPipelines
from sources.frames import RawFrame

SEC = 1_000_000
KEY = "binance:BTC/USDT"


def settings(**changes: Any) -> PipelineSettings:
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "symbols": ["BTC/USDT"]}],
            "operators": {"ohlcv": {"intervals": ["1s"]}},
            "sinks": [{"type": "null"}],
        },
        env={},
    )
    base = pipeline_settings(cfg)
    return PipelineSettings(**{**base.__dict__, **changes})


def buggy_bars(*broken: str) -> SymbolPipeline:
    def make(venue: str, symbol: str) -> BuggyBuilder:
        builder = BuggyBuilder(venue, symbol, ["1s"])
        builder.broken = set(broken)
        return builder

    pipe = SymbolPipeline(KEY, settings(make_bars=make, wall_clock_close=True))
    pipe.on_items([TRADE], [])
    return pipe


def test_a_failing_timer_is_a_dead_letter_and_no_spin() -> None:
    pipe = buggy_bars("on_time")
    assert pipe.due() is not None
    (dead,) = pipe.on_time(TRADE["ts_exchange"] + 5 * SEC)
    assert dead["reason"] == "ohlcv on_notify failed: RuntimeError: bug in on_time"
    assert pipe.due() is None  # no wake-up that would fail again at once
    assert isinstance(pipe.bars, BuggyBuilder)
    pipe.bars.broken.clear()
    later = {**TRADE, "trade_id": "2", "ts_exchange": TRADE["ts_exchange"] + SEC}
    out = pipe.on_items([later], [])
    assert [r["type"] for r in out] == ["trade", "bar"]  # the key goes on
    assert pipe.due() is not None


def test_failing_wakeup_query_and_eof_are_dead_letters() -> None:
    pipe = buggy_bars("next_wakeup", "flush")
    assert pipe.due() is None
    assert [r["reason"] for r in pipe.on_eof(True)] == [
        "wake-up query failed: RuntimeError: bug in next_wakeup",
        "ohlcv on_eof failed: RuntimeError: bug in flush",
    ]


def okx(kind: str, seq: int, prev: int | None, bids: list[tuple[str, str]]) -> DepthMsg:
    return DepthMsg("okx", "BTC/USDT", kind, bids, [], None, seq, prev, None, 1, 1)


def test_a_book_failing_mid_message_is_cleared_and_resyncs() -> None:
    pipe = SymbolPipeline("okx:BTC/USDT", settings(make_book=BuggyKeeper))
    out = pipe.on_items([], [okx("snapshot", 1, None, [("99", "1")]), okx("update", 2, 1, [])])
    assert [r.get("event", r["type"]) for r in out] == ["dead_letter", "error", "resync_requested"]
    assert out[0]["reason"] == "book failed: RuntimeError: bug in _emit"
    assert pipe.book is not None and not pipe.book.synced
    out = pipe.on_items([], [okx("snapshot", 5, None, [("98", "1")])])
    assert [r.get("event", r["type"]) for r in out] == ["resynced", "bbo", "book"]


def test_a_state_that_cannot_be_pickled_costs_only_its_key() -> None:
    pipes = SymbolPipelines(build_normalizer_for_tests(), settings())
    pipes.pipeline(KEY).on_items([TRADE], [])
    lock: Any = threading.Lock()  # a future parser leaves something unpicklable buffered
    diff = DepthMsg("binance", "ETH/USDT", "update", [("1", "1")], [], 10, 11, None, None, 1, 1)
    pipes.pipeline("binance:ETH/USDT").on_items([], [diff._replace(conn_id=lock)])
    snapshot = pipes.snapshot()
    (dead,) = [r for _, r in pipes.on_batch([])]
    assert dead["reason"].startswith("snapshot of binance:ETH/USDT (its state will not survive")
    resumed = SymbolPipelines(build_normalizer_for_tests(), settings())
    resumed.restore(snapshot)
    assert list(resumed.pipelines) == [KEY]
    assert resumed.pipelines[KEY].bars is not None and resumed.pipelines[KEY].bars.trades == 1


def test_a_state_that_cannot_be_read_is_a_dead_letter_and_starts_afresh() -> None:
    pipes = SymbolPipelines(build_normalizer_for_tests(), settings())
    pipes.restore(pickle.dumps({KEY: b"not a pickle", "binance:ETH/USDT": pickle.dumps(3)}))
    reasons = sorted(r["reason"] for _, r in pipes.on_batch([]))
    assert reasons[0].startswith("restore of binance:BTC/USDT failed: UnpicklingError")
    assert reasons[1].startswith("restore of binance:ETH/USDT failed: TypeError")
    assert pipes.pipelines == {}
    broken = SymbolPipelines(build_normalizer_for_tests(), settings())
    broken.restore(b"garbage")
    (dead,) = [r for _, r in broken.on_batch([])]
    assert dead["reason"].startswith("restore failed: UnpicklingError")


def build_normalizer_for_tests() -> Any:
    cfg = parse_config(
        {"sources": [{"venue": "binance", "symbols": ["BTC/USDT"]}], "sinks": [{"type": "null"}]},
        env={},
    )
    return build_normalizer(cfg)


# ---- timers through the source partition's next_awake ----


class _OpenPartition(StatefulSourcePartition[Any, None]):
    """Emits the frames, then stays open (nothing to read) until a final bar is out, so
    that only a timer of the fused partition can have closed the window."""

    def __init__(self, frames: list[RawFrame], out: list[Any], seen: threading.Event) -> None:
        self.frames, self.out, self.seen = frames, out, seen
        self.sent = False
        self.give_up = datetime.now(UTC) + timedelta(seconds=120)

    def next_batch(self) -> list[Any]:
        if not self.sent:
            self.sent = True
            return list(self.frames)
        if any(r["type"] == "bar" and r["final"] for r in self.out):
            self.seen.set()
            raise StopIteration
        if datetime.now(UTC) > self.give_up:
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        if not self.sent:
            return None
        return datetime.now(UTC) + timedelta(seconds=2)  # the pipelines' timer is sooner

    def snapshot(self) -> None:
        return None


class _OpenSource(FixedPartitionedSource[Any, None]):
    def __init__(self, *args: Any) -> None:
        self.args = args

    def list_parts(self) -> list[str]:
        return ["only"]

    def build_part(self, step_id: str, for_part: str, resume: None) -> _OpenPartition:
        return _OpenPartition(*self.args)


def test_a_wall_clock_close_comes_from_the_partitions_timer() -> None:
    start = now_us() // 1000
    frames = [
        RawFrame(
            "binance",
            "c1",
            start * 1000,
            orjson.dumps(
                {
                    "stream": "btcusdt@trade",
                    "data": {
                        "e": "trade",
                        "E": start,
                        "s": "BTCUSDT",
                        "t": i,
                        "p": price,
                        "q": "0.5",
                        "T": start,
                        "m": False,
                        "M": True,
                    },
                }
            ).decode(),
        )
        for i, price in enumerate(["100", "101", "99"])
    ]
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "symbols": ["BTC/USDT"]}],
            "operators": {
                "ohlcv": {"intervals": ["1s"], "wall_clock_close": True, "lateness_ms": 0},
                "user": [{"path": "user_ops:collect", "channels": ["bars"]}],
            },
            "sinks": [{"type": "null"}],
        },
        env={},
    )
    user_ops.COLLECTED.clear()
    closed_while_open = threading.Event()
    run_main(build_flow(cfg, source=_OpenSource(frames, user_ops.COLLECTED, closed_while_open)))  # type: ignore[no-untyped-call]
    assert closed_while_open.is_set()  # closed by the timer, before the end of the stream
    (bar,) = [r for r in user_ops.COLLECTED if r["type"] == "bar"]
    assert bar["final"] and bar["trades"] == 3
    assert (bar["high"], bar["low"], bar["volume"]) == ("101", "99", "1.5")
