"""The integer BarBuilder against an independent Decimal recomputation and, record for
record, against the Decimal builder it replaced (bench/ohlcv_baseline.py, verbatim).

The edge cases are the integer representation's own: a text with more fractional
digits than any before (the open windows are rescaled mid-window), values at the
bounds of MAX_DIGITS, trailing/leading zeros, equal values in different texts, exact
VWAP rounding ties, the cache of known texts, and a pickle of the Decimal builder.
"""

from __future__ import annotations

import pickle
import random
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import orjson
import pytest

from bench import ohlcv_baseline
from candlewax.schema import decimal_text, make_trade, validate_record
from operators import ohlcv
from operators.ohlcv import MAX_DIGITS, BarBuilder

Record = dict[str, Any]
SEC = 1_000_000
T0 = 1_723_161_255_000_000


def trade(i: int, ts: int, price: str, size: str, side: str = "buy") -> Record:
    return make_trade("binance", "X/Y", ts, ts, str(i), price, size, side)


def decimal_bars(trades: list[Record], length: int) -> dict[int, Record]:
    """Bars of trades that are all in time, recomputed with Decimal (list order = arrival)."""
    groups: dict[int, list[tuple[int, Record]]] = {}
    for arrival, t in enumerate(trades):
        groups.setdefault(t["ts_exchange"] // length * length, []).append((arrival, t))
    bars = {}
    with localcontext(prec=300):
        for start, rows in groups.items():
            by_time = sorted(rows, key=lambda r: (r[1]["ts_exchange"], r[0]))
            price = [Decimal(t["price"]) for _, t in rows]
            size = [Decimal(t["size"]) for _, t in rows]
            high = max(range(len(rows)), key=lambda k: (price[k], -k))
            low = min(range(len(rows)), key=lambda k: (price[k], k))
            volume = sum(size, Decimal(0))
            quote = sum((p * s for p, s in zip(price, size, strict=True)), Decimal(0))
            buy = sum((s for s, (_, t) in zip(size, rows, strict=True) if t["side"] == "buy"), 0)
            vwap = None
            if volume:
                vwap = decimal_text((quote / volume).quantize(Decimal("1e-18"), ROUND_HALF_EVEN))
            bars[start] = {
                "open": by_time[0][1]["price"],
                "close": by_time[-1][1]["price"],
                "high": rows[high][1]["price"],
                "low": rows[low][1]["price"],
                "volume": decimal_text(volume),
                "quote_volume": decimal_text(quote),
                "buy_volume": decimal_text(Decimal(buy)),
                "sell_volume": decimal_text(volume - buy),
                "vwap": vwap,
                "trades": len(rows),
                "first_trade_id": by_time[0][1]["trade_id"],
                "last_trade_id": by_time[-1][1]["trade_id"],
            }
    return bars


def feed(make: Any, trades: list[Record], batch: int = 7, **options: Any) -> list[Record]:
    builder = make("binance", "X/Y", ["1s", "1m"], **options)
    out: list[Record] = []
    for i in range(0, len(trades), batch):
        out += builder.on_trades(trades[i : i + batch], trades[i]["ts_exchange"])
    return out + builder.flush()


def assert_like_reference(trades: list[Record]) -> list[Record]:
    """No trade late (lateness covers the jitter): final bars equal the Decimal
    recomputation, and the whole output equals the old builder's, byte for byte."""
    out = feed(BarBuilder, trades, lateness_us=3600 * SEC)
    assert orjson.dumps(out) == orjson.dumps(
        feed(ohlcv_baseline.BarBuilder, trades, lateness_us=3600 * SEC)
    )
    for label, length in (("1s", SEC), ("1m", 60 * SEC)):
        bars = {r["start"]: r for r in out if r["interval"] == label}
        expected = decimal_bars(trades, length)
        assert bars.keys() == expected.keys()
        for start, bar in bars.items():
            validate_record(bar)
            assert {k: bar[k] for k in expected[start]} == expected[start]
    return out


def test_a_finer_text_mid_window_rescales_exactly() -> None:
    texts = [
        ("100.5", "1"),
        ("100.25", "0.125"),
        ("99", "2"),
        ("100.123456789012345678901234", "3.000000000000000000000001"),
        ("100.5", "0.5"),
        ("7", "0.00000000000000000000001"),
    ]
    trades = [
        trade(i, T0 + i * 100_000, p, s, "buy" if i % 2 else "sell")
        for i, (p, s) in enumerate(texts)
    ]
    # a second window that starts after the rescale, and one trade that reaches back
    trades += [trade(10, T0 + 1_500_000, "1.5", "2"), trade(11, T0 + 50_000, "3", "1.5")]
    out = assert_like_reference(trades)
    (bar,) = [r for r in out if r["interval"] == "1s" and r["start"] == T0]
    assert bar["volume"] == "8.125000000000000000000011"


def test_values_at_the_bounds_of_max_digits() -> None:
    top = "9" * MAX_DIGITS + "." + "9" * MAX_DIGITS
    tiny = "0." + "0" * (MAX_DIGITS - 1) + "1"
    texts = [(top, top), (top, tiny), (tiny, top), (tiny, tiny), (top, top), ("1", top)]
    trades = [trade(i, T0 + i, p, s) for i, (p, s) in enumerate(texts)]
    out = assert_like_reference(trades)
    assert len(out[0]["quote_volume"]) > 4 * MAX_DIGITS  # far beyond any float or prec 28


def test_zeros_equal_values_and_ties() -> None:
    texts = [
        ("100.0", "1"),
        ("100.00", "1"),  # equal to the high: the first text stays
        ("0" * 40 + "100", "1." + "0" * 40),  # leading / trailing zeros beyond MAX_DIGITS
        ("90.000", "0"),  # a zero size
        ("90.0", "1"),  # equal to the low
    ]
    trades = [trade(i, T0, p, s) for i, (p, s) in enumerate(texts)]  # all at the same time
    out = assert_like_reference(trades)
    bar = out[0]
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (
        "100.0",
        "100.0",
        "90.000",
        "90.0",
    )


@pytest.mark.parametrize(
    ("price", "vwap"),
    [
        ("0.0000000000000000025", "0.000000000000000002"),
        ("0.0000000000000000035", "0.000000000000000004"),
    ],
)
def test_vwap_ties_round_half_even(price: str, vwap: str) -> None:
    (bar,) = [r for r in assert_like_reference([trade(1, T0, price, "3")]) if r["interval"] == "1s"]
    assert bar["vwap"] == vwap


def random_text(rng: random.Random, scale_cap: int) -> str:
    whole = str(rng.choice([0, 1, rng.randrange(10**6), rng.randrange(10**MAX_DIGITS)]))
    places = rng.randrange(scale_cap + 1)
    fraction = "".join(rng.choice("0123456789") for _ in range(places))
    return whole + ("." + fraction + "0" * rng.randrange(3) if places else "")


STREAMS = [
    (seed, intervals, options)
    for seed in range(6)
    for intervals, options in [
        (["1s", "1m", "5m"], {"lateness_us": SEC, "fill_empty": True, "partial_every_us": SEC}),
        (["2s", "3s", "1m"], {"lateness_us": 0, "partial_every_us": SEC}),  # 3s: not merged
        (["1s", "1m"], {"lateness_us": 2 * SEC, "fill_empty": True, "max_fill_windows": 3}),
    ]
]


def random_stream(rng: random.Random, tick: int) -> list[Record]:
    """Out-of-order times (some late for the finest interval but not for the others) in
    steps of ``tick`` (many equal times), texts with more and more fractional digits
    (rescales), equal prices in different texts (ties across merged windows), jumps in
    time, bad trades."""
    pool = [str(rng.randrange(1, 100)) + "." + str(rng.randrange(10)) for _ in range(4)]
    trades = []
    for i in range(3000):
        cap = min(MAX_DIGITS, i // 300)
        ts = T0 + i * 20_000 + rng.randrange(-3 * SEC, SEC) + (rng.random() < 0.01) * 130 * SEC
        ts -= ts % tick
        price = rng.choice(pool) + rng.choice(["", "0", "00"])
        if rng.random() < 0.3:
            price = random_text(rng, cap)
        side = rng.choice(["buy", "sell"])
        trades.append(trade(i, max(ts, 0), price, random_text(rng, cap), side))
        if rng.random() < 0.02:
            trades.append(dict(trades[-1], price=rng.choice(["-1", "1e5", "", "1.", ".5"])))
    return trades


@pytest.mark.parametrize(("seed", "intervals", "options"), STREAMS)
def test_random_streams_equal_the_decimal_builder(
    seed: int, intervals: list[str], options: dict[str, Any]
) -> None:
    """Random batches, a pickle half way, on_time, open_bars and a flush mid-stream (the
    trades after it are in time for the finest interval but late for the others): the
    records equal the old builder's, byte for byte."""
    trades = random_stream(random.Random(seed), [1, 1000, 250_000][seed % 3])
    outputs = []
    for make in (BarBuilder, ohlcv_baseline.BarBuilder):
        steps = random.Random(seed)  # the same batches and calls for both
        builder = make("binance", "X/Y", intervals, **options)
        out: list[Record] = []
        i = 0
        pickled = flushed = False
        while i < len(trades):
            n = steps.randrange(1, 200)
            out += builder.on_trades(trades[i : i + n], trades[i]["ts_ingest"])
            i += n
            out.append({"wakeup": builder.next_wakeup(), "partial": builder.next_partial()})
            if steps.random() < 0.1:
                ts = trades[min(i, len(trades) - 1)]["ts_exchange"]
                out += builder.on_time(ts + steps.randrange(SEC), ts + steps.randrange(3 * SEC))
                out += builder.open_bars()
            if i > len(trades) // 2 and not pickled:
                if make is BarBuilder:
                    builder = pickle.loads(pickle.dumps(builder))
                pickled = True
            if i > 2 * len(trades) // 3 and not flushed:
                out += builder.flush()
                flushed = True
        outputs.append(orjson.dumps(out + builder.flush()))
    assert outputs[0] == outputs[1]
    assert b'"type":"late"' in outputs[0] and b'"type":"dead_letter"' in outputs[0]


def test_a_pickle_of_the_decimal_builder_resumes_exactly() -> None:
    """State written by the version before: its Decimal windows are converted on load."""
    rng = random.Random(7)
    trades = [
        trade(i, T0 + i * 50_000, random_text(rng, 6), random_text(rng, 9)) for i in range(400)
    ]
    old = ohlcv_baseline.BarBuilder("binance", "X/Y", ["1s", "1m"], partial_every_us=SEC)
    head = old.on_trades(trades[:250], 0)
    # protocol 2 names classes as text: point them at the current module
    data = pickle.dumps(old, protocol=2).replace(b"bench.ohlcv_baseline", b"operators.ohlcv")
    restored = pickle.loads(data)
    assert isinstance(restored, BarBuilder)
    tail = restored.on_trades(trades[250:], 10 * SEC) + restored.flush()
    expected = old.on_trades(trades[250:], 10 * SEC) + old.flush()
    assert orjson.dumps(head + tail) == orjson.dumps(head + expected)


def test_the_cache_of_known_texts_is_bounded_and_holds_only_good_texts() -> None:
    ohlcv._AMOUNTS.clear()
    builder = BarBuilder("binance", "X/Y", ["1s"])
    trades = [trade(i, T0 + i, f"{i}.5", "1") for i in range(ohlcv.AMOUNT_CACHE_SIZE + 10)]
    builder.on_trades([*trades, trade(0, T0 + 10**7, "1e5", "1")], 0)
    assert 0 < len(ohlcv._AMOUNTS) <= ohlcv.AMOUNT_CACHE_SIZE
    assert "1e5" not in ohlcv._AMOUNTS and builder.malformed == 1


def both(intervals: list[str], batches: list[list[Record]], **options: Any) -> list[Record]:
    """Records of the integer builder, asserted equal to the Decimal builder's, with the
    wake-up times after each batch."""
    outputs = []
    for make in (BarBuilder, ohlcv_baseline.BarBuilder):
        builder = make("binance", "X/Y", intervals, **options)
        out: list[Record] = []
        for batch in batches:
            out += builder.on_trades(batch, batch[-1]["ts_exchange"])
            out.append({"wakeup": builder.next_wakeup(), "partial": builder.next_partial()})
        outputs.append(out + builder.flush())
    assert orjson.dumps(outputs[0]) == orjson.dumps(outputs[1])
    return outputs[0]


M = T0 - T0 % (60 * SEC)  # a minute start


def test_merged_minute_ties_between_a_closing_second_and_a_late_trade() -> None:
    """E is late for the 1s window of A (X moved the watermark past it) but in time for
    the minute, and has A's time and an equal price in another text: A arrived first, so
    A opens the minute and is its high and low; E arrived last, so E closes it."""
    a = trade(1, M + 57_500_000, "10.0", "1")
    x = trade(2, M + 60_500_000, "11", "1")
    e = trade(3, M + 57_500_000, "10.00", "2")
    out = both(["1s", "1m"], [[a, x, e]], lateness_us=2 * SEC)
    (minute,) = [r for r in out if r.get("interval") == "1m" and r["start"] == M]
    assert (minute["open"], minute["high"], minute["low"], minute["close"]) == (
        "10.0",
        "10.0",
        "10.0",
        "10.00",
    )
    assert (minute["first_trade_id"], minute["last_trade_id"], minute["trades"]) == ("1", "3", 2)


def test_a_second_merged_into_a_clean_minute_makes_it_changed() -> None:
    a = trade(1, M + 57_500_000, "10", "1")
    x = trade(2, M + 60_500_000, "11", "1")
    e = trade(3, M + 57_500_000, "9", "1")  # late for 1s: the minute holds it directly
    f = trade(4, M + 58_700_000, "12", "1")  # in time for 1s
    y = trade(5, M + 61_500_000, "11", "1")  # closes f's second, merged into the minute
    out = both(["1s", "1m"], [[a, x, e], [f, y]], lateness_us=2 * SEC, partial_every_us=1)
    updates = [r for r in out if r.get("interval") == "1m" and r["start"] == M]
    assert [(u["final"], u["high"]) for u in updates] == [
        (False, "10"),
        (False, "12"),
        (True, "12"),
    ]


def test_wakeup_with_fill_while_the_minute_is_only_in_its_seconds() -> None:
    first = trade(1, M + 10 * SEC, "10", "1")
    second = trade(2, M + 120_500_000, "10", "1")  # closes minute M; minute M+1 stays open
    out = both(["1s", "1m"], [[first], [second]], lateness_us=2 * SEC, fill_empty=True)
    assert {"wakeup": M + 123 * SEC, "partial": None} in out
