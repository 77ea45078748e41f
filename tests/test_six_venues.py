"""examples/six_venues.yaml, as shipped, against one simulator per venue.

The example is loaded as a user would load it; only each source's URLs (and the
JSONL sink's directory) are pointed at this run. Each simulator replays the
venue's bundled capture over real WebSockets at max pace; the run stops once every
simulator has served its tape and every symbol has trades and a synced book, or at
a deadline (then the assertions say what is missing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from flow_helpers import CAPTURES, ROOT, Record, outputs

from candlewax.config import PipelineConfig, load_config, parse_config
from flows import inputs
from flows.runner import run_pipeline
from simulator.embedded import SimulatorThread
from simulator.faults import Faults

pytestmark = pytest.mark.timeout(120)

EXAMPLE = ROOT / "examples" / "six_venues.yaml"
Outputs = dict[str, list[Record]]
# Binance fetches its REST snapshot 1 s after the first diff and Coinbase subscribes
# one channel per frame: hold those streams early so the book syncs (every channel
# is subscribed) while most of the tape is still to come, whatever the load.
SNAPSHOT_HOLD = Faults(stall_after=300, stall_seconds=2.0)
SUBSCRIBE_HOLD = Faults(stall_after=2, stall_seconds=1.5)
SIMULATORS: dict[str, dict[str, Any]] = {
    "binance": {
        "capture": CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz",
        "limit": 3000,
        "faults": SNAPSHOT_HOLD,
    },
    "binance-usdm": {
        "capture": CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz",
        "faults": SNAPSHOT_HOLD,
    },
    "okx": {"capture": CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"},
    "coinbase": {
        "capture": CAPTURES / "coinbase" / "cryptofeed_advanced_trade_2026-08-09.jsonl.gz",
        "faults": SUBSCRIBE_HOLD,
    },
    "kraken": {
        "capture": CAPTURES / "kraken" / "cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"
    },
    "bybit": {"capture": CAPTURES / "bybit" / "cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz"},
    "hyperliquid": {
        "capture": CAPTURES / "hyperliquid" / "hftbacktest_btc_l2Book_trades_20250126.txt.gz"
    },
}
FAULT_EVENTS = {"gap_detected", "resync_requested", "checksum_mismatch"}
# Venues whose capture holds no trade the live source subscribes to (none today).
NO_TRADES_ON_TAPE: set[str] = set()


def example_with(sims: dict[str, SimulatorThread], out: Path) -> PipelineConfig:
    """The example, with each source's URLs pointed at its simulator and the JSONL
    sink writing to ``out``; everything else as written."""
    data = yaml.safe_load(EXAMPLE.read_text())
    for source in data["sources"]:
        sim = sims[source["venue"]]
        source["url"] = sim.ws_url
        source["rest_url"] = sim.rest_url
    (jsonl,) = [sink for sink in data["sinks"] if sink["type"] == "jsonl"]
    jsonl["path"] = str(out)
    return parse_config(data)


def wanted(cfg: PipelineConfig) -> set[tuple[str, str]]:
    return {(source.venue, symbol) for source in cfg.sources for symbol in source.symbols}


def read_so_far(out: Path) -> Outputs:
    """Complete lines of the trades and book files written so far."""
    records: Outputs = {}
    for name in ("trades", "book"):
        path = out / f"{name}.jsonl"
        data = path.read_bytes() if path.exists() else b""
        lines = data[: data.rfind(b"\n") + 1].splitlines()
        records[name] = [orjson.loads(line) for line in lines if line]
    return records


def delivered(records: Outputs, kind: str) -> set[tuple[str, str]]:
    channel = "trades" if kind == "trade" else "book"
    return {(r["venue"], r["symbol"]) for r in records[channel] if r["type"] == kind}


def with_trades(want: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(venue, symbol) for venue, symbol in want if venue not in NO_TRADES_ON_TAPE}


def everything_in(want: set[tuple[str, str]]) -> Callable[[Outputs], bool]:
    return lambda records: (
        with_trades(want) <= delivered(records, "trade") and want <= delivered(records, "book")
    )


def run_until(
    cfg: PipelineConfig,
    sims: list[SimulatorThread],
    out: Path,
    done: Callable[[Outputs], bool],
    timeout_s: float = 45.0,
) -> Outputs:
    """Run the pipeline; stop it (as Ctrl-C does) once every simulator served its
    tape and ``done`` holds, or at the deadline."""
    finished = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not finished.is_set():
            if all(sim.stats.finished >= 1 for sim in sims) and done(read_so_far(out)):
                break
            time.sleep(0.2)
        if not finished.is_set():
            inputs.STOP.set()

    watcher = threading.Thread(target=watch, name="six-venues-stop", daemon=True)
    watcher.start()
    try:
        run_pipeline(cfg)
    finally:
        finished.set()
        watcher.join(10)
    return outputs(out)


def test_the_example_validates() -> None:
    cfg = load_config(EXAMPLE)
    venues = {source.venue for source in cfg.sources}
    assert venues == set(SIMULATORS)
    assert [sink.type for sink in cfg.sinks] == ["jsonl"]


def test_the_example_runs_all_six_venues_against_the_simulator(tmp_path: Path) -> None:
    sims = {
        venue: SimulatorThread(venue, options.pop("capture"), **options)
        for venue, options in ((v, dict(o)) for v, o in SIMULATORS.items())
    }
    for sim in sims.values():
        sim.start()
    try:
        cfg = example_with(sims, tmp_path)
        want = wanted(cfg)
        records = run_until(cfg, list(sims.values()), tmp_path, everything_in(want))
    finally:
        for sim in sims.values():
            sim.stop()

    assert delivered(records, "trade") == with_trades(want)
    assert want <= delivered(records, "book")
    assert want <= delivered(records, "bbo")
    # The venue's own BBO (its ticker), where the example subscribes to it.
    with_bbo = {source.venue for source in cfg.sources if "bbo" in source.channels}
    tickers = {r["venue"] for r in records["book"] if r.get("origin") == "ticker"}
    assert tickers == with_bbo
    assert not records["dead_letter"], records["dead_letter"][:3]
    faults = [s for s in records["status"] if s["event"] in FAULT_EVENTS]
    assert not faults, faults[:3]
