"""A short soak (2 minutes): every structure that lives as long as the pipeline stays
within its bound while the simulator loops its captures with disconnects.

No timing and no RSS here (bench/soak.py reports RSS over 30 minutes): the
bounds are read from the structures themselves (bench.soak.Probe), per key
right after each engine call, and for the rest once a second. The bounds are set
small (dedupe capacity, fan-out queue, live queue) so that two minutes reach them.
Also here: the simulator's ``loop`` option that the soak needs.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import orjson
import pytest
from flow_helpers import BTC_SPOT, CAPTURES, OKX_TBT
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.soak import Probe, free_port, run_clients, soak_config, tape_symbols
from candlewax.metrics import REGISTRY
from candlewax.schema import CHANNEL_OF_TYPE, StatusEvent
from candlewax.symbols import from_native
from flows import inputs
from flows.runner import run_pipeline
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.laps import LapShift
from simulator.market import Replica
from simulator.server import Simulator
from simulator.tape import Tape, load_tape
from sources.registry import PARSERS

pytestmark = pytest.mark.timeout(400)

USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
SOAK_S = 120.0
SAMPLE_S = 1.0
DEDUPE_CAPACITY = 2_000  # the BTC capture alone has ~9,800 trades per lap
FANOUT_QUEUE = 200  # messages per client: the slow client overflows it
MAX_QUEUED = 2_000  # live source queue (frames): the dataflow falls behind at times
# Readers check the bound after delivering the frame in hand; REST snapshots and
# status dicts are queued without waiting. A few per connection at most.
QUEUE_SLACK = 64
MAX_PARSER_CONNS = 64  # sources/binance.py: per-connection symbol memory
JSONL_CHANNELS = 6  # trades, bars, book, status, late, dead_letter
RECORDER_MAX_OPEN = 64  # sinks/recorder.py default
STATUS_EVENTS = set(get_args(StatusEvent))


# ---- the loop option of the simulator ----


BTC_STREAMS = "btcusdt@trade/btcusdt@depth@100ms"


def test_lap_shift_moves_ids_and_times_but_not_prices() -> None:
    tape = load_tape(BTC_SPOT, "binance", limit=400)
    laps = LapShift(tape)
    text = (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
        '"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true}}'
    )
    data = orjson.loads(laps.apply(text, 2))["data"]
    assert data["t"] == 3735683259 + 2 * laps.id_stride
    assert data["T"] == 1723161255342 + 2 * laps.time_stride_ms
    assert (data["p"], data["q"]) == ("61837.63000000", "0.02000000")
    assert laps.apply(text, 0) == text
    okx = LapShift(load_tape(OKX_TBT, "okx", limit=400))
    snap = '{"data":[{"prevSeqId":-1,"seqId":1005,"ts":"1646003667000","checksum":-5}]}'
    shifted = orjson.loads(okx.apply(snap, 1))["data"][0]
    assert shifted["prevSeqId"] == -1  # a snapshot stays a snapshot
    assert shifted["seqId"] == 1005 + okx.id_stride
    assert int(shifted["ts"]) == 1646003667000 + okx.time_stride_ms
    assert shifted["checksum"] == -5


@pytest.mark.parametrize("original_times", [True, False])
def test_loop_serves_the_next_lap_on_a_new_connection(original_times: bool) -> None:
    """At the end of the tape the connection closes; the next one gets the tape again,
    shifted, starting with a REST snapshot that matches its diffs. Event times: with
    original times each lap moves forward by the tape's span; re-stamped (the default)
    each lap starts at "now", by one offset per lap."""
    sim = Simulator("binance", BTC_SPOT, limit=400, loop=True, original_times=original_times)
    laps = sim.laps
    assert laps is not None
    lap0 = [
        orjson.loads(e.text)["data"]
        for e in sim.tape.entries
        if e.key in ("btcusdt@trade", "btcusdt@depth")
    ]

    async def lap(ws_url: str) -> list[dict[str, Any]]:
        got = []
        async with connect(f"{ws_url}/stream?streams={BTC_STREAMS}") as ws:
            try:
                while True:
                    got.append(orjson.loads(await ws.recv())["data"])
            except ConnectionClosed:
                assert ws.close_code == 1001
        return got

    async def session() -> tuple[list[list[dict[str, Any]]], list[int]]:
        await sim.start()
        try:
            laps_seen, snapshot_ids = [], []
            async with httpx.AsyncClient() as http:
                for _ in range(3):
                    laps_seen.append(await asyncio.wait_for(lap(sim.ws_url), 20))
                    url = f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=5"
                    snapshot_ids.append((await http.get(url)).json()["lastUpdateId"])
            return laps_seen, snapshot_ids
        finally:
            await sim.stop()

    started_ms = time.time() * 1000
    seen, snapshot_ids = asyncio.run(session())
    time_shifts = []
    for n in (0, 1, 2):
        shifts = {
            got[k] - first[k]
            for got, first in zip(seen[n], lap0, strict=True)
            for k in ("E", "T")
            if k in first
        }
        assert len(shifts) == 1  # one offset per lap: order and spacing kept
        time_shifts.append(shifts.pop())
    if original_times:
        assert seen[0] == lap0
        assert time_shifts == [n * laps.time_stride_ms for n in range(3)]
    else:
        first_event = min(d["E"] for d in lap0)
        for n, shift in enumerate(time_shifts):  # each lap starts about when it is served
            assert abs(first_event + shift - started_ms) < 120_000, n
        assert time_shifts == sorted(time_shifts)
    for n in (1, 2):
        assert len(seen[n]) == len(lap0)
        for got, first in zip(seen[n], lap0, strict=True):
            if first["e"] == "trade":
                assert got["t"] == first["t"] + n * laps.id_stride
                assert got["p"] == first["p"]
            else:
                assert (got["U"], got["u"]) == (
                    first["U"] + n * laps.id_stride,
                    first["u"] + n * laps.id_stride,
                )
                assert (got["b"], got["a"]) == (first["b"], first["a"])
    assert sim.stats.laps == 2 and sim.stats.finished == 3
    # After lap n ended, the REST book is the one at the end of lap n (its ids).
    last_u = max(d["u"] for d in lap0 if "u" in d)
    assert snapshot_ids == [last_u + n * laps.id_stride for n in range(3)]


def test_without_loop_the_connection_stays_open_at_the_end() -> None:
    sim = Simulator("binance", BTC_SPOT, limit=200)

    async def session() -> bool:
        await sim.start()
        try:
            async with connect(f"{sim.ws_url}/stream?streams={BTC_STREAMS}") as ws:
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    return True  # idle and open
                except ConnectionClosed:
                    return False
        finally:
            await sim.stop()

    assert asyncio.run(session())
    assert sim.stats.laps == 0


# ---- the soak ----


@dataclass
class Soak:
    probe: Probe
    sims: list[SimulatorThread]
    tapes: list[Tape]
    out: Path
    recordings: Path
    samples: list[dict[str, Any]] = field(default_factory=list)
    clients: dict[str, int] = field(default_factory=dict)
    ws_dropped: float = 0.0  # fan-out drops and too-slow disconnects during the soak
    ws_too_slow: float = 0.0


def ws_counters() -> tuple[float, float]:
    dropped = REGISTRY.get_sample_value("candlewax_ws_dropped_total") or 0.0
    slow = REGISTRY.get_sample_value("candlewax_ws_disconnects_total", {"reason": "too_slow"})
    return dropped, slow or 0.0


def open_files_under(directory: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(directory))
    return count


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Soak:
    tmp = tmp_path_factory.mktemp("soak")
    disconnects = Faults(disconnect_every_s=15.0)
    sims = [
        SimulatorThread(venue, capture, pace="20x", loop=True, faults=disconnects)
        for venue, capture in (("binance", BTC_SPOT), ("binance-usdm", USDM), ("okx", OKX_TBT))
    ]
    for sim in sims:
        sim.start()
    tapes = [sim.simulator.tape for sim in sims]
    feeds = [
        (sim.simulator.venue, tape_symbols(tape), sim.ws_url, sim.rest_url)
        for sim, tape in zip(sims, tapes, strict=True)
    ]
    port = free_port()
    cfg = soak_config(
        feeds,
        tmp / "out",
        port,
        dedupe_capacity=DEDUPE_CAPACITY,
        queue_size=FANOUT_QUEUE,
        max_lag_s=5.0,
        max_queued=MAX_QUEUED,
        recorder=tmp / "recordings",
    )
    run = Soak(Probe(observe=True).install(), sims, tapes, tmp / "out", tmp / "recordings")
    results: queue.Queue[dict[str, int]] = queue.Queue()
    url = f"ws://127.0.0.1:{port}/stream"
    clients = threading.Thread(
        target=run_clients, args=(url, SOAK_S, results), name="soak-clients", daemon=True
    )

    def sample() -> None:
        started = time.monotonic()
        time.sleep(2.0)  # the fan-out server listens once the flow runs
        clients.start()
        while time.monotonic() - started < SOAK_S and not inputs.STOP.is_set():
            row: dict[str, Any] = run.probe.sizes()
            row["jsonl_open"] = open_files_under(run.out)
            row["recorder_open"] = open_files_under(run.recordings)
            run.samples.append(row)
            time.sleep(SAMPLE_S)
        inputs.STOP.set()

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    before = ws_counters()
    sampler.start()
    try:
        run_pipeline(cfg)
    finally:
        inputs.STOP.set()
        sampler.join(30)
        run.probe.uninstall()
        for sim in sims:
            sim.stop()
    clients.join(30)
    after = ws_counters()
    run.ws_dropped, run.ws_too_slow = after[0] - before[0], after[1] - before[1]
    run.clients = results.get(timeout=5) if not results.empty() else {}
    return run


def peak(run: Soak, key: str) -> int:
    return max(row[key] for row in run.samples)


def test_the_soak_ran_laps_with_disconnects(soak: Soak) -> None:
    for sim in soak.sims:
        assert sim.stats.laps >= 1
        assert sim.stats.connections >= 4  # closed: every 15 s, and at the end of each lap
    assert len(soak.samples) > SOAK_S / SAMPLE_S / 2
    assert soak.clients["fast"] > 10 * soak.clients["slow"] > 0


def test_no_per_key_bound_was_exceeded(soak: Soak) -> None:
    assert soak.probe.violations == []


def test_dedupe_windows_fill_up_to_their_capacity(soak: Soak) -> None:
    assert soak.probe.peaks["dedupe_ids"] == DEDUPE_CAPACITY  # reached, never exceeded
    assert peak(soak, "dedupe_capacity") == DEDUPE_CAPACITY


def test_open_bar_windows_stay_few(soak: Soak) -> None:
    # lateness 2 s: at most 4 one-second windows and 2 one-minute windows per key.
    assert 1 <= soak.probe.peaks["bar_open_windows_1s"] <= 4
    assert 1 <= soak.probe.peaks["bar_open_windows_1m"] <= 2


def replica_levels(tape: Tape) -> dict[str, int]:
    """Most levels on one side of each book of the simulator's own full-depth books,
    over the whole tape: what the venue ever holds (the client's book is a top-N
    snapshot of it plus the same updates)."""
    replica = Replica(tape)
    most: dict[str, int] = defaultdict(int)
    for entry in tape.entries:
        if entry.book is None:
            continue
        replica.advance_to(entry.index + 1)
        book = replica.books.get(entry.book)
        if book is not None:
            most[entry.book] = max(most[entry.book], len(book.book.bids), len(book.book.asks))
    native = (lambda b: b.split(":", 1)[1]) if tape.venue == "okx" else (lambda b: b)
    return {f"{tape.venue}:{from_native(tape.venue, native(b))}": n for b, n in most.items()}


def test_books_hold_no_more_levels_than_the_venue_sends(soak: Soak) -> None:
    bounds: dict[str, int] = {}
    for tape in soak.tapes:
        bounds.update(replica_levels(tape))
    seen = {
        k.removeprefix("book_levels:"): v
        for k, v in soak.probe.peaks.items()
        if k.startswith("book_levels:")
    }
    assert seen, "no book was built"
    over = {key: (n, bounds.get(key)) for key, n in seen.items() if n > bounds.get(key, 0)}
    assert over == {}
    assert soak.probe.peaks["book_buffer"] <= peak(soak, "book_buffer_bound")


def test_live_source_queue_and_resync_state_are_bounded(soak: Soak) -> None:
    assert peak(soak, "feed_max_queued") == MAX_QUEUED
    assert peak(soak, "feed_queued") <= MAX_QUEUED + QUEUE_SLACK
    natives = max(len(tape_symbols(tape)) for tape in soak.tapes)
    assert peak(soak, "conn_resyncing") <= natives
    assert peak(soak, "conn_last_resync") <= natives
    assert peak(soak, "conn_tasks") <= natives + 2  # resync tasks + a snapshot fetch
    assert peak(soak, "parser_conn_memory") <= MAX_PARSER_CONNS
    assert peak(soak, "resync_listeners") == len(soak.sims)  # one per live source


def test_fanout_client_queues_are_bounded(soak: Soak) -> None:
    assert peak(soak, "fanout_queue_size") == FANOUT_QUEUE
    assert peak(soak, "fanout_queued") <= FANOUT_QUEUE
    # The slow client hit the bound: records dropped, then it was disconnected.
    assert soak.ws_dropped > 0
    assert soak.ws_too_slow >= 1
    # Latest-state cache per symbol: a book, a BBO per origin, the bars (one per
    # interval) and a status; a status and stats per venue.
    symbols = sum(len(tape_symbols(tape)) for tape in soak.tapes)
    assert peak(soak, "fanout_state") <= 5 * symbols + 2 * len(soak.sims)
    assert peak(soak, "fanout_bar_intervals") <= 2  # 1s and 1m


def test_file_handles_are_bounded(soak: Soak) -> None:
    assert 0 < peak(soak, "jsonl_open") <= JSONL_CHANNELS
    assert 0 < peak(soak, "recorder_open") <= RECORDER_MAX_OPEN


def test_metric_label_sets_are_bounded(soak: Soak) -> None:
    # The registry is per process: earlier tests' venues (e.g. a new venue's live tests)
    # stay in it. Bounded means venue names only, never symbols or connection ids.
    venues = {sim.simulator.venue for sim in soak.sims} | set(PARSERS)
    values: dict[str, set[str]] = defaultdict(set)
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            for name, value in sample.labels.items():
                values[name].add(value)
    # The registry is per process: other tests of the run add their own venues' labels.
    assert values["venue"] <= venues | set(PARSERS) | {""}
    assert values["type"] <= set(CHANNEL_OF_TYPE) | {"status", "dead_letter"}
    assert values["event"] <= STATUS_EVENTS
    assert all(len(v) <= 16 for v in values.values()), values  # no ids, symbols or conns
