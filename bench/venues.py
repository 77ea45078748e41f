"""Per-venue parse + book cost on each bundled capture, beside orjson alone on the same frames.

Run from the repository root (docs/benchmarks.md has the results)::

    .venv/bin/python bench/venues.py              # 5 rounds
    .venv/bin/python bench/venues.py --only hyperliquid binance

A venue adds its captures to :data:`CAPTURES` (one line each). For every capture,
each round times, in one process, over the same frames:

- ``parse+book``: ``Normalizer`` (typed path first, as the pipeline runs it) and, for
  every ``DepthMsg`` it emits, ``BookKeeper.on_msg`` of that symbol (depth 20, every
  change emitted): the per-frame work of a venue's source side up to book records;
- ``orjson``: ``orjson.loads`` of the frame text alone, the floor of any JSON path.

It prints the best CPU time per frame (``time.process_time``: on a shared machine wall
time mostly measures waiting), frames/s, the ratio to orjson on the same frames, and
the ratio to Binance spot's path per frame, by frame kind too (issue 9 asks that no
venue be more than 2x slower per frame than Binance's path), and the items (trades,
depth messages, BBOs) the Normalizer makes per frame with the cost per item: frames
differ a lot between venues (a Hyperliquid l2Book push is a whole 40-level book, a
trades push carries several trades), so per frame alone compares unlike things. Small captures are
repeated to at least ``--min-frames`` frames (a repeat starts with the capture's first
snapshot again, so books stay synced).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.registry import make_parser
from sources.replay import read_capture

ROOT = Path(__file__).resolve().parent.parent
CAPTURE_DIR = ROOT / "fixtures" / "captures"
BASELINE = "binance"  # the label every other capture is compared with

# label -> (venue, capture under fixtures/captures): one line per bundled capture.
CAPTURES: dict[str, tuple[str, str]] = {
    "binance": ("binance", "binance/hftbacktest_spot_btcusdt_20240808.txt.gz"),
    "binance-usdm": ("binance-usdm", "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"),
    "okx": ("okx", "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"),
    "okx-legacy": ("okx", "okx/cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"),
    "hyperliquid": ("hyperliquid", "hyperliquid/hftbacktest_btc_l2Book_trades_20250126.txt.gz"),
    "bybit": ("bybit", "bybit/cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz"),
    "bybit-history": ("bybit", "bybit/nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl.gz"),
    "kraken-v1": ("kraken", "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"),
    "coinbase": ("coinbase", "coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz"),
}
BOOK_DEPTH = 20


def load(venue: str, capture: str, min_frames: int) -> list[RawFrame]:
    frames = list(read_capture(CAPTURE_DIR / capture, venue))
    if any(f.hint == SNAPSHOT_HINT for f in frames):
        # An hftbacktest Binance capture: its REST snapshot names no symbol (the replay
        # source adds the configured one, as bench/pipeline.py does).
        from bench.pipeline import _native_symbol

        hint = SNAPSHOT_HINT + _native_symbol(frames)
        frames = [f._replace(hint=hint) if f.hint == SNAPSHOT_HINT else f for f in frames]
    repeat = max(1, -(-min_frames // len(frames)))
    return frames * repeat


def kind_of(frame: RawFrame) -> str:
    """A short name of the frame's message kind, from its first bytes."""
    if frame.hint is not None:
        return "snapshot"
    head = frame.text[:120]
    for marker in (
        "@depth",
        "@bookTicker",
        "@aggTrade",
        "@trade",
        '"books',
        '"trades"',
        '"tickers"',
        '"l2Book"',
        '"bbo"',
    ):
        if marker in head:
            return marker.strip('"@')
    return "other"


