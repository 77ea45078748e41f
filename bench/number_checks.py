"""Cost of the parse-time price/size checks (``sources/numbers.py``) on real Binance frames.

Run from the repository root::

    .venv/bin/python bench/number_checks.py             # 5 rounds
    .venv/bin/python bench/number_checks.py --repeat 9

Input: the two bundled hftbacktest captures (``bench.pipeline.load_frames``),
74,867 frames, 9.3 prices/sizes per frame on average and ~72 per depth diff.
Each round times, round-robin in the same process (drift on a shared machine
hits all alike), the same work with the checks in three forms:

- ``off``: the venue module's check functions replaced by pass-throughs (the
  parser as it was before the checks);
- ``regex``: the checks with the bulk pass disabled, so every number runs the
  regex (what a plain per-number check costs);
- ``on``: the checks as shipped (bulk ``bytes`` passes, regex only on failure).

For each it measures the parser alone (``Normalizer`` per frame: all frames,
then each kind), the plain per-frame pipeline (``PlainPipeline.process``:
normalize, dedupe, bars, books) and the Bytewax dataflow (1 worker, batches of
128, null sink; ``off`` and ``on`` only), and prints the best CPU time per frame
(``time.process_time``: on a shared machine wall time mostly measures waiting)
and the ratio to ``off``. Every variant must emit the same number of records.

Since the typed fast path (``sources/typed.py``, issue 8) these variants only reach
the careful path, which now serves declined frames: the parser cases run
``Normalizer(parsers, typed=False)``; the pipeline and dataflow cases run the typed
path, untouched by the variants. ``bench/normalize.py`` measures the typed path.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import PlainPipeline, bench_config, load_frames, merged, run_dataflow
from flows.pipeline import build_normalizer
from operators.normalize import Normalizer
from sources import binance, numbers
from sources.frames import RawFrame

VARIANTS = ("off", "regex", "on")


def _pass_levels(levels: Any, side: str, deletes: bool) -> None:
    return None


def _pass_positive(values: Any, fields: Any) -> None:
    return None


def _pass_ticker(bid: Any, ask: Any, fields: Any) -> Any:
    return bid, ask


def _never(levels: Any, deletes: bool) -> bool:
    return False


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    saved = (binance.check_levels, binance.check_positive, binance.check_ticker)
    saved_bulk = numbers._bulk_ok
    if name == "off":
        binance.check_levels = _pass_levels
        binance.check_positive = _pass_positive
        binance.check_ticker = _pass_ticker
    elif name == "regex":
        numbers._bulk_ok = _never
    try:
        yield
    finally:
        binance.check_levels, binance.check_positive, binance.check_ticker = saved
        numbers._bulk_ok = saved_bulk


def time_normalize(frames: Sequence[RawFrame]) -> tuple[float, int]:
    normalize = Normalizer(build_normalizer(bench_config()).parsers, typed=False)
    start = time.process_time()
    items = 0
    for frame in frames:
        items += len(normalize(frame))
    return time.process_time() - start, items


def time_plain(frames: Sequence[RawFrame]) -> tuple[float, int]:
    plain = PlainPipeline(bench_config())
    process = plain.process
    start = time.process_time()
    emitted = 0
    for frame in frames:
        emitted += process(frame)
    return time.process_time() - start, emitted + plain.finish()


def time_dataflow(streams: dict[str, list[RawFrame]]) -> tuple[float, int]:
    start = time.process_time()
    emitted = run_dataflow(bench_config(), streams, 1, 128)
    return time.process_time() - start, emitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    streams = load_frames()
    frames = merged(streams)
    diffs = [f for f in frames if '"depthUpdate"' in f.text]
    Run = Callable[[Any], tuple[float, int]]
    cases: dict[str, tuple[Run, Any, int, tuple[str, ...]]] = {
        "parser, all frames": (time_normalize, frames, len(frames), VARIANTS),
        "parser, depth diffs": (time_normalize, diffs, len(diffs), VARIANTS),
        "parser, bookTickers": (time_normalize, _having(frames, "@bookTicker"), 0, VARIANTS),
        "parser, trades": (time_normalize, _having(frames, "@trade"), 0, VARIANTS),
        "parser+dedupe+bars+books, all frames": (time_plain, frames, len(frames), VARIANTS),
        "Bytewax dataflow, all frames": (time_dataflow, streams, len(frames), ("off", "on")),
    }
    best: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for _ in range(args.repeat):
        for case, (run, subset, _n, variants) in cases.items():
            for name in variants:
                with variant(name):
                    spent, emitted = run(subset)
                key = (case, name)
                best[key] = min(best.get(key, spent), spent)
                if counts.setdefault(key, emitted) != emitted or emitted != counts[(case, "off")]:
                    raise SystemExit(f"{case} {name}: {emitted} records, expected the same")
    print(f"{len(frames)} frames ({len(diffs)} depth diffs), best of {args.repeat} rounds")
    print(f"{'case':40} {'off µs':>8} {'regex µs':>9} {'on µs':>8} {'regex/off':>10} {'on/off':>7}")
    for case, (_, subset, count, variants) in cases.items():
        per = {v: best[(case, v)] * 1e6 / (count or len(subset)) for v in variants}
        off, on = per["off"], per["on"]
        rx = f"{per['regex']:9.2f} {per['regex'] / off:10.3f}" if "regex" in per else " " * 20
        line = f"{case:40} {off:8.2f} {rx.split()[0] if 'regex' in per else '':>9} {on:8.2f}"
        print(line, f"{rx.split()[1] if 'regex' in per else '':>10} {on / off:7.3f}")


def _having(frames: Sequence[RawFrame], stream: str) -> list[RawFrame]:
    return [f for f in frames if stream in f.text[:40]]


if __name__ == "__main__":
    main()
