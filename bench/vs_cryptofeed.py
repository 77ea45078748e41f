"""candlewax's dataflow against cryptofeed 2.4.1's Binance feed, on the same real frames.

The yardstick of issue 8 (the hot path at >= 3x cryptofeed's frames/s, same output).
Needs the bench extra: ``pip install -e '.[bench]'`` (cryptofeed==2.4.1 from PyPI).
Run from the repository root (docs/benchmarks.md has the results)::

    .venv/bin/python bench/vs_cryptofeed.py                    # ETHUSDT and BTCUSDT, 7 rounds
    .venv/bin/python bench/vs_cryptofeed.py --capture eth --rounds 3
    .venv/bin/python bench/vs_cryptofeed.py --markdown

Input: the bundled hftbacktest captures (Binance spot, 2024-08-08, 346 s each: depth@100ms
diffs, trades, bookTicker and one REST depth snapshot), read once into memory before timing.
Each capture is measured on its own; both sides get every frame of it.

cryptofeed: its ``Binance`` feed, built the way a user builds it (symbols, channels L2_BOOK,
TRADES and TICKER, one counting ``async`` callback per channel, its own order book kept with
the default ``max_depth=0``). Nothing in its processing is changed; only the network is
replaced, before timing:

- the symbol table: ``Binance.http_sync`` answers the exchangeInfo request with the capture's
  symbol (status TRADING, base and quote assets), so its own ``_parse_symbol_data`` builds it;
- the REST depth snapshot: ``feed.http_conn.read`` answers the depth URL with the capture's
  recorded snapshot body (checked: requested once per round, for the capture's symbol);
- the WebSocket: every other frame goes to ``feed.message_handler(text, conn, receipt_ts)``,
  one ``await`` per frame, as its ``ConnectionHandler._handler`` does, with the connection
  object from ``feed.connect()`` (after ``feed.subscribe(conn)``, as on connect).

cryptofeed's Binance feed reads trades from the ``aggTrade`` stream only; a ``@trade`` frame
(what the captures hold) would be logged as unexpected and dropped. So each trade frame is
given to it as an aggTrade frame: ``"e":"trade"`` -> ``"e":"aggTrade"`` and the trade id key
``"t"`` -> ``"a"``; the fields its ``_trade`` reads (s, m, q, p, T, a) are all there. This
text rewrite happens at load time, not in the timed loop.

Checked after every cryptofeed round (the script fails otherwise): it delivered one L2_BOOK
update for the snapshot plus one per depth diff past the snapshot's lastUpdateId, one trade
per trade frame, one ticker per bookTicker frame, logged no warning or error (a gap, a reset
or an unexpected message would), and its final top-20 book equals candlewax's last book.
Exceptions are not caught anywhere: one stops the script.

candlewax: ``flows.pipeline.build_flow`` with the production operators (normalize, dedupe,
book top-20 + BBO, OHLCV 1s and 1m), ``flows.inputs.MemorySource`` with the same frames and
a ``null`` sink, run by ``bytewax.testing.run_main`` (1 worker). One untimed run with the JSONL
sink first gives the records to expect (the null sink must count as many every round) and the
final book.

Rounds alternate (cryptofeed, candlewax, cryptofeed, ...) so drift on a shared machine hits
both alike; each round prints frames/s of both and candlewax / cryptofeed, then the medians.
The same ratio by CPU time of this process (``time.process_time``) is printed too: on a
machine shared with other jobs it moves less than the wall clock.
Frames/s count every frame of the capture on both sides (the REST snapshot included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bytewax.testing import run_main  # noqa: E402

from bench.pipeline import machine  # noqa: E402
from candlewax.config import PipelineConfig, parse_config  # noqa: E402
from candlewax.symbols import from_native  # noqa: E402
from flows import outputs  # noqa: E402
from flows.inputs import MemorySource  # noqa: E402
from flows.pipeline import build_flow  # noqa: E402
from sources.frames import SNAPSHOT_HINT, RawFrame  # noqa: E402
from sources.replay import read_capture  # noqa: E402

CAPTURES = {
    "eth": ROOT / "fixtures/captures/binance/hftbacktest_spot_ethusdt_20240808.txt.gz",
    "btc": ROOT / "fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz",
}
DEPTH = 20
LOG_NAME = "feedhandler"  # cryptofeed's logger


# ---- input ----


@dataclass
class Capture:
    name: str
    native: str  # ETHUSDT
    symbol: str  # ETH/USDT
    frames: list[RawFrame]  # what candlewax gets: every frame, snapshot included
    ws: list[tuple[str, float]]  # what cryptofeed's handler gets: (text, receipt time in s)
    snapshot: str  # the REST depth body, served by the HTTP shim
    kinds: Counter[str]

    @property
    def expected_cryptofeed(self) -> Counter[str]:
        """Callbacks cryptofeed must deliver: a book for the snapshot and for every depth
        diff past it (earlier ones are skipped by its sequence check), a trade per trade
        frame, a ticker per bookTicker frame."""
        last_update_id = orjson.loads(self.snapshot)["lastUpdateId"]
        after = sum(
            1
            for text, _ in self.ws
            if '"depthUpdate"' in text and orjson.loads(text)["data"]["u"] > last_update_id
        )
        return Counter(book=1 + after, trade=self.kinds["trade"], ticker=self.kinds["bookTicker"])


def _kind(frame: RawFrame) -> str:
    if frame.hint is not None:
        return "snapshot"
    return str(orjson.loads(frame.text)["stream"].split("@", 1)[1].split("@")[0])


def as_agg_trade(text: str) -> str:
    """A Binance ``@trade`` frame in the shape of an ``@aggTrade`` one (see the docstring)."""
    data = orjson.loads(text)["data"]
    if data.get("e") != "trade" or "a" in data:
        raise ValueError(f"not a plain trade frame: {text[:200]}")
    out = text.replace('"e":"trade"', '"e":"aggTrade"', 1).replace(',"t":', ',"a":', 1)
    converted = orjson.loads(out)["data"]
    if converted["a"] != data["t"] or converted["e"] != "aggTrade":
        raise ValueError(f"cannot rewrite trade frame: {text[:200]}")
    return out


def load_capture(name: str, limit: int | None = None) -> Capture:
    """The capture's frames (its first ``limit`` ones, for tests)."""
    frames = list(read_capture(CAPTURES[name], "binance"))[:limit]
    kinds = Counter(_kind(f) for f in frames)
    snapshots = [f for f in frames if f.hint is not None]
    if len(snapshots) != 1 or not frames:
        raise ValueError(f"{name}: expected one REST snapshot, found {len(snapshots)}")
    first = next(f for f in frames if f.hint is None)
    native = orjson.loads(first.text)["data"]["s"]
    # The live source names the snapshot's symbol; the capture says "the one symbol".
    frames = [f._replace(hint=SNAPSHOT_HINT + native) if f.hint else f for f in frames]
    ws = [
        (as_agg_trade(f.text) if _kind(f) == "trade" else f.text, f.ts_ingest / 1e6)
        for f in frames
        if f.hint is None
    ]
    symbol = from_native("binance", native)
    return Capture(name, native, symbol, frames, ws, snapshots[0].text, kinds)


