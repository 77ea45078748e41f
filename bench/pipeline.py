"""Throughput of the candlewax dataflow against plain-Python baselines, on real Binance frames.

Run from the repository root (docs/benchmarks.md has the results)::

    /work/venv/bin/python bench/pipeline.py             # 5 runs each, 1 and 2 workers (~30 s)
    /work/venv/bin/python bench/pipeline.py --quick     # 10k frames, 2 runs, 1 worker (~2 s)
    /work/venv/bin/python bench/pipeline.py --repeat 9 --workers 1 --batch 2000 --markdown

Input: the two bundled hftbacktest captures (Binance spot BTCUSDT and ETHUSDT,
2024-08-08, 346 s each: depth@100ms, trade, bookTicker and one REST depth
snapshot) are read once into memory as ``RawFrame``s, 74,867 frames in all.
Nothing is repeated or synthesised: every run processes the same frames from
fresh operator state, and each symbol is its own key. Each capture marks its
snapshot "the only symbol of this stream", which is ambiguous once both share
a parser, so the hint gets the capture's native symbol, as the live source
writes it. The loaded frames are ``gc.freeze()``-d: the input store is not what
is measured, and the cyclic GC would otherwise walk it in every full collection.

Measured in the same process, round-robin (drift on a shared machine hits all alike):

A.  ``orjson.loads`` of every frame text: the floor any JSON pipeline pays;
B.  a plain Python loop doing the pipeline's work one frame at a time, no Bytewax:
    Normalizer -> per-key Deduper -> per-key BarBuilder (1s and 1m) for trades,
    per-key BookKeeper (depth 20, top-N every 1 s, BBO on change) for depth msgs,
    every output record counted and dropped; frames in ts_ingest order;
B2. the same loop over batches of ``--batch`` frames, each key's trades handed to
    Deduper.filter / BarBuilder.on_trades as one list (what stateful_batch does):
    the best plain Python we have, the stricter yardstick;
C.  the dataflow of ``flows.pipeline.build_flow`` with the same operator config,
    ``flows.inputs.MemorySource`` (one partition per capture, ``--batch`` frames
    per batch, like the replay source) and a ``null`` sink, run by
    ``bytewax.testing.run_main`` (1 worker) or ``bytewax.run.cli_main`` (worker
    threads in this process).

B, B2 and C must emit the same number of records, or the script fails. Best and
median of the runs are printed. Per-frame latency (p50 / p99 of B's processing
time per frame) comes from one extra, separately timed pass of B.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from bytewax.run import cli_main
from bytewax.testing import run_main

from candlewax.config import PipelineConfig, parse_config
from flows import outputs
from flows.inputs import SOURCE_BATCH, MemorySource
from flows.pipeline import build_flow, build_normalizer
from operators.book import BookKeeper
from operators.dedupe import Deduper
from operators.events import DepthMsg
from operators.ohlcv import BarBuilder
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.replay import read_capture

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = {
    "BTC/USDT": ROOT / "fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz",
    "ETH/USDT": ROOT / "fixtures/captures/binance/hftbacktest_spot_ethusdt_20240808.txt.gz",
}
QUICK_FRAMES = 10_000


# ---- input ----


def _native_symbol(frames: Iterable[RawFrame]) -> str:
    for frame in frames:
        if frame.hint is None:
            obj = orjson.loads(frame.text)
            native = obj.get("data", obj).get("s")
            if isinstance(native, str):
                return native
    raise ValueError("capture has no frame with a symbol")


def load_frames(limit: int | None = None) -> dict[str, list[RawFrame]]:
    """Frames of each capture by symbol; ``limit`` keeps the first frames of the merged stream."""
    streams = {}
    for symbol, path in CAPTURES.items():
        frames = list(read_capture(path, "binance"))
        hint = SNAPSHOT_HINT + _native_symbol(frames)
        streams[symbol] = [f._replace(hint=hint) if f.hint == SNAPSHOT_HINT else f for f in frames]
    if limit is not None:
        cutoff = merged(streams)[limit - 1].ts_ingest
        streams = {s: [f for f in frames if f.ts_ingest <= cutoff] for s, frames in streams.items()}
    return streams


def merged(streams: dict[str, list[RawFrame]]) -> list[RawFrame]:
    """One stream ordered by ts_ingest, as one connection subscribed to all would deliver."""
    return list(heapq.merge(*streams.values(), key=lambda f: f.ts_ingest))


def bench_config() -> PipelineConfig:
    return parse_config(
        {
            "name": "bench",
            "sources": [
                {"venue": "binance", "mode": "replay", "capture": str(path), "symbols": [symbol]}
                for symbol, path in CAPTURES.items()
            ],
            "operators": {"ohlcv": {"intervals": ["1s", "1m"]}},
            "sinks": [{"type": "null"}],
        }
    )


# ---- A: parse only ----


def run_parse_only(frames: Sequence[RawFrame]) -> int:
    loads = orjson.loads
    for frame in frames:
        loads(frame.text)
    return 0


# ---- B: the same work in a plain loop ----


class PlainPipeline:
    """The dataflow's operators called directly, one frame at a time."""

    def __init__(self, cfg: PipelineConfig) -> None:
        ops = cfg.operators
        self.normalize = build_normalizer(cfg)
        self.dedupe_capacity = ops.dedupe.capacity
        self.book_cfg = ops.book
        self.ohlcv_cfg = ops.ohlcv
        self.dedupers: dict[str, Deduper] = {}
        self.bars: dict[str, BarBuilder] = {}
        self.books: dict[str, BookKeeper] = {}

    def process(self, frame: RawFrame) -> int:
        """Records emitted for this frame (counted, then dropped)."""
        emitted = 0
        for key, item in self.normalize(frame):
            if isinstance(item, DepthMsg):
                keeper = self.books.get(key)
                if keeper is None:
                    keeper = self.books[key] = self._keeper(item)
                emitted += len(keeper.on_msg(item))
            elif item["type"] == "trade":
                deduper = self.dedupers.get(key)
                if deduper is None:
                    deduper = self.dedupers[key] = Deduper(self.dedupe_capacity)
                if deduper.seen(item["trade_id"]):
                    continue
                builder = self.bars.get(key)
                if builder is None:
                    builder = self.bars[key] = self._builder(item)
                emitted += 1 + len(builder.on_trades([item], time.time_ns() // 1000))
            else:
                emitted += 1
        return emitted

    def process_batch(self, frames: Sequence[RawFrame]) -> int:
        """Records emitted for a batch, each key's trades handed over as one list, as the
        dataflow's ``stateful_batch`` steps do."""
        emitted = 0
        trades: dict[str, list[dict[str, Any]]] = {}
        depth: dict[str, list[DepthMsg]] = {}
        normalize = self.normalize
        for frame in frames:
            for key, item in normalize(frame):
                if isinstance(item, DepthMsg):
                    depth.setdefault(key, []).append(item)
                elif item["type"] == "trade":
                    trades.setdefault(key, []).append(item)
                else:
                    emitted += 1
        for key, batch in trades.items():
            deduper = self.dedupers.get(key)
            if deduper is None:
                deduper = self.dedupers[key] = Deduper(self.dedupe_capacity)
            fresh = deduper.filter(batch)
            builder = self.bars.get(key)
            if builder is None:
                builder = self.bars[key] = self._builder(batch[0])
            emitted += len(fresh) + len(builder.on_trades(fresh, time.time_ns() // 1000))
        for key, msgs in depth.items():
            keeper = self.books.get(key)
            if keeper is None:
                keeper = self.books[key] = self._keeper(msgs[0])
            for msg in msgs:
                emitted += len(keeper.on_msg(msg))
        return emitted

    def finish(self) -> int:
        """End of stream, as the dataflow's on_eof: open bars and the last book go out."""
        emitted = sum(len(b.flush()) for b in self.bars.values())
        return emitted + sum(len(k.on_tick(2**62)) for k in self.books.values())

    def _keeper(self, msg: DepthMsg) -> BookKeeper:
        cfg = self.book_cfg
        return BookKeeper(
            msg.venue,
            msg.symbol,
            depth=cfg.depth,
            emit_interval_us=cfg.emit_interval_ms * 1000,
            emit_bbo=cfg.bbo,
        )

    def _builder(self, trade: dict[str, Any]) -> BarBuilder:
        cfg = self.ohlcv_cfg
        return BarBuilder(
            trade["venue"],
            trade["symbol"],
            cfg.intervals,
            lateness_us=cfg.lateness_ms * 1000,
            fill_empty=cfg.fill_empty,
            partial_every_us=1_000_000 if cfg.partial_updates else 0,
        )


def run_plain_loop(cfg: PipelineConfig, frames: Sequence[RawFrame]) -> int:
    plain = PlainPipeline(cfg)
    process = plain.process
    emitted = 0
    for frame in frames:
        emitted += process(frame)
    return emitted + plain.finish()


def run_plain_batched(cfg: PipelineConfig, frames: Sequence[RawFrame], batch: int) -> int:
    plain = PlainPipeline(cfg)
    emitted = 0
    for start in range(0, len(frames), batch):
        emitted += plain.process_batch(frames[start : start + batch])
    return emitted + plain.finish()


def plain_latencies_ns(cfg: PipelineConfig, frames: Sequence[RawFrame]) -> list[int]:
    plain = PlainPipeline(cfg)
    process = plain.process
    clock = time.perf_counter_ns
    spent = []
    for frame in frames:
        start = clock()
        process(frame)
        spent.append(clock() - start)
    return spent


# ---- C: the Bytewax dataflow ----


def run_dataflow(
    cfg: PipelineConfig, streams: dict[str, list[RawFrame]], workers: int, batch: int
) -> int:
    outputs.NULL_WRITTEN.clear()
    flow = build_flow(cfg, source=MemorySource(dict(streams), batch_size=batch))
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cli_main(flow, workers_per_process=workers)  # type: ignore[no-untyped-call]
    return sum(outputs.NULL_WRITTEN.values())


# ---- measuring and reporting ----


@dataclass
class Result:
    name: str
    run: Callable[[], int]
    frames: int
    seconds: list[float] = field(default_factory=list)
    emitted: int = 0

    @property
    def best(self) -> float:
        return self.frames / min(self.seconds)

    @property
    def median(self) -> float:
        return self.frames / statistics.median(self.seconds)


def measure_rounds(results: list[Result], repeat: int) -> None:
    """Round-robin, so slow drift of a shared machine hits every measurement alike."""
    for _ in range(repeat):
        for result in results:
            gc.collect()
            start = time.perf_counter()
            result.emitted = result.run()
            result.seconds.append(time.perf_counter() - start)


def percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    return (
        f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, "
        f"Python {platform.python_version()}, bytewax {version('bytewax')}, "
        f"orjson {version('orjson')}"
    )


def report(results: list[Result], markdown: bool) -> None:
    """frames/s and ratios of medians to A, B and B2."""
    parse, plain, batched = results[0], results[1], results[2]
    if markdown:
        print("| measurement | best frames/s | median frames/s | / A | / B | / B2 |")
        print("|---|--:|--:|--:|--:|--:|")
    for r in results:
        a, b, b2 = (f"{r.median / base.median:.3f}" for base in (parse, plain, batched))
        if markdown:
            print(f"| {r.name} | {r.best:,.0f} | {r.median:,.0f} | {a} | {b} | {b2} |")
        else:
            print(
                f"  {r.name:<34} best {r.best:>9,.0f}  median {r.median:>9,.0f} frames/s"
                f"  median / A {a}  / B {b}  / B2 {b2}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--quick", action="store_true", help=f"first {QUICK_FRAMES:,} frames, 2 runs, 1 worker"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts for the dataflow"
    )
    parser.add_argument(
        "--batch", type=int, default=SOURCE_BATCH, help="frames per source batch (and in B2)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    workers = [1] if args.quick else args.workers
    batch = args.batch

    cfg = bench_config()
    streams = load_frames(QUICK_FRAMES if args.quick else None)
    frames = merged(streams)
    n = len(frames)
    # The input store is not part of what is measured: frozen objects are skipped by the
    # cyclic GC, which would otherwise walk all of them in every full collection.
    gc.collect()
    gc.freeze()
    print(f"machine: {machine()}")
    print(
        f"input: {n:,} frames (Binance spot BTCUSDT + ETHUSDT), {repeat} runs each, "
        f"batches of {batch}"
    )

    results = [
        Result("A  parse only (orjson.loads)", lambda: run_parse_only(frames), n),
        Result("B  plain loop, per frame", lambda: run_plain_loop(cfg, frames), n),
        Result("B2 plain loop, batched", lambda: run_plain_batched(cfg, frames, batch), n),
    ]
    for w in workers:
        name = f"C  Bytewax dataflow, {w} worker{'s' if w > 1 else ''}"
        results.append(Result(name, partial(run_dataflow, cfg, streams, w, batch), n))
    measure_rounds(results, repeat)

    expected = results[1].emitted
    wrong = [r for r in results[2:] if r.emitted != expected]
    for r in wrong:
        print(f"MISMATCH: {r.name} emitted {r.emitted:,} records, the per-frame loop {expected:,}")
    if wrong:
        return 1
    report(results, args.markdown)
    print(f"records emitted per run: {expected:,} (B, B2 and C agree)")

    spent = sorted(plain_latencies_ns(cfg, frames))
    print(
        f"B per-frame processing time: p50 {percentile(spent, 0.50) / 1000:.1f} us, "
        f"p99 {percentile(spent, 0.99) / 1000:.1f} us, max {spent[-1] / 1000:.0f} us"
    )
    for r in results[3:]:
        print(
            f"{r.name}: best / B best {r.best / results[1].best:.2f}, "
            f"best / B2 best {r.best / results[2].best:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
