"""Order-book maintenance per depth message: the Decimal-keyed side we had, the
float-keyed pure-Python side and the native (Rust) side, on real captures.

Run from the repository root (docs/benchmarks.md has the results)::

    .venv/bin/python bench/book.py            # 5 rounds
    .venv/bin/python bench/book.py --rounds 9
    .venv/bin/python bench/book.py --keeper   # BookKeeper before/after issue 8 (levers 1, 4)

Every depth message of the bundled Binance spot (ETHUSDT, BTCUSDT), USD-M and OKX
captures is parsed once, outside the timing. Each round then feeds them, per
capture, through ``operators.book.BookKeeper`` (depth 20, top-N every second, BBO
on change) with each side implementation in turn (A B C A B C: drift on a shared
machine hits all alike), and checks the three produce the same records. Printed:
µs per message (best and median of the rounds) and the ratio of each side to the
Decimal baseline, which is the side of commit 0ad46e5 kept here verbatim.

``--keeper``: the whole ``BookKeeper.on_msg`` of today against the one of commit
387c34a (one ``update`` call per side, a BBO fetched and compared after every diff),
loaded from git next to it, on the Binance spot captures (ETHUSDT + BTCUSDT) as the
pipeline feeds it: each frame is normalized in the loop, so the message is fresh in the
caches as in the pipeline, and only ``on_msg`` is timed (``perf_counter_ns`` around
each call, minus the timer's own cost). Native and pure-Python sides
(``CANDLEWAX_NATIVE_BOOK=0``); rounds alternate old and new; the records must be equal.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import operators.book as book_module
from bench.baseline_at import load_at
from bench.pipeline import bench_config, load_frames, merged
from flows.pipeline import build_normalizer
from operators.book_side import BookSide
from operators.book_sides import NativeSide  # type: ignore[attr-defined]
from operators.events import DepthMsg
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import iter_capture

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "captures"
CAPTURES = [
    ("binance/hftbacktest_spot_ethusdt_20240808.txt.gz", "binance", ["ETH/USDT"]),
    ("binance/hftbacktest_spot_btcusdt_20240808.txt.gz", "binance", ["BTC/USDT"]),
    ("binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz", "binance-usdm", None),
    ("okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz", "okx", None),
]
Level = tuple[str, str]
KEEPER_BASE = "387c34a"  # BookKeeper before issue 8 levers 1 and 4
REAL_NEW_SIDE = book_module.new_side
_NONZERO_LEAD = frozenset("123456789")


class DecimalSide:
    """The baseline: Decimal(price) keys in a dict plus a SortedList (as of 0ad46e5)."""

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self._levels: dict[Decimal, Level] = {}
        self._prices: SortedList = SortedList()

    def update(self, levels: Iterable[Level]) -> None:
        book = self._levels
        prices = self._prices
        for price, size in levels:
            key = Decimal(price)
            rest = size.strip("0.")
            if not rest or (rest[0] not in _NONZERO_LEAD and Decimal(size) == 0):
                if book.pop(key, None) is not None:
                    prices.remove(key)
            else:
                if key not in book:
                    if not key.is_finite():
                        raise ValueError(f"price {price!r} is not a finite number")
                    prices.add(key)
                book[key] = (price, size)

    def replace(self, levels: Iterable[Level]) -> None:
        self._levels = {}
        self._prices = SortedList()
        self.update(levels)

    def clear(self) -> None:
        self._levels.clear()
        self._prices.clear()

    def top(self, n: int) -> list[Level]:
        book = self._levels
        if self.descending:
            return [book[key] for key in reversed(self._prices[-n:])] if n > 0 else []
        return [book[key] for key in self._prices[:n]]

    def best(self) -> Level | None:
        if not self._levels:
            return None
        return self._levels[self._prices[-1 if self.descending else 0]]

    def __len__(self) -> int:
        return len(self._levels)


def load() -> dict[str, list[DepthMsg]]:
    out: dict[str, list[DepthMsg]] = {}
    for path, venue, symbols in CAPTURES:
        parser = make_parser(venue, symbols)
        msgs: list[DepthMsg] = []
        for frame in iter_capture(ROOT / path, venue):
            if isinstance(frame, RawFrame):
                msgs.extend(i for i in parser.parse(frame) if isinstance(i, DepthMsg))
        out[path.split("/")[1].split(".")[0]] = msgs
    return out


def run(msgs: list[DepthMsg], make_side: Callable[[bool], Any]) -> list[dict[str, Any]]:
    book_module.new_side = make_side  # type: ignore[assignment]
    keepers: dict[str, book_module.BookKeeper] = {}
    out: list[dict[str, Any]] = []
    for msg in msgs:
        keeper = keepers.get(msg.symbol)
        if keeper is None:
            keeper = keepers[msg.symbol] = book_module.BookKeeper(
                msg.venue, msg.symbol, depth=20, emit_interval_us=1_000_000
            )
        out.extend(keeper.on_msg(msg))
    return out


def keeper_run(module: Any, frames: list[RawFrame], keep: bool = False) -> tuple[int, list[Any]]:
    """ns spent in ``on_msg`` over every depth message of ``frames`` (and the records)."""
    normalize = build_normalizer(bench_config())
    keepers: dict[str, Any] = {}
    clock = time.perf_counter_ns
    spent = 0
    out: list[Any] = []
    for frame in frames:
        for key, item in normalize(frame):
            if not isinstance(item, DepthMsg):
                continue
            keeper = keepers.get(key)
            if keeper is None:
                keeper = keepers[key] = module.BookKeeper(
                    item.venue, item.symbol, depth=20, emit_interval_us=1_000_000
                )
            start = clock()
            records = keeper.on_msg(item)
            spent += clock() - start
            if keep:
                out += records
    return spent, out


def timer_cost(frames: list[RawFrame]) -> int:
    clock = time.perf_counter_ns
    spent = 0
    for _ in frames:
        start = clock()
        spent += clock() - start
    return spent


def keeper_main(rounds: int) -> int:
    old = load_at(KEEPER_BASE, "operators/book.py")
    if old is None:
        return 1
    book_module.new_side = REAL_NEW_SIDE
    frames = merged(load_frames())
    normalize = build_normalizer(bench_config())
    frames = [f for f in frames if any(isinstance(i, DepthMsg) for _, i in normalize(f))]
    versions = {"387c34a": old, "today": book_module}
    modes = {"native": "1", "python": "0"} if NativeSide is not None else {"python": "0"}
    gc.collect()
    gc.freeze()
    for mode, env in modes.items():
        os.environ["CANDLEWAX_NATIVE_BOOK"] = env
        outputs = {name: keeper_run(m, frames, keep=True)[1] for name, m in versions.items()}
        if outputs["today"] != outputs["387c34a"]:
            print(f"{mode}: today's records differ from 387c34a's", file=sys.stderr)
            return 1
        times: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(rounds):
            for name, module in versions.items():
                spent = keeper_run(module, frames)[0] - timer_cost(frames)
                times[name].append(spent / len(frames) / 1000)
        base = min(times["387c34a"])
        for name, values in times.items():
            print(
                f"BookKeeper {mode:6s} {name:8s} best {min(values):5.2f} us/diff"
                f"  median {statistics.median(values):5.2f}  x{base / min(values):4.2f} vs 387c34a"
            )
    os.environ.pop("CANDLEWAX_NATIVE_BOOK", None)
    print(f"({len(frames)} depth frames of the Binance spot captures, depth 20, top-N every 1 s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keeper", action="store_true", help="BookKeeper today vs 387c34a")
    args = parser.parse_args(argv)
    if args.keeper:
        return keeper_main(args.rounds)
    sides: dict[str, Callable[[bool], Any]] = {"decimal": DecimalSide, "python": BookSide}
    if NativeSide is not None:
        sides["native"] = NativeSide
    else:
        print("native side not built: comparing the Python sides only", file=sys.stderr)
    data = load()
    gc.freeze()
    print(f"{'capture':32s} {'msgs':>6s} {'lvl/msg':>7s}  side     best µs  median µs  ratio")
    for name, msgs in data.items():
        expected = run(msgs, DecimalSide)
        times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, make in sides.items():
                start = time.perf_counter()
                out = run(msgs, make)
                times[side].append((time.perf_counter() - start) / len(msgs) * 1e6)
                if out != expected:
                    print(f"{name}: {side} side output differs from the baseline", file=sys.stderr)
                    return 1
        levels = sum(len(m.bids) + len(m.asks) for m in msgs) / len(msgs)
        base = statistics.median(times["decimal"])
        for side, values in times.items():
            median = statistics.median(values)
            print(
                f"{name:32s} {len(msgs):6d} {levels:7.1f}  {side:7s} {min(values):8.1f}"
                f" {median:10.1f}  {base / median:5.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