# ---- cryptofeed, offline ----


class OfflineSymbolTable:
    """Stands in for ``Exchange.http_sync``: exchangeInfo of the captured symbols."""

    def __init__(self, captures: Sequence[Capture]) -> None:
        self.symbols = [
            {
                "symbol": c.native,
                "status": "TRADING",
                "baseAsset": c.symbol.split("/")[0],
                "quoteAsset": c.symbol.split("/")[1],
                # Only stored in cryptofeed's symbol info; no handler reads it.
                "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01000000"}],
            }
            for c in captures
        ]
        self.requests: list[str] = []

    def read(self, address: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(address)
        if not urlparse(address).path.endswith("/exchangeInfo"):
            raise RuntimeError(f"offline: unexpected request {address}")
        return {"symbols": self.symbols}


class OfflineDepth:
    """Stands in for ``feed.http_conn``: the capture's REST depth snapshot."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.requests: list[str] = []

    async def read(self, address: str, *args: Any, **kwargs: Any) -> str:
        self.requests.append(address)
        url = urlparse(address)
        if not url.path.endswith("/depth") or parse_qs(url.query)["symbol"] != [
            self.capture.native
        ]:
            raise RuntimeError(f"offline: unexpected request {address}")
        return self.capture.snapshot

    async def close(self) -> None:
        pass


class WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class CryptofeedRun:
    """One fresh feed (built before timing) and what its callbacks received."""

    capture: Capture
    counts: Counter[str] = field(default_factory=Counter)
    last_book: Any = None

    def __post_init__(self) -> None:
        from cryptofeed.defines import L2_BOOK, TICKER, TRADES
        from cryptofeed.exchanges import Binance

        async def on_book(book: Any, receipt: float) -> None:
            self.counts["book"] += 1
            self.last_book = book

        async def on_trade(trade: Any, receipt: float) -> None:
            self.counts["trade"] += 1

        async def on_ticker(ticker: Any, receipt: float) -> None:
            self.counts["ticker"] += 1

        std = self.capture.symbol.replace("/", "-")  # cryptofeed's ETH-USDT
        self.feed = Binance(
            symbols=[std],
            channels=[L2_BOOK, TRADES, TICKER],
            callbacks={L2_BOOK: on_book, TRADES: on_trade, TICKER: on_ticker},
        )
        self.depth = OfflineDepth(self.capture)
        self.feed.http_conn = self.depth
        (self.conn, self.subscribe, self.handler, _auth), *more = self.feed.connect()
        if more:
            raise RuntimeError("expected one WebSocket connection")
        lower = self.capture.native.lower()
        for stream in (f"{lower}@depth@100ms", f"{lower}@aggTrade", f"{lower}@bookTicker"):
            if stream not in self.conn.address:
                raise RuntimeError(f"{stream} not subscribed: {self.conn.address}")

    async def _consume(self) -> None:
        await self.subscribe(self.conn)  # what its connection handler does on connect
        handler, conn = self.handler, self.conn
        for text, receipt in self.capture.ws:
            await handler(text, conn, receipt)

    def run(self, loop: asyncio.AbstractEventLoop) -> tuple[float, float]:
        """Wall and CPU seconds."""
        start, cpu = time.perf_counter(), time.process_time()
        loop.run_until_complete(self._consume())
        return time.perf_counter() - start, time.process_time() - cpu


def top_levels(book: Any) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """cryptofeed's book -> top-``DEPTH`` (price, size) per side, best first."""
    return (book.book.bids.to_list()[:DEPTH], book.book.asks.to_list()[:DEPTH])


def check_cryptofeed(run: CryptofeedRun, warnings: WarningCounter, final: Any) -> None:
    expected = run.capture.expected_cryptofeed
    if run.counts != expected:
        raise SystemExit(f"cryptofeed delivered {dict(run.counts)}, expected {dict(expected)}")
    if len(run.depth.requests) != 1:
        raise SystemExit(f"cryptofeed asked for {len(run.depth.requests)} snapshots, not 1")
    if warnings.messages:
        raise SystemExit(f"cryptofeed logged: {warnings.messages[:3]}")
    if top_levels(run.last_book) != final:
        raise SystemExit("cryptofeed's final top-20 book differs from candlewax's")


# ---- candlewax ----


def candlewax_config(capture: Capture, sink: dict[str, Any]) -> PipelineConfig:
    return parse_config(
        {
            "name": "vs-cryptofeed",
            "sources": [
                {
                    "venue": "binance",
                    "mode": "replay",
                    "capture": str(CAPTURES[capture.name]),
                    "symbols": [capture.symbol],
                }
            ],
            "operators": {"ohlcv": {"intervals": ["1s", "1m"]}, "book": {"depth": DEPTH}},
            "sinks": [sink],
        }
    )


def candlewax_reference(capture: Capture) -> tuple[int, Any]:
    """Records the flow writes (JSONL sink, untimed) and its last book, as Decimal levels."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = candlewax_config(capture, {"type": "jsonl", "path": tmp})
        run_main(build_flow(cfg, source=MemorySource({capture.name: capture.frames})))  # type: ignore[no-untyped-call]
        records = [
            orjson.loads(line)
            for path in sorted(Path(tmp).glob("*.jsonl"))
            for line in path.read_bytes().splitlines()
        ]
    book = [r for r in records if r["type"] == "book"][-1]

    def levels(side: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
        return [(Decimal(p), Decimal(s)) for p, s in side]

    return len(records), (levels(book["bids"]), levels(book["asks"]))


def run_candlewax(capture: Capture, expected_records: int) -> tuple[float, float]:
    """Wall and CPU seconds."""
    outputs.NULL_WRITTEN.clear()
    flow = build_flow(
        candlewax_config(capture, {"type": "null"}),
        source=MemorySource({capture.name: capture.frames}),
    )
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    written = sum(outputs.NULL_WRITTEN.values())
    if written != expected_records:
        raise SystemExit(f"candlewax wrote {written} records, expected {expected_records}")
    return seconds, cpu_seconds


# ---- rounds ----


@dataclass
class Comparison:
    capture: Capture
    cryptofeed_s: list[float] = field(default_factory=list)
    candlewax_s: list[float] = field(default_factory=list)
    cryptofeed_cpu: list[float] = field(default_factory=list)
    candlewax_cpu: list[float] = field(default_factory=list)

    def rate(self, seconds: float) -> float:
        return len(self.capture.frames) / seconds

    @property
    def ratios(self) -> list[float]:
        return [c / w for c, w in zip(self.cryptofeed_s, self.candlewax_s, strict=True)]

    @property
    def cpu_ratios(self) -> list[float]:
        return [c / w for c, w in zip(self.cryptofeed_cpu, self.candlewax_cpu, strict=True)]


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as cryptofeed's FeedHandler.run picks it."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def measure(capture: Capture, rounds: int, say: Callable[[str], None]) -> Comparison:
    warnings = WarningCounter()
    logging.getLogger(LOG_NAME).addHandler(warnings)
    records, final = candlewax_reference(capture)
    comparison = Comparison(capture)
    for i in range(rounds):
        run = CryptofeedRun(capture)
        loop = new_loop()
        gc.collect()
        cf, cf_cpu = run.run(loop)
        loop.close()
        check_cryptofeed(run, warnings, final)
        gc.collect()
        cw, cw_cpu = run_candlewax(capture, records)
        comparison.cryptofeed_s.append(cf)
        comparison.candlewax_s.append(cw)
        comparison.cryptofeed_cpu.append(cf_cpu)
        comparison.candlewax_cpu.append(cw_cpu)
        say(
            f"  round {i + 1}: cryptofeed {comparison.rate(cf):>9,.0f}  candlewax "
            f"{comparison.rate(cw):>9,.0f} frames/s  candlewax/cryptofeed {cf / cw:.3f} "
            f"(CPU time: {cf_cpu / cw_cpu:.3f})"
        )
    logging.getLogger(LOG_NAME).removeHandler(warnings)
    say(
        f"  checked every round: cryptofeed callbacks {dict(run.counts)} as expected, 1 "
        f"snapshot request, no warnings, final top-{DEPTH} book = candlewax's; candlewax "
        f"{records:,} records"
    )
    return comparison


def report(comparisons: list[Comparison], markdown: bool) -> None:
    if markdown:
        print(
            "| capture | frames | cryptofeed median frames/s | candlewax median frames/s "
            "| candlewax / cryptofeed (median of rounds) | range | same, by CPU time |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|")
    for c in comparisons:
        cf = c.rate(statistics.median(c.cryptofeed_s))
        cw = c.rate(statistics.median(c.candlewax_s))
        ratio = statistics.median(c.ratios)
        lo, hi = min(c.ratios), max(c.ratios)
        cpu = statistics.median(c.cpu_ratios)
        if markdown:
            print(
                f"| {c.capture.native} | {len(c.capture.frames):,} | {cf:,.0f} | {cw:,.0f} "
                f"| **{ratio:.3f}** | {lo:.3f} - {hi:.3f} | {cpu:.3f} |"
            )
        else:
            print(
                f"{c.capture.native}: median cryptofeed {cf:,.0f}  candlewax {cw:,.0f} "
                f"frames/s; candlewax/cryptofeed median {ratio:.3f} (rounds {lo:.3f} - {hi:.3f}),"
                f" by CPU time {cpu:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--capture", choices=sorted(CAPTURES), action="append", help="default: eth and btc"
    )
    parser.add_argument("--rounds", type=int, default=7, help="cryptofeed/candlewax pairs")
    parser.add_argument("--markdown", action="store_true", help="summary as a markdown table")
    args = parser.parse_args(argv)
    try:
        from cryptofeed.exchanges import Binance
    except ImportError:
        print("needs the bench extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from importlib.metadata import version

    captures = [load_capture(name) for name in args.capture or ["eth", "btc"]]
    symbol_table = OfflineSymbolTable(captures)
    Binance.http_sync = symbol_table  # before the first feed reads the symbol table
    gc.collect()
    gc.freeze()  # the frames in memory are input, not measured
    print(f"machine: {machine()}, cryptofeed {version('cryptofeed')}")
    comparisons = []
    for capture in captures:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(capture.kinds.items()))
        print(f"{capture.native}: {len(capture.frames):,} frames ({kinds}), {args.rounds} rounds")
        comparisons.append(measure(capture, args.rounds, print))
    report(comparisons, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
