"""Order-book maintenance per depth message: the Decimal-keyed side we had, the
float-keyed pure-Python side and the native (Rust) side, on real captures.

Run from the repository root (docs/benchmarks.md has the results)::

    .venv/bin/python bench/book.py            # 5 rounds
    .venv/bin/python bench/book.py --rounds 9

Every depth message of the bundled Binance spot (ETHUSDT, BTCUSDT), USD-M and OKX
captures is parsed once, outside the timing. Each round then feeds them, per
capture, through ``operators.book.BookKeeper`` (depth 20, top-N every second, BBO
on change) with each side implementation in turn (A B C A B C: drift on a shared
machine hits all alike), and checks the three produce the same records. Printed:
µs per message (best and median of the rounds) and the ratio of each side to the
Decimal baseline, which is the side of commit 0ad46e5 kept here verbatim.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList

import operators.book as book_module
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
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
