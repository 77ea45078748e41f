"""Parse + book cost per frame, venue by venue, on each venue's bundled capture.

Run from the repository root (docs/benchmarks.md, "Per venue", has the results)::

    .venv/bin/python bench/venues.py            # 5 rounds
    .venv/bin/python bench/venues.py --rounds 9 --venue coinbase

A venue is one line of ``VENUES`` (venue -> capture under fixtures/captures). Each
round times, round-robin in one process over the same frames:

- ``orjson``: ``orjson.loads`` of every frame text, the floor any JSON parser pays;
- ``parse+book``: ``Normalizer`` (typed path first, as the pipeline runs it), then each
  depth message into its symbol's ``BookKeeper`` (depth 20, top-N on every change, BBO).

It prints the best CPU time per frame (``time.process_time``) over the rounds, frames/s,
the ratio to orjson, and each venue's per-frame cost against the first venue of the
table (Binance spot: issue 9 allows no venue more than 2x its cost per frame). Venues
whose captures carry very large in-band snapshots also get a row without them.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import read_capture

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"

# venue -> capture under fixtures/captures (one line per venue).
VENUES: dict[str, str] = {
    "binance": "binance/hftbacktest_spot_btcusdt_20240808.txt.gz",
    "okx": "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz",
    "coinbase": "coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz",
}
BIG_FRAME = 1_000_000  # characters: a frame this large is a full-book snapshot


def parse_and_book(venue: str) -> Callable[[list[RawFrame]], int]:
    def run(frames: list[RawFrame]) -> int:
        normalize = Normalizer({venue: make_parser(venue, None)})
        books: dict[str, BookKeeper] = {}
        out = 0
        for frame in frames:
            for _, item in normalize(frame):
                if isinstance(item, DepthMsg):
                    keeper = books.get(item.symbol)
                    if keeper is None:
                        keeper = books[item.symbol] = BookKeeper(venue, item.symbol, depth=20)
                    out += len(keeper.on_msg(item))
                else:
                    out += 1
        return out

    return run


def orjson_only(frames: list[RawFrame]) -> int:
    loads = orjson.loads
    for frame in frames:
        loads(frame.text)
    return len(frames)


def best_seconds(fn: Callable[[list[RawFrame]], Any], frames: list[RawFrame], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        fn(frames)
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--venue", action="append", help="only these venues (default: all)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, int, float, float]] = []
    for venue, capture in VENUES.items():
        if args.venue and venue not in args.venue and venue != "binance":
            continue
        frames = list(read_capture(CAPTURES / capture, venue))
        sets = [("all frames", frames)]
        small = [f for f in frames if len(f.text) < BIG_FRAME]
        if len(small) != len(frames):
            sets.append((f"without {len(frames) - len(small)} snapshots > 1 MB", small))
        for label, chosen in sets:
            mine = best_seconds(parse_and_book(venue), chosen, args.rounds)
            floor = best_seconds(orjson_only, chosen, args.rounds)
            rows.append((venue, label, len(chosen), mine, floor))
    reference = rows[0][3] / rows[0][2]
    header = (
        "venue | frames | parse+book frames/s | orjson frames/s | / orjson | per frame / binance"
    )
    print(f"| {header} |")
    print("|---|---|--:|--:|--:|--:|")
    for venue, label, count, mine, floor in rows:
        per_frame = mine / count
        print(
            f"| {venue} | {count:,} ({label}) | {count / mine:,.0f} | {count / floor:,.0f} "
            f"| {floor / mine:.3f} | {per_frame / reference:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
