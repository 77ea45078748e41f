"""Memory over a long live run: does anything grow without bound?

Run from the repository root::

    .venv/bin/python bench/soak.py                     # 30 min at 20x, RSS every 10 s
    .venv/bin/python bench/soak.py --minutes 3 --warmup 1     # a quick look
    .venv/bin/python bench/soak.py --samples soak.jsonl       # keep every sample

What runs (all on 127.0.0.1):

- one ``candlewax simulate --loop --pace 20x --disconnect-every-s 60`` process per
  bundled capture (Binance spot BTCUSDT and ETHUSDT, Binance USD-M with 4 symbols,
  OKX books-l2-tbt over 10 instruments). ``--loop`` serves the capture again and
  again, each lap on a fresh connection with trade ids, book ids and event times
  moved forward (simulator/laps.py), so the pipeline sees an endless market;
- this process: the live candlewax pipeline (trades, book, bbo, OHLCV 1s/1m,
  dedupe) with a JSONL sink and the WebSocket fan-out sink;
- a child process with two SDK clients of the fan-out: one reads everything, one
  reads one message per second (its queue fills, records are dropped, and after
  ``max_lag_s`` the server disconnects it; the SDK reconnects).

Every ``--every`` seconds it samples this process's RSS (and the client
process's) and the size of every bounded structure (:class:`Probe`). RSS growth
is measured from the end of the warm-up (dedupe windows full, books and bars at
their working size) to the end: the median of the last three samples against the
median of the three samples around the end of the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from candlewax import resync  # noqa: E402
from candlewax.config import PipelineConfig, parse_config  # noqa: E402
from candlewax.metrics import REGISTRY  # noqa: E402
from candlewax.symbols import from_native  # noqa: E402
from flows import inputs, pipeline  # noqa: E402
from operators import symbol_pipeline  # noqa: E402
from simulator.tape import Tape, load_tape  # noqa: E402
from sinks.fanout import threaded  # noqa: E402
from sources import live  # noqa: E402

CAPTURES = ROOT / "fixtures" / "captures"
FEEDS: list[tuple[str, Path]] = [
    ("binance", CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"),
    ("binance", CAPTURES / "binance" / "hftbacktest_spot_ethusdt_20240808.txt.gz"),
    ("binance-usdm", CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"),
    (
        "okx",
        CAPTURES / "okx" / "cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz",
    ),
]
LISTEN_RE = re.compile(r"listening on (ws://\S+)(?:\s+REST (http://\S+))?")


# ---- what the pipeline holds ----


class Probe:
    """Finds the pipeline's long-lived objects and reports their sizes.

    ``install()`` wraps the constructors the dataflow uses (the per-symbol pipelines of
    ``operators.symbol_pipeline``, the venue normalizer, ``LiveFeed``), so every
    object built afterwards is registered here; ``sizes()`` reads them from any
    thread (plain ``len`` of containers: safe under the GIL while the engine runs).
    ``uninstall()`` restores the originals.

    With ``observe=True`` each pipeline is also measured right after every
    batch and timer call, in the worker thread: ``peaks`` then holds the largest
    per-key size ever seen, never a reading taken halfway through a batch.
    """

    def __init__(self, observe: bool = False) -> None:
        self.pipelines: list[Any] = []  # every SymbolPipeline (one per venue:symbol)
        self.normalizers: list[Any] = []
        self.feeds: list[Any] = []
        self.observe = observe
        self.peaks: dict[str, int] = {}
        self.violations: list[str] = []  # per-key bounds exceeded (observe=True)
        self._undo: list[Callable[[], None]] = []

    def install(self) -> Probe:
        self._wrap_pipelines()
        original_normalizer = pipeline.build_normalizer

        def build_normalizer(cfg: PipelineConfig) -> Any:
            normalizer = original_normalizer(cfg)
            self.normalizers.append(normalizer)
            return normalizer

        self._patch(pipeline, "build_normalizer", build_normalizer)
        probe = self

        class RecordedFeed(live.LiveFeed):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                probe.feeds.append(self)

        self._patch(inputs, "LiveFeed", RecordedFeed)
        return self

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _patch(self, module: Any, name: str, value: Any) -> None:
        old = getattr(module, name)
        setattr(module, name, value)
        self._undo.append(lambda: setattr(module, name, old))

    def _wrap_pipelines(self) -> None:
        probe = self

        class RecordedPipeline(symbol_pipeline.SymbolPipeline):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                probe.pipelines.append(self)

            def on_items(self, *args: Any) -> Any:
                out = super().on_items(*args)
                if probe.observe:
                    probe._measure(self)
                return out

            def on_time(self, now: int) -> Any:
                out = super().on_time(now)
                if probe.observe:
                    probe._measure(self)
                return out

        self._patch(symbol_pipeline, "SymbolPipeline", RecordedPipeline)

    def _peak(self, name: str, value: int, bound: int | None = None, key: str = "") -> None:
        if value > self.peaks.get(name, -1):
            self.peaks[name] = value
        if bound is not None and value > bound and len(self.violations) < 100:
            self.violations.append(f"{name} {value} > bound {bound} ({key})")

    def _measure(self, pipe: Any) -> None:
        """Per-key bounds, checked where they must hold: between two engine calls."""
        if pipe.deduper is not None:
            d = pipe.deduper
            self._peak("dedupe_ids", len(d), d.capacity)
        if pipe.bars is not None:
            b = pipe.bars
            for interval in b._intervals:
                # Open windows end after the watermark and start at or before the
                # newest event: (lateness + length) / length of them at most.
                bound = b.lateness_us // interval.length + 2
                key = f"{b.venue}:{b.symbol} {interval.label}"
                self._peak(f"bar_open_windows_{interval.label}", len(interval.windows), bound, key)
        if pipe.book is not None:
            k = pipe.book
            self._peak("book_levels", max(len(k.book.bids), len(k.book.asks)))
            self._peak("book_buffer", len(k._buffer), k._buffer.maxlen, f"{k.venue}:{k.symbol}")
            levels = self.peaks.setdefault(f"book_levels:{k.venue}:{k.symbol}", 0)
            self.peaks[f"book_levels:{k.venue}:{k.symbol}"] = max(
                levels, len(k.book.bids), len(k.book.asks)
            )

    # ---- sizes ----

    def dedupers(self) -> list[Any]:
        return [p.deduper for p in list(self.pipelines) if p.deduper is not None]

    def bar_builders(self) -> list[Any]:
        return [p.bars for p in list(self.pipelines) if p.bars is not None]

    def book_keepers(self) -> list[Any]:
        return [p.book for p in list(self.pipelines) if p.book is not None]

    def connections(self) -> Iterator[Any]:
        for feed in list(self.feeds):
            yield from feed.connections

    def sizes(self) -> dict[str, int]:
        """The largest instance of each structure (per key, per connection, per client)."""
        dedupers = self.dedupers()
        builders = self.bar_builders()
        keepers = self.book_keepers()
        conns = list(self.connections())
        parsers = [p for n in list(self.normalizers) for p in list(n.parsers.values())]
        out = {
            "dedupe_keys": len(dedupers),
            "dedupe_ids": _max(len(d) for d in dedupers),
            "dedupe_capacity": _min(d.capacity for d in dedupers),
            "bar_keys": len(builders),
            "bar_open_windows": _max(len(i.windows) for b in builders for i in list(b._intervals)),
            "book_keys": len(keepers),
            "book_levels": _max(max(len(k.book.bids), len(k.book.asks)) for k in keepers),
            "book_buffer": _max(len(k._buffer) for k in keepers),
            "book_buffer_total": sum(len(k._buffer) for k in keepers),
            "book_buffer_bound": _min(k._buffer.maxlen or 0 for k in keepers),
            "feed_queued": _max(f.queued for f in list(self.feeds)),
            "feed_queued_total": sum(f.queued for f in list(self.feeds)),
            "feed_max_queued": _min(f.max_queued for f in list(self.feeds)),
            "conn_tasks": _max(len(c._tasks) for c in conns),
            "conn_resyncing": _max(len(c._resyncing) for c in conns),
            "conn_last_resync": _max(len(c._last_resync) for c in conns),
            "parser_conn_memory": _max(len(getattr(p, "_depth_by_conn", ())) for p in parsers),
            "resync_listeners": sum(len(v) for v in list(resync._listeners.values())),
            "metric_samples": sum(len(m.samples) for m in REGISTRY.collect()),
            "open_fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(),
        }
        out.update(fanout_sizes())
        return out


def fanout_sizes() -> dict[str, int]:
    """Fan-out server state, read on its own loop (the hub is not thread-safe)."""
    servers = {id(h.thread): h.thread for h in list(threaded._SERVERS.values())}
    out = {
        "fanout_clients": 0,
        "fanout_queued": 0,
        "fanout_queue_size": 0,
        "fanout_outbox_entries": 0,
        "fanout_control_bytes": 0,
        "fanout_routes": 0,
        "fanout_state": 0,
        "fanout_bar_intervals": 0,
    }
    for thread in servers.values():

        def read(hub: Any) -> dict[str, int]:
            boxes = [box for group in hub.groups.values() for box in group.members]
            return {
                "fanout_clients": len(hub.clients),
                "fanout_queued": _max(b.queued for b in boxes),
                "fanout_queue_size": _min(b.limit for b in boxes),
                "fanout_outbox_entries": _max(len(b.entries) for b in boxes),
                "fanout_control_bytes": _max(b.control_bytes for b in boxes),
                "fanout_routes": len(hub.routes),
                "fanout_state": sum(
                    len(d)
                    for d in (
                        hub.state.books,
                        hub.state.bbos,
                        hub.state.bars,
                        hub.state.status,
                        hub.state.venues,
                    )
                ),
                "fanout_bar_intervals": _max(len(b) for b in hub.state.bars.values()),
            }

        with contextlib.suppress(Exception):  # stopping: report zeros
            for key, value in thread.call(read, timeout=5.0).items():
                out[key] = max(out[key], value)
    return out


def _max(values: Any) -> int:
    return max(values, default=0)


def _min(values: Any) -> int:
    return min(values, default=0)


# ---- the run ----


def tape_symbols(tape: Tape) -> list[str]:
    """Unified symbols of every market on the tape (book or trades)."""
    natives: set[str] = set()
    for key in sorted(tape.keys()):
        if tape.venue == "okx":
            natives.add(key.split(":", 1)[1])
        else:
            natives.add(key.split("@", 1)[0].upper())
    return sorted(from_native(tape.venue, n) for n in natives if n)


def soak_config(
    feeds: list[tuple[str, list[str], str, str | None]],
    out: Path,
    fanout_port: int,
    *,
    dedupe_capacity: int = 100_000,
    queue_size: int = 10_000,
    max_lag_s: float = 30.0,
    max_queued: int = 200_000,
    recorder: Path | None = None,
) -> PipelineConfig:
    """The pipeline under test: (venue, symbols, ws_url, rest_url) per simulator."""
    sources = [
        {
            "venue": venue,
            "symbols": symbols,
            "url": url,
            "rest_url": rest_url,
            "channels": ["trades", "book", "bbo"],
            "reconnect": {"base_delay_s": 0.1, "max_delay_s": 2.0, "max_queued": max_queued},
        }
        for venue, symbols, url, rest_url in feeds
    ]
    sinks: list[dict[str, Any]] = [
        {"type": "jsonl", "path": str(out)},
        {
            "type": "websocket",
            "host": "127.0.0.1",
            "port": fanout_port,
            "queue_size": queue_size,
            "max_lag_s": max_lag_s,
            # The server on the flow's own thread: its hub, queues and state are then
            # in this process, where the probe reads them and RSS counts them. (The
            # default server process bounds its feed backlog itself, 32 MiB:
            # tests/test_fanout_process.py.)
            "processes": 0,
        },
    ]
    if recorder is not None:
        sinks.append({"type": "recorder", "path": str(recorder)})
    return parse_config(
        {
            "name": "soak",
            "sources": sources,
            "operators": {
                "dedupe": {"capacity": dedupe_capacity},
                "book": {"depth": 20, "emit_interval_ms": 1000, "bbo": True},
                # Recorded (lap-shifted) event times: windows close on event time.
                "ohlcv": {
                    "intervals": ["1s", "1m"],
                    "lateness_ms": 2000,
                    "partial_updates": True,
                    "wall_clock_close": False,
                },
            },
            "sinks": sinks,
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_simulator(
    venue: str, capture: Path, pace: str, disconnect_s: float, lines: list[str]
) -> tuple[subprocess.Popen[str], str, str | None]:
    """``candlewax simulate --loop`` in its own process; returns it and its URLs."""
    cmd = [
        sys.executable,
        "-m",
        "candlewax.cli",
        "simulate",
        "--venue",
        venue,
        "--capture",
        str(capture),
        "--pace",
        pace,
        "--loop",
        "--disconnect-every-s",
        str(disconnect_s),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = LISTEN_RE.search(line)
        if m:
            # Drained into ``lines``: the last one is the counters printed on Ctrl-C.
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
            return proc, m.group(1), m.group(2)
    raise RuntimeError(f"simulator for {capture.name} exited: {proc.wait()}")


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- SDK clients (child process) ----


def run_clients(url: str, seconds: float, results: Any) -> None:
    asyncio.run(_clients(url, seconds, results))


async def _clients(url: str, seconds: float, results: Any) -> None:
    from candlewax.client import Stream

    counts = {"fast": 0, "slow": 0}

    async def reader(name: str, pause: float) -> None:
        stream = Stream(url, backoff_base=0.2, backoff_max=2.0)
        async for _ in stream:
            counts[name] += 1
            if pause:
                await asyncio.sleep(pause)

    tasks = [
        asyncio.create_task(reader("fast", 0.0)),
        asyncio.create_task(reader("slow", 1.0)),
    ]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    results.put(counts)


# ---- main ----


def median_at(samples: list[dict[str, Any]], t: float, key: str) -> float:
    """Median of ``key`` over the three samples nearest to elapsed time ``t``."""
    near = sorted(samples, key=lambda s: abs(s["t"] - t))[:3]
    return statistics.median(s[key] for s in near)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="minutes before RSS counts")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--pace", default="20x")
    parser.add_argument("--disconnect-every-s", type=float, default=60.0)
    parser.add_argument("--samples", type=Path, help="write every sample here (JSON lines)")
    parser.add_argument("--keep", type=Path, help="keep the JSONL output in this directory")
    parser.add_argument("--dedupe-capacity", type=int, default=100_000)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="print where Python memory grew between the end of the warm-up and the end; "
        "several times slower: use a low --pace (at 10x the pipeline fell behind)",
    )
    args = parser.parse_args(argv)

    duration = args.minutes * 60
    out = args.keep or Path(tempfile.mkdtemp(prefix="candlewax-soak-"))
    sims: list[tuple[str, subprocess.Popen[str], list[str]]] = []
    feeds = []
    for venue, capture in FEEDS:
        lines: list[str] = []
        proc, url, rest = start_simulator(venue, capture, args.pace, args.disconnect_every_s, lines)
        sims.append((capture.name, proc, lines))
        feeds.append((venue, tape_symbols(load_tape(capture, venue)), url, rest))
        print(f"simulator {venue} {capture.name}: {url} {len(feeds[-1][1])} symbols", flush=True)
    fanout_port = free_port()
    cfg = soak_config(feeds, out, fanout_port, dedupe_capacity=args.dedupe_capacity)
    if args.tracemalloc:
        tracemalloc.start(8)
    traced: list[tracemalloc.Snapshot] = []
    probe = Probe().install()

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    clients = ctx.Process(
        target=run_clients,
        args=(f"ws://127.0.0.1:{fanout_port}/stream", duration + 30, results),
        daemon=True,
    )
    samples: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample() -> None:
        time.sleep(5)  # the fan-out server listens once the flow is built
        clients.start()
        while not inputs.STOP.is_set():
            t = time.monotonic() - started
            row: dict[str, Any] = {"t": round(t, 1), "rss_kib": rss_kib()}
            row["load1"] = round(os.getloadavg()[0], 1)  # the machine is shared
            with contextlib.suppress(OSError, ValueError):
                row["clients_rss_kib"] = rss_kib(clients.pid or 0)
            row.update(probe.sizes())
            samples.append(row)
            print(orjson.dumps(row).decode(), flush=True)
            if args.tracemalloc and len(traced) == 0 and t >= args.warmup * 60:
                traced.append(tracemalloc.take_snapshot())
            if t >= duration:
                if traced:
                    traced.append(tracemalloc.take_snapshot())
                inputs.STOP.set()
                break
            time.sleep(max(0.0, args.every - (time.monotonic() - started - t)))

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    try:
        from flows.runner import run_pipeline

        run_pipeline(cfg)
    finally:
        inputs.STOP.set()
        sampler.join(30)
        probe.uninstall()
        counts = {}
        with contextlib.suppress(Exception):
            counts = results.get(timeout=40)
        if clients.is_alive():
            clients.terminate()
        for name, proc, lines in sims:
            proc.send_signal(signal.SIGINT)  # prints its counters
            proc.wait(10)
            time.sleep(0.2)
            print(f"simulator {name}: {lines[-1].strip() if lines else '?'}")
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    if args.samples:
        args.samples.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    report(samples, args, counts)
    if len(traced) == 2:
        print("\nPython memory growth from the end of the warm-up (tracemalloc, top 15):")
        for stat in traced[1].compare_to(traced[0], "traceback")[:15]:
            frames = " <- ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in stat.traceback)
            print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  {frames}")
    return 0


def report(samples: list[dict[str, Any]], args: argparse.Namespace, counts: dict[str, int]) -> None:
    if len(samples) < 6:
        print("too few samples for a report")
        return
    warm, end = args.warmup * 60, samples[-1]["t"]
    base = median_at(samples, warm, "rss_kib")
    last = median_at(samples, end, "rss_kib")
    peak = max(s["rss_kib"] for s in samples if s["t"] >= warm)
    growth = (last - base) / base * 100
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n## soak {when}: {args.minutes:g} min at {args.pace}, disconnect every "
        f"{args.disconnect_every_s:g} s, warm-up {args.warmup:g} min; "
        f"Python {platform.python_version()}"
    )
    print(
        f"RSS after warm-up {base / 1024:.1f} MiB, at the end {last / 1024:.1f} MiB, "
        f"peak after warm-up {peak / 1024:.1f} MiB: growth {growth:+.2f}% "
        f"({'< 5%: bounded' if growth < 5 else 'OVER 5%'})"
    )
    print(f"SDK clients: messages read {counts}")
    keys = [k for k in samples[-1] if k not in ("t",)]
    print("\n| structure | after warm-up | at the end | max over the run |\n|---|--:|--:|--:|")
    for key in keys:
        print(
            f"| {key} | {median_at(samples, warm, key):,.0f} | {samples[-1][key]:,} | "
            f"{max(s.get(key, 0) for s in samples):,} |"
        )


if __name__ == "__main__":
    sys.exit(main())
