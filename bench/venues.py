"""Per-venue parse + book cost on each venue's bundled capture, beside orjson alone.

Run from the repository root (docs/benchmarks.md, "Per venue: parse + book")::

    .venv/bin/python bench/venues.py             # 5 rounds
    .venv/bin/python bench/venues.py --rounds 9

For each capture of :data:`CAPTURES` (a venue adds one line), every frame the replay
reads goes through what the pipeline does per frame: ``Normalizer`` (typed fast path,
careful path behind it) and, for depth messages, the symbol's ``BookKeeper``
(depth 10, every change emitted). ``orjson`` is ``orjson.loads`` of the same frame
texts: the floor any parser pays. It prints the best CPU time per frame over the rounds
(``time.process_time``), frames/s, the ratio to orjson, and the ratio to Binance's
path per frame (issue 9: no venue more than 2x slower per frame than Binance's), also
with each side divided by its orjson time (frames differ in size: a Bybit 200-level
snapshot or an OKX book push is several Binance diffs' worth of JSON).
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

ROOT = Path(__file__).resolve().parent.parent
CAPTURES_DIR = ROOT / "fixtures" / "captures"
# label -> (venue, capture under fixtures/captures). One line per capture.
CAPTURES: dict[str, tuple[str, str]] = {
    "binance spot BTCUSDT": ("binance", "binance/hftbacktest_spot_btcusdt_20240808.txt.gz"),
    "okx v5": ("okx", "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"),
    "bybit spot+linear": ("bybit", "bybit/cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz"),
    "bybit ob500 history": (
        "bybit",
        "bybit/nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl.gz",
    ),
    "kraken v1 (real)": (
        "kraken",
        "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz",
    ),
}
BASELINE = "binance spot BTCUSDT"


def frames_of(venue: str, capture: str) -> list[RawFrame]:
    return list(read_capture(CAPTURES_DIR / capture, venue))


def parse_and_book(venue: str, frames: list[RawFrame]) -> Callable[[], int]:
    def run() -> int:
        normalize = Normalizer({venue: make_parser(venue)})
        keepers: dict[str, BookKeeper] = {}
        out = 0
        for frame in frames:
            for _, item in normalize(frame):
                if isinstance(item, DepthMsg):
                    keeper = keepers.get(item.symbol)
                    if keeper is None:
                        keeper = keepers[item.symbol] = BookKeeper(venue, item.symbol, 10)
                    out += len(keeper.on_msg(item))
                else:
                    out += 1
        return out

    return run


def orjson_only(frames: list[RawFrame]) -> Callable[[], int]:
    texts = [f.text for f in frames]

    def run() -> int:
        loads = orjson.loads
        for text in texts:
            loads(text)
        return len(texts)

    return run


def best_cpu(run: Callable[[], int], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for label, (venue, capture) in CAPTURES.items():
        frames = frames_of(venue, capture)
        full = best_cpu(parse_and_book(venue, frames), args.rounds) / len(frames)
        floor = best_cpu(orjson_only(frames), args.rounds) / len(frames)
        rows.append((label, len(frames), full, floor))
    base, base_floor = next((full, floor) for label, _, full, floor in rows if label == BASELINE)
    print(
        f"{'capture':<22} {'frames':>7} {'µs/frame':>9} {'frames/s':>10} "
        f"{'orjson µs':>9} {'x orjson':>8} {'x binance':>9}"
    )
    for label, n, full, floor in rows:
        print(
            f"{label:<22} {n:>7} {full * 1e6:>9.2f} {1 / full:>10,.0f} "
            f"{floor * 1e6:>9.2f} {full / floor:>8.1f} {full / base:>9.2f} "
            f"{(full / floor) / (base / base_floor):>16.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
