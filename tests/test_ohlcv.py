"""Event-time OHLCV bars on real Binance BTCUSDT trades, checked against polars."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from bar_reference import assert_matches, reference
from binance_trades import btcusdt_trades

from bench import ohlcv_baseline
from candlewax.schema import validate_record
from operators.intervals import parse_interval, parse_intervals
from operators.ohlcv import BarBuilder

SEC = 1_000_000
MIN = 60 * SEC
LENGTH = {"1s": SEC, "1m": MIN}

Record = dict[str, Any]


def run(builder: BarBuilder, trades: list[Record], batch: int = 100) -> list[list[Record]]:
    """Feed trades in batches (caller clock = capture receive time), then flush."""
    calls = []
    for i in range(0, len(trades), batch):
        chunk = trades[i : i + batch]
        calls.append(builder.on_trades(chunk, now_us=chunk[-1]["ts_ingest"]))
    calls.append(builder.flush())
    return calls


def finals(calls: list[list[Record]], label: str) -> dict[int, Record]:
    bars: dict[int, Record] = {}
    for out in calls:
        for rec in out:
            if rec["type"] == "bar" and rec["final"] and rec["interval"] == label:
                assert rec["start"] not in bars, "a window closed twice"
                bars[rec["start"]] = rec
    return bars


def assert_call_order(out: list[Record]) -> None:
    """Late records, then final bars, then partials; bars by interval length, then start."""
    kinds = [0 if r["type"] != "bar" else 1 if r["final"] else 2 for r in out]
    assert kinds == sorted(kinds)
    for final in (True, False):
        keys = [
            (LENGTH[r["interval"]], r["start"])
            for r in out
            if r["type"] == "bar" and r["final"] is final
        ]
        assert keys == sorted(keys)


def builder(**options: Any) -> BarBuilder:
    return BarBuilder("binance", "BTC/USDT", ["1m", "1s"], **options)


def test_bars_equal_polars_recomputation() -> None:
    trades = btcusdt_trades()
    bars = builder()
    calls = run(bars, trades)
    for out in calls:
        assert_call_order(out)
        for rec in out:
            validate_record(rec)
            assert rec["type"] == "bar" and rec["final"]
    assert (bars.trades, bars.late, bars.malformed) == (len(trades), 0, 0)
    for label, length in LENGTH.items():
        got, ref = finals(calls, label), reference(trades, length)
        assert got.keys() == ref.keys()
        for start, row in ref.items():
            assert_matches(got[start], row, length)
    # 346 s of trades from 23:54:15 to 00:00:01: 345 busy seconds, 7 minutes
    assert (len(finals(calls, "1s")), len(finals(calls, "1m"))) == (345, 7)


def test_batching_does_not_change_bars() -> None:
    trades = btcusdt_trades()[:2000]

    def bars_with(batch: int) -> list[Record]:
        calls = run(builder(lateness_us=SEC), trades, batch)
        return sorted(
            (r for out in calls for r in out), key=lambda r: (LENGTH[r["interval"]], r["start"])
        )

    whole = bars_with(len(trades))
    assert whole == bars_with(1) == bars_with(37)
    assert len(whole) > 60


def test_late_trades_reported_and_excluded_within_lateness_included() -> None:
    trades = btcusdt_trades()
    t0 = trades[0]["ts_exchange"]
    first_minute_end = t0 - t0 % MIN + MIN
    late_all = [
        t for i, t in enumerate(trades) if i % 40 == 0 and t["ts_exchange"] < first_minute_end
    ]
    # one trade 20-30 s into the third minute: late for its second only
    third = first_minute_end + MIN
    late_1s = next(t for t in trades if third + 20 * SEC <= t["ts_exchange"] < third + 30 * SEC)
    moved = {t["trade_id"] for t in late_all} | {late_1s["trade_id"]}

    # Shuffle inside 1.5 s blocks of event time: out of order across window
    # boundaries, but always by less than the 2 s lateness.
    rng = random.Random(7)
    blocks: dict[int, list[Record]] = {}
    for t in trades:
        if t["trade_id"] not in moved:
            blocks.setdefault(t["ts_exchange"] // 1_500_000, []).append(t)
    arrival: list[Record] = []
    for key in sorted(blocks):
        rng.shuffle(blocks[key])
        arrival += blocks[key]
    assert arrival != sorted(arrival, key=lambda t: t["ts_exchange"])
    threshold = late_1s["ts_exchange"] + 3_500_000
    at = next(i for i, t in enumerate(arrival) if t["ts_exchange"] >= threshold)
    arrival.insert(at + 1, late_1s)
    arrival += late_all

    bars = builder(lateness_us=2 * SEC)
    calls = run(bars, arrival, batch=64)
    late = [r for out in calls for r in out if r["type"] == "late"]
    for rec in late:
        validate_record(rec)
    expected = [
        ("1s", t["ts_exchange"] - t["ts_exchange"] % SEC, late_1s["trade_id"]) for t in [late_1s]
    ]
    for t in late_all:
        for label, length in (("1s", SEC), ("1m", MIN)):
            expected.append((label, t["ts_exchange"] - t["ts_exchange"] % length, t["trade_id"]))
    assert [(r["interval"], r["window_start"], r["trade"]["trade_id"]) for r in late] == expected
    assert all(r["trade"] in arrival for r in late)
    assert bars.late == len(expected)

    on_time_1s = [t for t in arrival if t["trade_id"] not in moved]
    on_time_1m = [t for t in arrival if t not in late_all]
    for label, kept in (("1s", on_time_1s), ("1m", on_time_1m)):
        got, ref = finals(calls, label), reference(kept, LENGTH[label])
        assert got.keys() == ref.keys()
        for start, row in ref.items():
            assert_matches(got[start], row, LENGTH[label])


def gapped_trades() -> tuple[list[Record], int]:
    """The capture without its fourth minute; its two naturally empty seconds stay."""
    trades = btcusdt_trades()
    t0 = trades[0]["ts_exchange"]
    gap = t0 - t0 % MIN + 3 * MIN
    return [t for t in trades if not gap <= t["ts_exchange"] < gap + MIN], gap


def test_empty_bar_fill() -> None:
    trades, gap = gapped_trades()
    plain = run(builder(), trades)
    calls = run(builder(fill_empty=True), trades)
    for out in calls:
        assert_call_order(out)
    for label, length in LENGTH.items():
        real = finals(plain, label)
        got = finals(calls, label)
        starts = sorted(got)
        assert starts == list(range(starts[0], starts[-1] + length, length))
        assert set(real) <= set(got)
        for previous, start in pairwise(starts):
            bar = got[start]
            validate_record(bar)
            if start in real:
                assert bar == real[start]
                continue
            close = got[previous]["close"]
            assert bar["filled"] and bar["final"]
            assert bar["open"] == bar["high"] == bar["low"] == bar["close"] == close
            assert bar["volume"] == bar["quote_volume"] == "0"
            assert bar["buy_volume"] == bar["sell_volume"] == "0"
            assert (bar["trades"], bar["vwap"], bar["first_trade_id"]) == (0, None, None)
        filled = sorted(s for s in got if s not in real)
        if label == "1m":
            assert filled == [gap]
        else:
            assert len(filled) == 60 + 2
            assert set(range(gap, gap + MIN, SEC)) <= set(filled)


def test_fill_skips_gaps_over_the_cap() -> None:
    trades, gap = gapped_trades()
    bars = builder(fill_empty=True, max_fill_windows=10)
    calls = run(bars, trades)
    got, real = finals(calls, "1s"), finals(run(builder(), trades), "1s")
    assert sorted(s for s in got if s not in real and gap <= s < gap + MIN) == []
    assert len(got) == len(real) + 2  # the two short natural gaps are still filled
    assert bars.fill_skipped >= 60
    assert gap in finals(calls, "1m")


def test_partial_updates_are_rate_limited_and_exact() -> None:
    period = 2 * SEC
    trades = btcusdt_trades()[:3000]
    # windows stay open 5 s after their end: unchanged ones must not be re-sent
    bars = builder(partial_every_us=period, lateness_us=5 * SEC)
    fed: list[Record] = []
    emitted_at: list[int] = []
    previous: dict[tuple[str, int], Record] = {}
    closed: set[tuple[str, int]] = set()
    for i in range(0, len(trades), 25):
        chunk = trades[i : i + 25]
        fed += chunk
        now = chunk[-1]["ts_ingest"]
        out = bars.on_trades(chunk, now)
        assert_call_order(out)
        closed |= {(r["interval"], r["start"]) for r in out if r["final"]}
        partials = [r for r in out if not r["final"]]
        if partials:
            emitted_at.append(now)
        for bar in partials:
            validate_record(bar)
            key = (bar["interval"], bar["start"])
            assert key not in closed
            length = LENGTH[bar["interval"]]
            window = [t for t in fed if bar["start"] <= t["ts_exchange"] < bar["end"]]
            assert_matches(bar, reference(window, length)[bar["start"]], length)
            if key in previous:  # only windows that changed since their last update
                assert previous[key]["trades"] != bar["trades"]
            previous[key] = bar
    assert len(emitted_at) >= 20
    assert all(later - earlier >= period for earlier, later in pairwise(emitted_at))
    # the 1s windows close fast; the 1m window is updated repeatedly while open
    assert sum(1 for label, _ in previous if label == "1m") <= 3
    assert max(b["trades"] for b in previous.values()) > 100


def test_on_time_advances_watermark_in_a_quiet_market() -> None:
    trades = btcusdt_trades()
    t0 = trades[0]["ts_exchange"]
    first = [t for t in trades if t["ts_exchange"] < t0 - t0 % SEC + 3 * SEC]
    lateness = SEC // 2
    bars = builder(lateness_us=lateness, fill_empty=True)
    now = first[-1]["ts_ingest"]
    bars.on_trades(first, now)
    wake = bars.next_wakeup()
    assert wake is not None
    assert bars.on_time(now) == []
    assert bars.on_time(now, event_now_us=wake - 1) == []
    out = bars.on_time(now, event_now_us=wake)
    assert [(r["interval"], r["end"], r["filled"]) for r in out] == [("1s", wake - lateness, False)]

    quiet_until = wake + 10 * SEC
    out = bars.on_time(now, event_now_us=quiet_until)
    assert out and all(r["interval"] == "1s" and r["filled"] for r in out)
    assert out[-1]["end"] <= quiet_until - lateness < out[-1]["end"] + SEC
    assert bars.next_wakeup() == out[-1]["end"] + SEC + lateness
    # a trade for a window the watermark passed is late, even though no trade closed it
    straggler = dict(first[-1], trade_id="straggler", ts_exchange=out[0]["start"])
    late = bars.on_trades([straggler], now)
    assert [(r["type"], r["interval"]) for r in late] == [("late", "1s")]


def test_window_closes_when_watermark_reaches_its_end() -> None:
    sample = btcusdt_trades()[0]
    start = sample["ts_exchange"] - sample["ts_exchange"] % MIN
    lateness = 250_000

    def at(ts: int, trade_id: str) -> Record:
        return dict(sample, ts_exchange=ts, trade_id=trade_id)

    bars = builder(lateness_us=lateness)
    assert bars.on_trades([at(start + MIN - 1, "a"), at(start + MIN + lateness - 1, "b")], 0) == []
    # "d" moves the watermark onto the end: "c" before it counts, "e" after it is late
    batch = [at(start + MIN - 1, "c"), at(start + MIN + lateness, "d"), at(start + MIN - 1, "e")]
    out = bars.on_trades(batch, 0)
    assert [(r["type"], r.get("interval"), r.get("start", r.get("window_start"))) for r in out] == [
        ("late", "1s", start + MIN - SEC),
        ("late", "1m", start),
        ("bar", "1s", start + MIN - SEC),
        ("bar", "1m", start),
    ]
    assert out[2]["trades"] == out[3]["trades"] == 2
    assert out[2]["last_trade_id"] == "c"
    out = bars.on_trades([at(start + MIN - 1, "f")], 0)
    assert [(r["type"], r["trade"]["trade_id"]) for r in out] == [("late", "f"), ("late", "f")]


def test_flush_closes_everything_and_later_trades_are_late() -> None:
    trades = btcusdt_trades()[:500]
    bars = builder(lateness_us=10 * MIN)
    assert bars.on_trades(trades, 0) == []
    out = bars.flush()
    assert all(r["final"] for r in out) and {r["interval"] for r in out} == {"1s", "1m"}
    assert finals([out], "1m")
    assert bars.flush() == []
    again = bars.on_trades([trades[-1]], 0)
    assert [(r["type"], r["interval"]) for r in again] == [("late", "1s"), ("late", "1m")]


def test_malformed_trades_become_dead_letters() -> None:
    good = btcusdt_trades()[:50]
    sample = good[0]
    broken: list[Any] = [
        dict(sample, price="abc"),
        dict(sample, price="NaN"),
        dict(sample, ts_exchange=-5),
        dict(sample, ts_exchange="123"),
        dict(sample, side="bid"),
        {k: v for k, v in sample.items() if k != "size"},
        None,
    ]
    bars = builder()
    out = bars.on_trades(good[:25] + broken + good[25:], 0) + bars.flush()
    dead = [r for r in out if r["type"] == "dead_letter"]
    assert len(dead) == len(broken) == bars.malformed
    for rec in dead:
        validate_record(rec)
        assert rec["reason"].startswith("ohlcv: malformed trade")
    clean = [rec for call in run(builder(), good) for rec in call]
    assert [r for r in out if r["type"] == "bar"] == clean


def test_pickled_mid_stream_continues_identically() -> None:
    trades = btcusdt_trades()[:4000]
    options = {"lateness_us": SEC, "fill_empty": True, "partial_every_us": 3 * SEC}
    whole = run(builder(**options), trades)
    first = builder(**options)
    head = [
        first.on_trades(trades[i : i + 100], trades[i + 99]["ts_ingest"])
        for i in range(0, 2000, 100)
    ]
    restored = pickle.loads(pickle.dumps(first))
    assert head + run(restored, trades[2000:]) == whole
    assert restored.trades == len(trades)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("250ms", 1_000), ("1s", SEC), ("5m", 5 * MIN), ("1h", 60 * MIN), ("1d", 1440 * MIN)],
)
def test_parse_interval(text: str, micros: int) -> None:
    assert parse_interval(text) == (250 * micros if text == "250ms" else micros)


@pytest.mark.parametrize("text", ["", "1", "1w", "0s", "-1s", "1.5m", " 1m", "1M", "m", None])
def test_bad_interval_is_a_clear_error(text: Any) -> None:
    with pytest.raises(ValueError, match="bad bar interval"):
        parse_interval(text)
    with pytest.raises(ValueError, match="bad bar interval"):
        BarBuilder("binance", "BTC/USDT", ["1s", text])


def test_interval_lists() -> None:
    assert parse_intervals(["1h", "1s", "5m"]) == [("1s", SEC), ("5m", 5 * MIN), ("1h", 60 * MIN)]
    with pytest.raises(ValueError, match="same length"):
        parse_intervals(["1m", "60s"])
    with pytest.raises(ValueError, match="no bar intervals"):
        parse_intervals([])


# Values a venue parser might let through that no window can hold exactly: each must cost
# its own trade (a dead letter) and nothing else.
UNUSABLE = [
    {"price": "1e400"},
    {"size": "1e400"},
    {"price": "1" + "0" * 30},  # 1e30: above the exact range
    {"size": "0." + "0" * 30 + "1"},  # below it
    {"price": "NaN"},
    {"price": "Infinity"},
    {"size": "-0.5"},
    {"price": ""},
    {"price": " 61837.63"},
    {"price": 61837.63},
    {"ts_exchange": 10**19},  # past year 9999: no wake-up time could hold its window
    {"trade_id": 3735683259},
]


@pytest.mark.parametrize("options", [{}, {"partial_every_us": SEC, "fill_empty": True}])
def test_one_unusable_trade_costs_only_itself(options: dict[str, Any]) -> None:
    trades = btcusdt_trades()[:2500]  # 30 busy seconds: 30 one-second bars, 2 minutes
    clean = run(builder(**options), trades)
    assert len(finals(clean, "1s")) >= 30
    poisoned: list[Record] = []
    for i, trade in enumerate(trades):
        poisoned.append(trade)
        if i % 200 == 100:  # mid-window, where the old code took its whole window down
            poisoned.append({**trade, "trade_id": "bad", **UNUSABLE[(i // 200) % len(UNUSABLE)]})
    bars = builder(**options)
    out = [r for call in run(bars, poisoned) for r in call]
    dead = [r for r in out if r["type"] == "dead_letter"]
    assert len(dead) == len(poisoned) - len(trades) == bars.malformed == len(UNUSABLE)
    assert all(d["reason"].startswith("ohlcv: malformed trade for BTC/USDT") for d in dead)
    for label in LENGTH:
        assert finals([out], label) == finals(clean, label)
    assert not [r for r in out if r["type"] not in ("bar", "dead_letter")]
    for rec in out:
        validate_record(rec)


def test_a_window_that_cannot_render_is_dropped_alone() -> None:
    # A window restored from an older version's state may hold a value the bars cannot
    # render (a 1e400 price once crashed the run; here a NaN in the Decimal builder's
    # state, which the conversion to ints keeps): its close is one dead letter, and the
    # windows after it still close.
    trades = btcusdt_trades()[:2500]
    old = ohlcv_baseline.BarBuilder("binance", "BTC/USDT", ["1m", "1s"])
    first = old.on_trades(trades[:1000], 0)
    interval = old._intervals[0]  # 1s
    start = max(interval.windows)
    interval.windows[start].quote = Decimal("NaN")
    # protocol 2 names classes as text: point them at the current module
    state = pickle.dumps(old, protocol=2).replace(b"bench.ohlcv_baseline", b"operators.ohlcv")
    bars = pickle.loads(state)
    assert isinstance(bars, BarBuilder)
    out = first + bars.on_trades(trades[1000:], 0) + bars.flush()
    (dead,) = [r for r in out if r["type"] == "dead_letter"]
    validate_record(dead)
    assert f"bar 1s {start} of BTC/USDT cannot be rendered" in dead["reason"]
    whole = run(builder(), trades)
    for label in LENGTH:
        expected = finals(whole, label)
        if label == "1s":
            del expected[start]
        assert finals([out], label) == expected
