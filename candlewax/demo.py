"""``candlewax demo``: the live pipeline against the embedded exchange simulator.

Three simulators on 127.0.0.1 replay bundled real recordings (Binance spot
BTCUSDT and ETHUSDT, OKX BTC-USDT) in each venue's own protocol; the live
sources connect to them exactly as to the venues (subscribe, keep-alive,
Binance REST snapshot sync). When every simulator has served its whole tape,
the demo stops the sources and the end-of-stream flushes every bar and file.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from candlewax.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "fixtures" / "captures"
DEMO_FEEDS: list[tuple[str, str, Path]] = [
    ("binance", "BTC/USDT", CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"),
    ("binance", "ETH/USDT", CAPTURES / "binance" / "hftbacktest_spot_ethusdt_20240808.txt.gz"),
    (
        "okx",
        "BTC/USDT",
        CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz",
    ),
]


def demo_config(urls: list[tuple[str, str | None]], out: Path) -> dict[str, Any]:
    sources = []
    for (venue, symbol, _), (ws_url, rest_url) in zip(DEMO_FEEDS, urls, strict=True):
        sources.append(
            {
                "venue": venue,
                "symbols": [symbol],
                "url": ws_url,
                "rest_url": rest_url,
                "channels": ["trades", "book", "bbo"],
            }
        )
    return {
        "name": "demo",
        "sources": sources,
        "operators": {
            "book": {"depth": 10, "emit_interval_ms": 1000},
            # The simulators shift event times to now but replay 20x faster than
            # recorded, so event time runs ahead of the wall clock: close windows on
            # event time only (the end of the demo flushes the last ones).
            "ohlcv": {"intervals": ["1s", "1m"], "lateness_ms": 2000, "wall_clock_close": False},
        },
        "sinks": [
            {"type": "console", "intervals": ["1m"]},
            {"type": "jsonl", "path": str(out)},
            {"type": "parquet", "path": str(out / "parquet")},
        ],
    }


def _stop_when_served(sims: list[Any], timeout_s: float) -> None:
    from flows import inputs

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not inputs.STOP.is_set():
        if all(sim.stats.finished >= 1 for sim in sims):
            time.sleep(1.5)  # let the last frames cross the socket
            break
        time.sleep(0.2)
    inputs.STOP.set()


def run_demo(out: Path, pace: str = "20x", quiet: bool = False) -> int:
    from candlewax.preflight import PreflightError, writable_dir
    from flows.runner import run_pipeline
    from simulator.embedded import SimulatorThread
    from sources.replay import parse_pace

    # Before any simulator starts: the user chose only --out and --pace.
    try:
        parse_pace(pace)
    except ValueError as exc:
        raise PreflightError(f"--pace: {exc}") from None
    writable_dir(out, "--out")
    writable_dir(out / "parquet", "--out")
    sims = [SimulatorThread(venue, path, pace=pace) for venue, _, path in DEMO_FEEDS]
    try:
        urls = []
        for sim in sims:
            sim.start()
            urls.append((sim.ws_url, sim.rest_url))
        data = demo_config(urls, out)
        if quiet:
            data["sinks"] = data["sinks"][1:]
        cfg = parse_config(data, "demo")
        print(f"simulators: {', '.join(url for url, _ in urls)}  pace {pace}; output -> {out}/")
        from flows import inputs

        inputs.STOP.clear()  # a previous run in this process may have left it set
        watcher = threading.Thread(target=_stop_when_served, args=(sims, 900.0), daemon=True)
        started = time.monotonic()
        watcher.start()
        run_pipeline(cfg)
    finally:
        for sim in sims:
            sim.stop()
    print(summary(out, time.monotonic() - started))
    return 0


def _label(record: dict[str, Any]) -> str:
    kind = record["type"]
    if kind == "bbo":
        return f"bbo from {record['origin']}"
    if kind == "book":
        return f"top-{record['depth']} book"
    return str(record.get("event") or record.get("interval") or "")


def summary(out: Path, seconds: float) -> str:
    import orjson

    lines = [f"demo finished in {seconds:.1f}s; files in {out}/:"]
    for name in ("trades", "bars", "book", "status", "late", "dead_letter"):
        path = out / f"{name}.jsonl"
        counts: Counter[str] = Counter()
        if path.exists():
            for raw in path.read_bytes().splitlines():
                record = orjson.loads(raw)
                label = _label(record)
                counts[f"{record.get('venue', '')} {label or ''}".strip()] += 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
        lines.append(f"  {name + '.jsonl':<18} {sum(counts.values()):>7}  ({detail})")
    parquet = sorted((out / "parquet").glob("*.parquet"))
    lines.append(f"  parquet/           {len(parquet):>7} part file(s) of final bars")
    return "\n".join(lines)
