"""Per-trade cost of the OHLCV BarBuilder: the integer one (``operators/ohlcv.py``)
against the Decimal one it replaced (``bench/ohlcv_baseline.py``, kept verbatim).

Run from the repository root::

    .venv/bin/python bench/ohlcv.py             # 7 rounds
    .venv/bin/python bench/ohlcv.py --repeat 15
    .venv/bin/python bench/ohlcv.py --dedupe   # Deduper + BarBuilder today vs 387c34a

Input: the trades of the two bundled hftbacktest Binance spot captures (BTCUSDT and
ETHUSDT, 15,863 trades), one builder per symbol with intervals 1s and 1m, fed in
batches of 128 (caller clock = capture receive time) and flushed at the end. Three
settings: ``plain`` (no lateness, no fill, no partials: the golden test's defaults),
``live`` (2 s lateness, empty-bar fill, partial updates every second) and
``4 intervals`` (1s, 1m, 5m, 1h: what merging coarser bars from the finest saves).

Each round times the variants round-robin in the same process (drift on a shared
machine hits all alike) and keeps the best CPU time (``time.process_time``). Before
timing, every variant's output must equal the baseline's record for record, or the
script exits non-zero.

``--dedupe``: what the pipeline does per trade, Deduper then BarBuilder (1s and 1m, 2 s
lateness: the defaults of the bench pipeline), today against commit 387c34a (both
loaded from git next to each other), on the trades of both captures merged by receive
time: one trade at a time (``seen`` + ``on_trades([trade])``) and in lists per key as
``stateful_batch`` hands them (the trades of 128 consecutive frames grouped by symbol,
``filter`` + ``on_trades``). Best CPU time of the rounds; outputs must be equal.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ohlcv_baseline  # noqa: E402
from bench.baseline_at import load_at  # noqa: E402
from candlewax.schema import make_trade  # noqa: E402
from operators import dedupe, ohlcv  # noqa: E402

CAPTURES = {
    "BTC/USDT": ROOT / "fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz",
    "ETH/USDT": ROOT / "fixtures/captures/binance/hftbacktest_spot_ethusdt_20240808.txt.gz",
}
INTERVALS = ["1s", "1m"]
BATCH = 128
SETTINGS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "plain": (INTERVALS, {}),
    "live": (
        INTERVALS,
        {"lateness_us": 2_000_000, "fill_empty": True, "partial_every_us": 1_000_000},
    ),
    "4 intervals": (["1s", "1m", "5m", "1h"], {}),
}
Record = dict[str, Any]
Make = Callable[..., Any]
VARIANTS: dict[str, Make] = {"decimal": ohlcv_baseline.BarBuilder, "integer": ohlcv.BarBuilder}


def load_trades() -> dict[str, list[Record]]:
    trades: dict[str, list[Record]] = {}
    for symbol, path in CAPTURES.items():
        rows = trades.setdefault(symbol, [])
        with gzip.open(path, "rt") as lines:
            for line in lines:
                ts_ns, text = line.split(" ", 1)
                if "@trade" not in text:
                    continue
                data = orjson.loads(text)["data"]
                rows.append(
                    make_trade(
                        "binance",
                        symbol,
                        data["T"] * 1000,
                        int(ts_ns) // 1000,
                        str(data["t"]),
                        data["p"],
                        data["q"],
                        "sell" if data["m"] else "buy",
                    )
                )
    return trades


def run(
    make: Make,
    trades: dict[str, list[Record]],
    options: dict[str, Any],
    intervals: list[str] = INTERVALS,
) -> list[Record]:
    out: list[Record] = []
    for symbol, rows in trades.items():
        builder = make("binance", symbol, intervals, **options)
        for i in range(0, len(rows), BATCH):
            chunk = rows[i : i + BATCH]
            out += builder.on_trades(chunk, chunk[-1]["ts_ingest"])
        out += builder.flush()
    return out


DEDUPE_BASE = "387c34a"  # Deduper and BarBuilder before issue 8 levers 1 and 4
DEDUPE_OPTIONS = {"lateness_us": 2_000_000}


def per_trade(dedupe_module: Any, ohlcv_module: Any, stream: list[Record]) -> list[Record]:
    """One trade at a time, as a per-frame loop hands them."""
    dedupers: dict[str, Any] = {}
    builders: dict[str, Any] = {}
    out: list[Record] = []
    for trade in stream:
        symbol = trade["symbol"]
        deduper = dedupers.get(symbol)
        if deduper is None:
            deduper = dedupers[symbol] = dedupe_module.Deduper()
            builders[symbol] = ohlcv_module.BarBuilder(
                "binance", symbol, INTERVALS, **DEDUPE_OPTIONS
            )
        if not deduper.seen(trade["trade_id"]):
            out += builders[symbol].on_trades([trade], trade["ts_ingest"])
    return out


def per_list(
    dedupe_module: Any, ohlcv_module: Any, batches: list[list[list[Record]]]
) -> list[Record]:
    """Lists per key, as stateful_batch hands them."""
    dedupers: dict[str, Any] = {}
    builders: dict[str, Any] = {}
    out: list[Record] = []
    for batch in batches:
        for trades in batch:
            symbol = trades[0]["symbol"]
            deduper = dedupers.get(symbol)
            if deduper is None:
                deduper = dedupers[symbol] = dedupe_module.Deduper()
                builders[symbol] = ohlcv_module.BarBuilder(
                    "binance", symbol, INTERVALS, **DEDUPE_OPTIONS
                )
            out += builders[symbol].on_trades(deduper.filter(trades), trades[-1]["ts_ingest"])
    return out


def dedupe_main(repeat: int) -> int:
    old_dedupe = load_at(DEDUPE_BASE, "operators/dedupe.py")
    old_ohlcv = load_at(DEDUPE_BASE, "operators/ohlcv.py")
    if old_dedupe is None or old_ohlcv is None:
        return 1
    trades = load_trades()
    stream = sorted((t for rows in trades.values() for t in rows), key=lambda t: t["ts_ingest"])
    # Frames of a capture carry one trade each: 128 frames' trades, grouped by symbol.
    batches = []
    for i in range(0, len(stream), BATCH):
        groups: dict[str, list[Record]] = {}
        for trade in stream[i : i + BATCH]:
            groups.setdefault(trade["symbol"], []).append(trade)
        batches.append(list(groups.values()))
    versions = {DEDUPE_BASE: (old_dedupe, old_ohlcv), "today": (dedupe, ohlcv)}
    runs: dict[str, Callable[[Any, Any], list[Record]]] = {
        "one trade at a time": lambda d, o: per_trade(d, o, stream),
        "lists per key": lambda d, o: per_list(d, o, batches),
    }
    failed = False
    for mode, run_mode in runs.items():
        outputs = {name: orjson.dumps(run_mode(*mods)) for name, mods in versions.items()}
        if outputs["today"] != outputs[DEDUPE_BASE]:
            print(f"FAIL {mode}: today's output differs from {DEDUPE_BASE}'s")
            failed = True
        best = dict.fromkeys(versions, float("inf"))
        for _ in range(repeat):
            for name, mods in versions.items():
                started = time.process_time()
                run_mode(*mods)
                best[name] = min(best[name], time.process_time() - started)
        for name, seconds in best.items():
            print(
                f"dedupe + ohlcv, {mode:20s} {name:8s} {seconds / len(stream) * 1e6:5.2f} us/trade"
                f"  x{best[DEDUPE_BASE] / seconds:4.2f} vs {DEDUPE_BASE}"
            )
    print(f"({len(stream)} trades, intervals {','.join(INTERVALS)}, {DEDUPE_OPTIONS})")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (best CPU time is kept)")
    parser.add_argument("--dedupe", action="store_true", help="Deduper + BarBuilder vs 387c34a")
    args = parser.parse_args()
    if args.dedupe:
        return dedupe_main(args.repeat)
    trades = load_trades()
    count = sum(map(len, trades.values()))
    print(f"{count} trades ({', '.join(f'{s}: {len(t)}' for s, t in trades.items())})")
    failed = False
    for setting, (intervals, options) in SETTINGS.items():
        expected = run(VARIANTS["decimal"], trades, options, intervals)
        for name, make in VARIANTS.items():
            got = run(make, trades, options, intervals)
            if orjson.dumps(got) != orjson.dumps(expected):
                print(f"FAIL {setting}/{name}: output differs from the baseline")
                failed = True
        best = dict.fromkeys(VARIANTS, float("inf"))
        for _ in range(args.repeat):
            for name, make in VARIANTS.items():
                started = time.process_time()
                run(make, trades, options, intervals)
                best[name] = min(best[name], time.process_time() - started)
        base = best["decimal"]
        bars = sum(1 for r in expected if r["type"] == "bar")
        print(f"\n{setting} {','.join(intervals)} {options or ''}")
        print(f"  ({len(expected)} records, {bars} bars)")
        for name, seconds in best.items():
            print(
                f"  {name:8} {seconds / count * 1e6:6.2f} us/trade"
                f"  x{base / seconds:5.2f} vs decimal"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
