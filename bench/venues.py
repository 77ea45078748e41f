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
whose captures carry very large in-band snapshots also get a row without them: the same
run over every frame (the snapshots still sync the books), with the CPU time spent on the
snapshot frames taken out, per remaining frame.
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


def parse_and_book(venue: str) -> Callable[[list[RawFrame]], float]:
    """The run; returns the CPU seconds spent on frames over ``BIG_FRAME``."""

    def run(frames: list[RawFrame]) -> float:
        normalize = Normalizer({venue: make_parser(venue, None)})
        books: dict[str, BookKeeper] = {}
        big = 0.0
        for frame in frames:
            start = time.process_time() if len(frame.text) > BIG_FRAME else None
            for _, item in normalize(frame):
                if isinstance(item, DepthMsg):
                    keeper = books.get(item.symbol)
                    if keeper is None:
                        keeper = books[item.symbol] = BookKeeper(venue, item.symbol, depth=20)
                    keeper.on_msg(item)
            if start is not None:
                big += time.process_time() - start
        return big

    return run


def book_frames_cost(venue: str, frames: list[RawFrame], rounds: int) -> tuple[int, float, float]:
    """Like for like across venues: (count, CPU µs per frame, levels per frame) of the
    depth-update frames up to ``BIG_FRAME`` (each timed alone: parse + its books), in a
    run over every frame."""
    best = float("inf")
    count = levels = 0
    for _ in range(rounds):
        normalize = Normalizer({venue: make_parser(venue, None)})
        books: dict[str, BookKeeper] = {}
        spent = 0.0
        count = levels = 0
        for frame in frames:
            start = time.process_time()
            depth = 0
            for _, item in normalize(frame):
                if isinstance(item, DepthMsg):
                    keeper = books.get(item.symbol)
                    if keeper is None:
                        keeper = books[item.symbol] = BookKeeper(venue, item.symbol, depth=20)
                    keeper.on_msg(item)
                    depth += len(item.bids) + len(item.asks) if item.kind == "update" else 0
            if depth and len(frame.text) <= BIG_FRAME:
                spent += time.process_time() - start
                count += 1
                levels += depth
        best = min(best, spent)
    return count, best / max(count, 1) * 1e6, levels / max(count, 1)


def orjson_only(frames: list[RawFrame]) -> float:
    loads = orjson.loads
    big = 0.0
    for frame in frames:
        if len(frame.text) > BIG_FRAME:
            start = time.process_time()
            loads(frame.text)
            big += time.process_time() - start
        else:
            loads(frame.text)
    return big


def best_seconds(
    fn: Callable[[list[RawFrame]], float], frames: list[RawFrame], rounds: int
) -> tuple[float, float]:
    """Best CPU seconds of all frames, and of the frames up to ``BIG_FRAME`` only."""
    best = best_small = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        big = fn(frames)
        total = time.process_time() - start
        best, best_small = min(best, total), min(best_small, total - big)
    return best, best_small


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
        mine, mine_small = best_seconds(parse_and_book(venue), frames, args.rounds)
        floor, floor_small = best_seconds(orjson_only, frames, args.rounds)
        rows.append((venue, "all frames", len(frames), mine, floor))
        big = sum(1 for f in frames if len(f.text) > BIG_FRAME)
        if big:
            label = f"time of the {big} snapshots > 1 MB taken out"
            rows.append((venue, label, len(frames) - big, mine_small, floor_small))
    updates = [
        (
            venue,
            *book_frames_cost(venue, list(read_capture(CAPTURES / capture, venue)), args.rounds),
        )
        for venue, capture in VENUES.items()
        if not args.venue or venue in args.venue or venue == "binance"
    ]
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
    print()
    print("| venue | book update frames | levels per frame | parse+book µs per frame | / binance |")
    print("|---|--:|--:|--:|--:|")
    for venue, count, micros, levels in updates:
        ratio = micros / updates[0][2]
        print(f"| {venue} | {count:,} | {levels:.1f} | {micros:.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
