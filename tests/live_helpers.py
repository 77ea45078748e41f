"""Run the live pipeline in-process against exchange simulators on 127.0.0.1.

``run_live`` starts the simulators, points live sources at them (``url`` /
``rest_url``), runs the dataflow and stops it (``flows.inputs.STOP``, as Ctrl-C
and the demo do) once every simulator has served its tape and ``done`` holds on
the output written so far, or at the deadline. A deadline stop is not an error
here: the caller's assertions then report what is missing.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from flow_helpers import Record, outputs

from candlewax.config import PipelineConfig, parse_config
from candlewax.symbols import to_native
from flows import inputs
from flows.runner import run_pipeline
from simulator.embedded import SimulatorThread
from simulator.tape import Tape

Outputs = dict[str, list[Record]]
FAST_RECONNECT = {"base_delay_s": 0.05, "max_delay_s": 0.2}


@dataclass
class Feed:
    """One simulator and the live source connected to it."""

    venue: str
    symbols: list[str]
    sim: SimulatorThread
    channels: list[str] = field(default_factory=lambda: ["trades", "book", "bbo"])

    @property
    def tape(self) -> Tape:
        return self.sim.simulator.tape


def live_config(
    feeds: Iterable[Feed],
    out: Path,
    operators: dict[str, Any],
    extra_sinks: Iterable[dict[str, Any]] = (),
) -> PipelineConfig:
    sources = [
        {
            "venue": feed.venue,
            "symbols": feed.symbols,
            "url": feed.sim.ws_url,
            "rest_url": feed.sim.rest_url,
            "channels": feed.channels,
            "reconnect": FAST_RECONNECT,
        }
        for feed in feeds
    ]
    sinks = [{"type": "jsonl", "path": str(out)}, *extra_sinks]
    # A copy: environment overrides are applied in place.
    data = {
        "name": "e2e",
        "sources": sources,
        "operators": copy.deepcopy(operators),
        "sinks": sinks,
    }
    return parse_config(data)


class _Tail:
    """Records appended to the JSONL files of ``out`` so far (complete lines only)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.records: Outputs = {}
        self._offsets: dict[str, int] = {}

    def read(self) -> Outputs:
        for name in ("trades", "bars", "book", "status"):
            path = self.out / f"{name}.jsonl"
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(self._offsets.get(name, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._offsets[name] = self._offsets.get(name, 0) + end
            lines = data[:end].splitlines()
            self.records.setdefault(name, []).extend(orjson.loads(x) for x in lines if x)
        return self.records


def run_live(
    feeds: list[Feed],
    out: Path,
    operators: dict[str, Any],
    done: Callable[[Outputs], bool] = lambda _: True,
    *,
    extra_sinks: Iterable[dict[str, Any]] = (),
    timeout_s: float = 30.0,
) -> Outputs:
    """Run the live pipeline over ``feeds``; returns every JSONL channel of ``out``."""
    for feed in feeds:
        feed.sim.start()
    finished = threading.Event()

    def stop_when_served() -> None:
        deadline = time.monotonic() + timeout_s
        tail = _Tail(out)
        while time.monotonic() < deadline and not finished.is_set():
            served = all(feed.sim.stats.finished >= 1 for feed in feeds)
            if served and done(tail.read()):
                break
            time.sleep(0.1)
        if not finished.is_set():
            inputs.STOP.set()

    watcher = threading.Thread(target=stop_when_served, name="e2e-stop", daemon=True)
    try:
        cfg = live_config(feeds, out, operators, extra_sinks)
        watcher.start()
        run_pipeline(cfg)
    finally:
        finished.set()  # a watcher still running must not stop a later run
        watcher.join(10)
        for feed in feeds:
            feed.sim.stop()
    return outputs(out)


def has_trades(symbol: str, trade_ids: set[str]) -> Callable[[Outputs], bool]:
    """``done`` predicate: every one of these trades of ``symbol`` was written."""

    def check(records: Outputs) -> bool:
        seen = {t["trade_id"] for t in records.get("trades", []) if t["symbol"] == symbol}
        return trade_ids <= seen

    return check


def all_of(*checks: Callable[[Outputs], bool]) -> Callable[[Outputs], bool]:
    return lambda records: all(check(records) for check in checks)


def tape_trade_ids(tape: Tape, venue: str, symbol: str) -> list[str]:
    """Trade ids of ``symbol`` on the tape, in tape order (what the live source must deliver)."""
    native = to_native(venue, symbol)
    ids: list[str] = []
    for entry in tape.entries:
        if venue == "okx":
            if entry.key == f"trades:{native}":
                ids.extend(d["tradeId"] for d in orjson.loads(entry.text)["data"])
        elif entry.key == f"{native.lower()}@trade":
            ids.append(str(orjson.loads(entry.text)["data"]["t"]))
    return ids