class SourceSide:
    """Normalize + book of one venue: what the timed loop calls per frame."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.normalize = Normalizer({venue: make_parser(venue)})
        self.keepers: dict[str, BookKeeper] = {}

    def __call__(self, frame: RawFrame) -> int:
        out = 0
        for _, item in self.normalize(frame):
            if item.__class__ is DepthMsg:
                assert isinstance(item, DepthMsg)
                keeper = self.keepers.get(item.symbol)
                if keeper is None:
                    keeper = self.keepers[item.symbol] = BookKeeper(
                        self.venue, item.symbol, BOOK_DEPTH
                    )
                out += len(keeper.on_msg(item))
            else:
                out += 1
        return out


def cpu_per_frame(fn: Callable[[RawFrame], Any], frames: Sequence[RawFrame]) -> float:
    start = time.process_time()
    for frame in frames:
        fn(frame)
    return (time.process_time() - start) / len(frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best is kept)")
    parser.add_argument("--min-frames", type=int, default=20_000, help="repeat small captures")
    parser.add_argument("--only", nargs="*", help="capture labels (default: all)")
    args = parser.parse_args()
    labels = args.only or list(CAPTURES)
    if BASELINE not in labels:
        labels = [BASELINE, *labels]
    unknown = [label for label in labels if label not in CAPTURES]
    if unknown:
        sys.exit(f"unknown capture labels {unknown}; known: {', '.join(CAPTURES)}")

    frames = {label: load(*CAPTURES[label], args.min_frames) for label in labels}
    kinds: dict[tuple[str, str], list[RawFrame]] = {}
    for label in labels:
        for frame in frames[label]:
            kinds.setdefault((label, kind_of(frame)), []).append(frame)

    # Items (trades, depth messages, BBOs...) the Normalizer makes per frame: a frame may
    # carry many (a Hyperliquid trades push ~7 trades), so µs per item is printed too.
    items: dict[tuple[str, str], float] = {}
    for label in labels:
        normalize = Normalizer({CAPTURES[label][0]: make_parser(CAPTURES[label][0])})
        per_kind: dict[str, list[int]] = {}
        for frame in frames[label]:
            n = len(normalize(frame))
            for kind in ("all", kind_of(frame)):
                per_kind.setdefault(kind, []).append(n)
        for kind, counts in per_kind.items():
            items[label, kind] = sum(counts) / len(counts)

    best: dict[tuple[str, str, str], float] = {}
    gc.freeze()
    for _ in range(args.repeat):
        for label in labels:
            venue = CAPTURES[label][0]
            groups: list[tuple[str, list[RawFrame]]] = [("all", frames[label])]
            groups += [(k, f) for (lab, k), f in kinds.items() if lab == label]
            for kind, group in groups:
                # A fresh source side per group (all frames in capture order first):
                # per kind, book updates go through a keeper that may be unsynced.
                timed: dict[str, Callable[[RawFrame], Any]] = {
                    "parse+book": SourceSide(venue),
                    "orjson": lambda f: orjson.loads(f.text),
                }
                for name, fn in timed.items():
                    cost = cpu_per_frame(fn, group)
                    key = (label, kind, name)
                    best[key] = min(best.get(key, cost), cost)

    base = best[BASELINE, "all", "parse+book"]
    print(f"best CPU µs/frame of {args.repeat} rounds (Python {sys.version.split()[0]})")
    header = f"{'capture':<14}{'kind':<12}{'frames':>8}{'bytes':>7}"
    header += f"{'parse+book':>11}{'frames/s':>10}{'orjson':>8}{'/orjson':>8}{'/binance':>9}"
    header += f"{'items':>6}{'µs/item':>8}"
    print(header)
    for label in labels:
        groups = [("all", frames[label])]
        groups += [(k, f) for (lab, k), f in kinds.items() if lab == label]
        for kind, group in groups:
            cost = best[label, kind, "parse+book"]
            floor = best[label, kind, "orjson"]
            size = sum(len(f.text) for f in group) // len(group)
            print(
                f"{label:<14}{kind:<12}{len(group):>8}{size:>7}{cost:>11.2f}"
                f"{1e6 / cost:>10,.0f}{floor:>8.2f}{cost / floor:>8.1f}{cost / base:>9.2f}"
                f"{items[label, kind]:>6.1f}"
                + (f"{cost / items[label, kind]:>8.2f}" if items[label, kind] else f"{'-':>8}")
            )


if __name__ == "__main__":
    main()
