"""Cost of the normalize step per frame kind: typed fast path against the careful path.

Run from the repository root (docs/benchmarks.md has the results)::

    .venv/bin/python bench/normalize.py                       # 5 rounds, ~1 min
    .venv/bin/python bench/normalize.py --baseline /work/main # also an older checkout's code

Input: the two bundled hftbacktest captures (Binance spot BTCUSDT and ETHUSDT,
``bench.pipeline.load_frames``), 74,867 frames, split by kind (bookTicker, trade,
depth diff), and the bundled OKX v5 capture (books, trades, tickers). Each round
times, round-robin in one process, ``Normalizer.__call__`` over every frame of a kind:

- ``careful``: ``Normalizer(parsers, typed=False)``: ``orjson.loads`` + hand checks,
  the path every frame took before the typed one (and the one declined frames take);
- ``typed``: ``Normalizer(parsers)``, as the pipeline runs it (native number checks
  where built);
- ``typed-py``: the same with the pure-Python number checks (``CANDLEWAX_NATIVE_BOOK=0``);
- ``baseline`` (with ``--baseline DIR``): the parser and Normalizer modules of another
  checkout (e.g. git main), loaded from ``DIR`` under other names;
- ``orjson``: ``orjson.loads`` of the frame text alone, the floor of the old path.

It prints the best CPU time per frame (``time.process_time``; on a shared machine
wall time mostly measures waiting) and typed / careful ratios. Every variant must
emit the same items, or the script fails.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import load_frames, merged
from candlewax.symbols import SymbolMap
from operators.normalize import Normalizer
from sources.binance import BinanceParser
from sources.frames import RawFrame
from sources.okx import OkxParser
from sources.replay import read_capture

ROOT = Path(__file__).resolve().parent.parent
OKX_CAPTURE = ROOT / "fixtures/captures/okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"


def binance_kind(frame: RawFrame) -> str:
    head = frame.text[:48]
    if frame.hint is not None:
        return "snapshot"
    for kind in ("bookTicker", "trade", "depth"):
        if f"@{kind}" in head:
            return f"binance {kind}"
    return "binance other"


def okx_kind(frame: RawFrame) -> str:
    for channel in ("books", "trades", "tickers"):
        if f'"channel":"{channel}"' in frame.text[:80] and '"data"' in frame.text:
            return f"okx {channel}"
    return "okx other"


def frames_by_kind(okx_repeat: int) -> dict[str, list[RawFrame]]:
    kinds: dict[str, list[RawFrame]] = {}
    for frame in merged(load_frames()):
        kinds.setdefault(binance_kind(frame), []).append(frame)
    okx = list(read_capture(OKX_CAPTURE, "okx")) * okx_repeat  # 392 pushes: repeated
    for frame in okx:
        kinds.setdefault(okx_kind(frame), []).append(frame)
    return {k: v for k, v in kinds.items() if "other" not in k and k != "snapshot"}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def baseline_normalizer(checkout: Path) -> Callable[[RawFrame], Any]:
    """The Normalizer and parsers of another checkout, its modules under other names
    (their imports of shared modules resolve to this checkout's, which must fit)."""
    binance = _load(checkout / "sources/binance.py", "baseline_binance")
    okx = _load(checkout / "sources/okx.py", "baseline_okx")
    normalize = _load(checkout / "operators/normalize.py", "baseline_normalize")
    parsers = {
        "binance": binance.BinanceParser(SymbolMap("binance")),
        "okx": okx.OkxParser(SymbolMap("okx")),
    }
    result: Callable[[RawFrame], Any] = normalize.Normalizer(parsers)
    return result


def normalizer(typed: bool, native_checks: bool = True) -> Normalizer:
    saved = os.environ.get("CANDLEWAX_NATIVE_BOOK")
    os.environ["CANDLEWAX_NATIVE_BOOK"] = "1" if native_checks else "0"
    try:  # parsers pick their number checks when built
        parsers: dict[str, Any] = {
            "binance": BinanceParser(SymbolMap("binance")),
            "okx": OkxParser(SymbolMap("okx")),
        }
    finally:
        if saved is None:
            del os.environ["CANDLEWAX_NATIVE_BOOK"]
        else:
            os.environ["CANDLEWAX_NATIVE_BOOK"] = saved
    return Normalizer(parsers, typed=typed)


def cpu_per_frame(fn: Callable[[Any], Any], frames: Sequence[RawFrame]) -> float:
    start = time.process_time()
    for frame in frames:
        fn(frame)
    return (time.process_time() - start) / len(frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best is kept)")
    parser.add_argument("--baseline", type=Path, help="another checkout to time too")
    parser.add_argument("--okx-repeat", type=int, default=20, help="copies of the OKX capture")
    args = parser.parse_args()

    kinds = frames_by_kind(args.okx_repeat)
    variants: dict[str, Callable[[], Callable[[RawFrame], Any]]] = {
        "careful": lambda: normalizer(typed=False),
        "typed": lambda: normalizer(typed=True),
        "typed-py": lambda: normalizer(typed=True, native_checks=False),
    }
    if args.baseline is not None:
        variants["baseline"] = lambda: baseline_normalizer(args.baseline)

    for kind, frames in kinds.items():  # same items from every variant, else no timing
        outputs = {name: list(map(make(), frames)) for name, make in variants.items()}
        first = outputs.pop("careful")
        for name, out in outputs.items():
            if out != first:
                sys.exit(f"{kind}: {name} emits other items than careful")

    best: dict[tuple[str, str], float] = {}
    gc.freeze()
    for _ in range(args.repeat):
        for kind, frames in kinds.items():
            timed: dict[str, Callable[[Any], Any]] = {
                name: make() for name, make in variants.items()
            }
            timed["orjson"] = lambda f: orjson.loads(f.text)
            for name, fn in timed.items():
                fn(frames[0])  # warm the symbol caches
                cost = cpu_per_frame(fn, frames)
                best[kind, name] = min(best.get((kind, name), cost), cost)

    names = [*variants, "orjson"]
    print(f"best CPU µs/frame of {args.repeat} rounds (Python {sys.version.split()[0]})")
    print(f"{'kind':<16}{'frames':>8}" + "".join(f"{n:>10}" for n in names) + "  typed/careful")
    for kind, frames in kinds.items():
        cells = "".join(f"{best[kind, n]:>10.2f}" for n in names)
        ratio = best[kind, "typed"] / best[kind, "careful"]
        print(f"{kind:<16}{len(frames):>8}{cells}  {ratio:>12.2f}")


if __name__ == "__main__":
    main()
