"""Per-venue parse + book cost per frame, on each venue's bundled capture, against Binance.

Run from the repository root (docs/benchmarks.md, "Per-venue parse + book")::

    .venv/bin/python bench/venues.py            # 3 rounds
    .venv/bin/python bench/venues.py --rounds 5

For each entry of :data:`CAPTURES` (one line per venue capture: add yours), every frame
goes through ``Normalizer`` (typed path first, as the pipeline runs it) and each
``DepthMsg`` through that symbol's ``BookKeeper`` (depth 10, emit on every change).
Beside it, ``orjson.loads`` alone on the same frames (the floor of any JSON path).
Prints the best CPU time per frame (``time.process_time``: on a shared machine wall time
mostly measures waiting), frames/s, and the ratio to Binance's path measured in the same
run (issue 9: no venue more than 2x slower per frame than Binance).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.normalize import Normalizer
from simulator.venues.kraken_v2 import V2Deriver
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import read_capture

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "captures"

Frames = Callable[[], list[RawFrame]]


def capture(relative: str, venue: str) -> Frames:
    return lambda: list(read_capture(ROOT / relative, venue))


def derived_v2(relative: str) -> Frames:
    return lambda: list(V2Deriver().frames(read_capture(ROOT / relative, "kraken")))


KRAKEN_V1 = "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"
# label -> (venue, frames). Binance first: the others are compared with it.
CAPTURES: dict[str, tuple[str, Frames]] = {
    "binance spot BTCUSDT": (
        "binance",
        capture("binance/hftbacktest_spot_btcusdt_20240808.txt.gz", "binance"),
    ),
    "okx v5": ("okx", capture("okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz", "okx")),
    "kraken v1 (real)": ("kraken", capture(KRAKEN_V1, "kraken")),
    "kraken v2 (derived from v1)": ("kraken", derived_v2(KRAKEN_V1)),
}


def parse_all(venue: str, frames: list[RawFrame]) -> list[DepthMsg]:
    normalize = Normalizer({venue: make_parser(venue)})
    return [item for frame in frames for _, item in normalize(frame) if isinstance(item, DepthMsg)]


def book_all(venue: str, depth: list[DepthMsg]) -> None:
    keepers: dict[str, BookKeeper] = {}
    for msg in depth:
        keeper = keepers.get(msg.symbol)
        if keeper is None:
            keeper = keepers[msg.symbol] = BookKeeper(venue, msg.symbol)
        keeper.on_msg(msg)


def orjson_only(venue: str, frames: list[RawFrame]) -> None:
    loads = orjson.loads
    for frame in frames:
        loads(frame.text)


def best_s(run: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cols = ("frames", "parse us", "book us/msg", "us/frame", "frames/s", "orjson us", "x binance")
    print(f"{'capture':28}" + "".join(f"{c:>12}" for c in cols))
    binance: float | None = None
    for label, (venue, load) in CAPTURES.items():
        frames = load()
        depth = parse_all(venue, frames)
        parse_s = best_s(lambda: parse_all(venue, frames), args.rounds)  # noqa: B023
        book_s = best_s(lambda: book_all(venue, depth), args.rounds)  # noqa: B023
        floor_s = best_s(lambda: orjson_only(venue, frames), args.rounds)  # noqa: B023
        n = len(frames)
        per_frame = (parse_s + book_s) / n * 1e6
        binance = binance or per_frame
        row = (
            f"{n:12d}{parse_s / n * 1e6:12.2f}{book_s / max(1, len(depth)) * 1e6:12.2f}"
            f"{per_frame:12.2f}{1e6 / per_frame:12,.0f}{floor_s / n * 1e6:12.2f}"
            f"{per_frame / binance:12.2f}"
        )
        print(f"{label:28}{row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
