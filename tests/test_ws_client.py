"""The live WebSocket client against the local simulator, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from candlewax import resync
from candlewax.symbols import SymbolMap, from_native
from operators.book import BookKeeper
from operators.events import DepthMsg
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.server import Simulator
from sources.frames import RawFrame
from sources.live import ConnectionSpec, LiveFeed
from sources.registry import PARSERS, PROTOCOLS
from sources.ws_client import ClientSettings, ConnectBudget, VenueConnection

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
OKX_NATIVES = ["BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"]
_SEQ_RE = re.compile(r'"prevSeqId":-?[0-9]+,"seqId":[0-9]+,')
DEADLINE = 20.0  # generous upper bound; tests finish as soon as their condition holds

FAST = ClientSettings(
    backoff_base=0.02,
    backoff_cap=0.2,
    stall_timeout=30.0,
    snapshot_delay=0.05,
    overlap_grace=0.2,
    close_timeout=0.5,
)


class Recorder:
    """Collects what a connection delivers; optionally feeds books like the pipeline does."""

    def __init__(self, venue: str, symbols: list[str] | None = None) -> None:
        self.frames: list[RawFrame] = []
        self.statuses: list[dict[str, Any]] = []
        self.book_out: list[dict[str, Any]] = []
        self.keepers: dict[str, BookKeeper] = {}
        self.parser = PARSERS[venue](SymbolMap(venue, symbols)) if symbols else None
        for symbol in symbols or []:
            self.keepers[symbol] = BookKeeper(venue, symbol)

    def on_frame(self, frame: RawFrame) -> None:
        self.frames.append(frame)
        if self.parser is None:
            return
        for item in self.parser.parse(frame):
            if isinstance(item, DepthMsg) and item.symbol in self.keepers:
                self.book_out += self.keepers[item.symbol].on_msg(item)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["event"] == event]

    def data(self) -> list[RawFrame]:
        return [f for f in self.frames if f.hint is None]

    def snapshots(self) -> list[RawFrame]:
        return [f for f in self.frames if f.hint is not None]


async def run_until(
    sim: Simulator,
    natives: list[str],
    channels: list[str],
    until: Callable[[Recorder, VenueConnection], bool],
    settings: ClientSettings = FAST,
    recorder: Recorder | None = None,
    action: Callable[[Recorder, VenueConnection], None] | None = None,
    act_when: Callable[[Recorder, VenueConnection], bool] = lambda rec, _conn: bool(rec.frames),
) -> tuple[Recorder, VenueConnection]:
    """Connect a client to the simulator until ``until`` holds (``action`` runs once, when
    ``act_when`` first holds: by default when the client delivered its first frame)."""
    await sim.start()
    rec = recorder or Recorder(sim.venue)
    protocol = PROTOCOLS[sim.venue]
    conn = VenueConnection(
        protocol,
        sim.ws_url,
        sim.rest_url,
        natives,
        channels,
        rec.on_frame,
        rec.statuses.append,
        "t",
        settings,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop))
    deadline = time.monotonic() + DEADLINE
    acted = action is None
    try:
        while not until(rec, conn) and time.monotonic() < deadline and not task.done():
            if not acted and act_when(rec, conn):
                acted = True
                assert action is not None
                action(rec, conn)
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await sim.stop()
    assert until(rec, conn), f"condition not reached; statuses: {rec.statuses}"
    return rec, conn


def expected_texts(sim: Simulator, keys: set[str] | None = None) -> list[str]:
    return [e.text for e in sim.tape.entries if keys is None or e.key in keys]


def without_seq(text: str) -> str:
    """OKX frame text as captured, without the seqId/prevSeqId the simulator added."""
    return _SEQ_RE.sub("", text)


def unique_in_order(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def all_received(expected: list[str]) -> Callable[[Recorder, VenueConnection], bool]:
    wanted = set(expected)
    return lambda rec, _conn: wanted <= {f.text for f in rec.frames}


# ---- Binance ----


def test_receives_every_frame_in_order_and_injects_the_rest_snapshot() -> None:
    sim = Simulator("binance", BTC, limit=250, ping_interval=0.05, original_times=True)
    expected = expected_texts(sim)
    rec = Recorder("binance", ["BTC/USDT"])

    def done(rec: Recorder, _conn: VenueConnection) -> bool:
        received = len(rec.data()) >= len(expected) and bool(rec.snapshots())
        return received and sim.ping_replies() == 1

    rec, _ = asyncio.run(run_until(sim, ["BTCUSDT"], ["trades", "book", "bbo"], done, recorder=rec))
    assert [f.text for f in rec.data()] == expected
    assert len({f.conn_id for f in rec.frames}) == 1
    [snapshot] = rec.snapshots()
    assert snapshot.hint == "depth_snapshot:BTCUSDT"
    assert snapshot.conn_id == rec.frames[0].conn_id
    # The snapshot came after the stream was flowing and lets the book sync without a gap.
    assert rec.frames.index(snapshot) > 0
    keeper = rec.keepers["BTC/USDT"]
    assert keeper.synced and keeper.gaps == 0
    assert orjson.loads(snapshot.text)["lastUpdateId"] == keeper.last_id
    assert [s["event"] for s in rec.statuses] == ["connected", "subscribed", "disconnected"]
    assert all(f.ts_ingest > 0 for f in rec.frames)
    assert sim.stats.ping_replies == 1  # our side answered the server's ping frames


def test_reconnects_with_backoff_after_injected_disconnects_and_loses_nothing() -> None:
    sim = Simulator(
        "binance",
        BTC,
        limit=300,
        overlap=5,
        faults=Faults(disconnect_every_msgs=70),
        original_times=True,
    )
    expected = expected_texts(sim)
    rec, conn = asyncio.run(
        run_until(sim, ["BTCUSDT"], ["trades", "book", "bbo"], all_received(expected))
    )
    texts = [f.text for f in rec.data()]
    assert unique_in_order(texts) == expected
    assert len(texts) > len(expected)  # the overlap was re-sent, and deduped here
    assert len({f.conn_id for f in rec.frames}) >= 5
    disconnects = rec.events("disconnected")
    assert len(disconnects) >= 4
    assert "code 1001" in disconnects[0]["detail"]
    attempts = [s["detail"] for s in rec.events("reconnecting")]
    # Each connection delivered data before it dropped: the backoff starts over each time.
    assert [int(a.rsplit("attempt ", 1)[1].rstrip(")")) for a in attempts] == [1] * len(attempts)
    delays = [float(a.split("in ", 1)[1].split("s", 1)[0]) for a in attempts]
    assert all(0 <= d <= FAST.backoff_cap for d in delays)
    assert conn.connects == len({f.conn_id for f in rec.frames})


def test_link_dropping_every_2s_after_data_keeps_its_reconnect_delay_small() -> None:
    """A flapping venue that works between drops: the backoff starts over after every
    connection that delivered data, so the feed does not fall ever further behind."""
    sim = Simulator(
        "binance", BTC, pace="recorded", faults=Faults(disconnect_every_s=2.0), original_times=True
    )
    settings = replace(FAST, backoff_base=0.05, backoff_cap=10.0)
    rec, conn = asyncio.run(
        run_until(
            sim,
            ["BTCUSDT"],
            ["trades", "book", "bbo"],
            lambda _rec, conn: len(conn.reconnect_delays) >= 3,
            settings,
        )
    )
    drops = [s for s in rec.events("disconnected") if "simulated disconnect" in s["detail"]]
    assert len(drops) >= 3
    delivered = {f.conn_id for f in rec.data()}
    assert {"t1", "t2", "t3"} <= delivered
    chosen = list(conn.reconnect_delays)[:3]
    assert [d.attempt for d in chosen] == [0, 0, 0]  # before the fix: 0, 1, 2
    assert all(d.ceiling == settings.backoff_base and d.delay <= d.ceiling for d in chosen)


def test_link_closing_before_any_data_still_backs_off_exponentially() -> None:
    """Subscribed to a symbol the tape does not have, every connection is cut before it
    delivered anything: no reset, the ceiling doubles each time."""
    sim = Simulator("binance", BTC, limit=50, faults=Faults(disconnect_every_s=0.2))
    rec, conn = asyncio.run(
        run_until(
            sim,
            ["ETHUSDT"],
            ["trades"],
            lambda _rec, conn: len(conn.reconnect_delays) >= 4,
        )
    )
    assert not rec.data()
    chosen = list(conn.reconnect_delays)[:4]
    assert [d.attempt for d in chosen] == [0, 1, 2, 3]
    assert [d.ceiling for d in chosen] == [FAST.backoff_ceiling(a) for a in range(4)]
    assert chosen[3].ceiling == 8 * chosen[0].ceiling


def test_quiet_stream_that_answers_pings_is_not_stale() -> None:
    """A pause in the data (an illiquid pair) is not a stall while the server answers pings."""
    sim = Simulator(
        "binance",
        BTC,
        limit=120,
        faults=Faults(stall_after=40, stall_seconds=1.0),
        original_times=True,
    )
    expected = expected_texts(sim)
    settings = replace(FAST, stall_timeout=0.2, pong_timeout=5.0)
    rec, conn = asyncio.run(
        run_until(sim, ["BTCUSDT"], ["trades", "book", "bbo"], all_received(expected), settings)
    )
    assert sim.stats.stalls == 1
    assert not rec.events("stale")
    assert conn.connects == 1
    assert [f.text for f in rec.data()] == expected


def test_stall_watchdog_reports_stale_when_no_pong_comes_and_reconnects() -> None:
    replaced = asyncio.Event()

    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(_trade(n * 1000))
        if n == 0:
            ws.transport.pause_reading()  # a dead peer: no data and no pong
            await replaced.wait()
            ws.transport.abort()  # it could not read the client's close frame either
        else:
            replaced.set()
            await ws.wait_closed()

    settings = replace(FAST, stall_timeout=0.2, pong_timeout=0.2)
    rec, _ = asyncio.run(
        run_custom(handler, ["trades"], lambda rec, _c: len(rec.data()) >= 2, settings)
    )
    (stale,) = rec.events("stale")[:1]
    assert stale["detail"].startswith("t1: no data") and "no pong" in stale["detail"]
    events = [s["event"] for s in rec.statuses]
    assert events[:5] == ["connected", "subscribed", "stale", "disconnected", "reconnecting"]
    assert [f.conn_id for f in rec.data()][:2] == ["t1", "t2"]


def test_planned_reconnect_overlaps_connections_without_a_gap() -> None:
    sim = Simulator("binance", BTC, limit=400, pace="2x", original_times=True)
    expected = expected_texts(sim)
    settings = replace(FAST, max_lifetime=0.8, rollover_margin=0.4)
    rec, conn = asyncio.run(
        run_until(sim, ["BTCUSDT"], ["trades", "book", "bbo"], all_received(expected), settings)
    )
    assert rec.events("planned_reconnect")
    assert not rec.events("reconnecting")  # never a gap between connections
    data = rec.data()
    conn_ids = list(dict.fromkeys(f.conn_id for f in data))
    assert len(conn_ids) >= 2
    first_new = next(i for i, f in enumerate(data) if f.conn_id == conn_ids[1])
    # The old connection kept delivering after the new one started: a real overlap.
    assert any(f.conn_id == conn_ids[0] for f in data[first_new:])
    assert unique_in_order([f.text for f in data]) == expected
    assert len(rec.snapshots()) == 1  # a rollover needs no new snapshot
    assert conn.connects == len(conn_ids)


def test_server_shutdown_notice_replaces_the_connection_early() -> None:
    """Binance's serverShutdown: the client opens the replacement at once, while the old
    connection still delivers, instead of waiting for the cut (and losing frames)."""
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    served: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        n = len(served)
        served.append(n)
        trade = '{{"stream":"btcusdt@trade","data":{{"e":"trade","t":{}}}}}'
        if n == 0:
            await ws.send(trade.format(1))
            await ws.send('{"e":"serverShutdown","E":1}')
        with contextlib.suppress(ConnectionClosed):  # streams until the client closes it
            for i in range(2, 400):
                await ws.send(trade.format(i if n == 0 else 10_000 + i))
                await asyncio.sleep(0.005)

    async def main() -> tuple[Recorder, VenueConnection]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            rec = Recorder("binance")
            conn = VenueConnection(
                PROTOCOLS["binance"],
                f"ws://127.0.0.1:{port}",
                None,
                ["BTCUSDT"],
                ["trades"],
                rec.on_frame,
                rec.statuses.append,
                "t",
                FAST,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            deadline = time.monotonic() + DEADLINE
            while not rec.events("disconnected") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stop.set()
            await task
            return rec, conn

    rec, conn = asyncio.run(main())
    assert served == [0, 1] and conn.connects == 2
    (planned,) = rec.events("planned_reconnect")
    assert "announced a shutdown" in planned["detail"]
    assert not rec.events("reconnecting")
    first_close = rec.events("disconnected")[0]
    assert "t1: replaced by t2" in first_close["detail"]
    data = rec.data()
    first_new = next(i for i, f in enumerate(data) if f.conn_id == "t2")
    # The old connection kept delivering after the new one started: no hole.
    assert any(f.conn_id == "t1" for f in data[first_new:])


def test_resync_request_fetches_and_injects_a_new_binance_snapshot() -> None:
    sim = Simulator("binance", BTC, limit=150, original_times=True)
    rec = Recorder("binance", ["BTC/USDT"])

    def ask(rec: Recorder, conn: VenueConnection) -> None:
        assert resync.request("binance", "BTCUSDT", "test")

    def done(rec: Recorder, _conn: VenueConnection) -> bool:
        return len(rec.snapshots()) >= 2 and rec.keepers["BTC/USDT"].synced

    def synced(rec: Recorder, _conn: VenueConnection) -> bool:
        return rec.keepers["BTC/USDT"].synced

    rec, conn = asyncio.run(
        run_until(sim, ["BTCUSDT"], ["book"], done, recorder=rec, action=ask, act_when=synced)
    )
    assert conn.resyncs == 1
    assert len(rec.snapshots()) == 2
    assert sim.stats.rest_snapshots == 2
    assert rec.keepers["BTC/USDT"].synced
    assert not resync.request("binance", "BTCUSDT", "after the run")  # listener removed


# ---- OKX ----


def test_okx_app_ping_is_answered_and_pongs_are_not_frames() -> None:
    sim = Simulator("okx", OKX_V5, limit=60, original_times=True)
    settings = replace(FAST, app_ping_interval=0.05)
    rec, _ = asyncio.run(
        run_until(sim, OKX_NATIVES, ["trades"], lambda _r, _c: sim.stats.app_pings >= 3, settings)
    )
    assert sim.stats.app_pings >= 3
    assert all(f.text != "pong" for f in rec.frames)
    assert [s["event"] for s in rec.statuses] == ["connected", "subscribed", "disconnected"]


def test_okx_checksum_mismatch_resubscribes_and_gets_a_fresh_snapshot() -> None:
    sim = Simulator(
        "okx",
        OKX_V5,
        okx_seq_ids=True,
        faults=Faults(corrupt_checksum=frozenset({5})),
        original_times=True,
    )
    rec = Recorder("okx", ["BTC/USDT"])
    keeper = rec.keepers["BTC/USDT"]
    book_frames = {e.text for e in sim.tape.entries if e.key == "books:BTC-USDT"}

    def done(rec: Recorder, _conn: VenueConnection) -> bool:
        return keeper.resyncs >= 1

    rec, conn = asyncio.run(run_until(sim, ["BTC-USDT"], ["book", "trades"], done, recorder=rec))
    assert sim.stats.corrupted == 1
    assert keeper.checksum_failures == 1
    assert conn.resyncs == 1
    assert sim.stats.okx_snapshots == 1
    assert keeper.synced and keeper.gaps == 0
    # The fresh snapshot is not a capture frame: the simulator built it from its book.
    last_snapshot = [f for f in rec.frames if '"action":"snapshot"' in f.text][-1]
    assert last_snapshot.text not in book_frames
    assert orjson.loads(last_snapshot.text)["data"][0]["prevSeqId"] == -1


def test_okx_reconnect_resumes_with_snapshot_and_sequence_intact() -> None:
    sim = Simulator(
        "okx",
        OKX_V5,
        okx_seq_ids=True,
        overlap=3,
        faults=Faults(disconnect_every_msgs=60),
        original_times=True,
    )
    natives = ["BTC-USDT", "UNI-USD-SWAP"]
    rec = Recorder("okx", [from_native("okx", n) for n in natives])
    keys = {f"{c}:{n}" for c in ("books", "trades") for n in natives}
    expected = expected_texts(sim, keys)
    wanted = set(expected)

    def done(rec: Recorder, _conn: VenueConnection) -> bool:
        return wanted <= {without_seq(f.text) for f in rec.frames}

    rec, _ = asyncio.run(run_until(sim, natives, ["book", "trades"], done, recorder=rec))
    received = [without_seq(f.text) for f in rec.frames if f.text in wanted or "seqId" in f.text]
    assert unique_in_order([t for t in received if t in wanted]) == expected
    assert len(rec.events("disconnected")) >= 2
    assert sim.stats.okx_snapshots >= 2  # every resumed subscription starts with a snapshot
    for keeper in rec.keepers.values():
        assert keeper.synced
        assert keeper.gaps == 0 and keeper.checksum_failures == 0
        assert keeper.checksum_checks > 0


# ---- the thread wrapper used by the dataflow ----


def test_live_feed_delivers_frames_and_status_from_its_thread() -> None:
    sim = SimulatorThread("binance", BTC, limit=100, original_times=True)
    sim.start()
    try:
        spec = ConnectionSpec(
            PROTOCOLS["binance"],
            ["BTCUSDT"],
            ["trades", "book", "bbo"],
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            conn_prefix="p0-",
            settings=FAST,
        )
        items: list[RawFrame | dict[str, Any]] = []
        feed = LiveFeed([spec])
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            items += feed.poll(max_items=7)
            if sum(isinstance(i, RawFrame) for i in items) >= len(sim.simulator.tape.entries) + 1:
                break
            time.sleep(0.01)
        feed.close()
        assert not feed.alive
        items += feed.poll()
    finally:
        sim.stop()
    frames = [i for i in items if isinstance(i, RawFrame)]
    statuses = [i for i in items if isinstance(i, dict)]
    assert [f.text for f in frames if f.hint is None] == [
        e.text for e in sim.simulator.tape.entries
    ]
    assert {f.conn_id for f in frames} == {"p0-1"}
    assert [s["event"] for s in statuses] == ["connected", "subscribed", "disconnected"]
    assert statuses[-1]["detail"] == "p0-1: stopped"


def test_shutdown_notices_are_recognised_and_data_is_not() -> None:
    binance, okx = PROTOCOLS["binance"], PROTOCOLS["okx"]
    assert binance.is_shutdown_notice('{"e":"serverShutdown","E":1723161255208}')
    okx_notice = '{"event":"notice","code":"64008","msg":"The connection will soon be closed"}'
    assert okx.is_shutdown_notice(okx_notice)
    for frame in load_frames(BTC, 300):
        assert not binance.is_shutdown_notice(frame)
    for frame in load_frames(OKX_V5, 300):
        assert not okx.is_shutdown_notice(frame)


def load_frames(path: Path, n: int) -> list[str]:
    from sources.replay import read_capture

    frames = read_capture(path, "okx" if "okx" in path.parts else "binance")
    return [f.text for _, f in zip(range(n), frames, strict=False)]


# ---- custom servers for the failure modes the simulator does not play ----

Handler = Callable[[ServerConnection, int], Coroutine[Any, Any, None]]
DepthHandler = Callable[[int], Coroutine[Any, Any, tuple[int, str]]]
DEPTH = '{"lastUpdateId":5,"bids":[],"asks":[]}'


def _trade(i: int) -> str:
    return f'{{"stream":"btcusdt@trade","data":{{"e":"trade","t":{i}}}}}'


async def stream_trades(ws: ServerConnection, n: int) -> None:
    """Every connection streams until the client closes it."""
    with contextlib.suppress(ConnectionClosed):
        for i in itertools.count():
            await ws.send(_trade(n * 100_000 + i))
            await asyncio.sleep(0.005)


async def run_custom(
    handler: Handler,
    channels: list[str],
    until: Callable[[Recorder, VenueConnection], bool],
    settings: ClientSettings = FAST,
    depth: DepthHandler | None = None,
) -> tuple[Recorder, VenueConnection]:
    """A Binance-like server on 127.0.0.1: ``handler(ws, n)`` serves the n-th connection,
    ``depth(k)`` answers the k-th REST depth request with (status, body)."""
    served = itertools.count()
    requests = itertools.count()

    async def route(connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith("/api/v3/depth"):
            return None
        assert depth is not None
        status, body = await depth(next(requests))
        return Response(status, "", Headers({"Content-Type": "application/json"}), body.encode())

    async def serve_one(ws: ServerConnection) -> None:
        await handler(ws, next(served))

    async with serve(serve_one, "127.0.0.1", 0, process_request=route) as server:
        port = server.sockets[0].getsockname()[1]
        rec = Recorder("binance")
        conn = VenueConnection(
            PROTOCOLS["binance"],
            f"ws://127.0.0.1:{port}",
            f"http://127.0.0.1:{port}",
            ["BTCUSDT"],
            channels,
            rec.on_frame,
            rec.statuses.append,
            "t",
            settings,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(conn.run(stop))
        deadline = time.monotonic() + DEADLINE
        while not until(rec, conn) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        stop.set()
        await task
    assert until(rec, conn), f"condition not reached; statuses: {rec.statuses}"
    return rec, conn


def test_binance_snapshot_is_retried_until_the_rest_endpoint_recovers() -> None:
    async def depth(k: int) -> tuple[int, str]:
        return (503, '{"code":-1003,"msg":"busy"}') if k < 4 else (200, DEPTH)

    rec, conn = asyncio.run(
        run_custom(stream_trades, ["book"], lambda rec, _c: bool(rec.snapshots()), depth=depth)
    )
    assert [f.text for f in rec.snapshots()] == [DEPTH]
    errors = [s["detail"] for s in rec.events("error")]
    assert len(errors) == 4 and all("HTTP 503" in e for e in errors)
    assert conn.connects == 1


def test_snapshot_outliving_a_planned_rollover_is_injected_on_the_replacement() -> None:
    async def depth(k: int) -> tuple[int, str]:
        await asyncio.sleep(0.6)  # slower than the rollover
        return 200, DEPTH

    settings = replace(FAST, max_lifetime=0.4, rollover_margin=0.2, overlap_grace=0.05)
    rec, _ = asyncio.run(
        run_custom(stream_trades, ["book"], lambda rec, _c: bool(rec.snapshots()), settings, depth)
    )
    [snapshot] = rec.snapshots()
    assert snapshot.conn_id != "t1"  # t1 was replaced while the request was out
    assert "t1: replaced by t2" in rec.events("disconnected")[0]["detail"]
    assert not rec.events("reconnecting")


def test_planned_reconnect_keeps_the_old_connection_if_the_new_one_stays_silent() -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        if n == 0:
            await stream_trades(ws, n)
        else:
            await ws.wait_closed()  # subscribed, answers pings, sends nothing

    settings = replace(FAST, max_lifetime=0.4, rollover_margin=0.2, stall_timeout=0.3)
    rec, _ = asyncio.run(
        run_custom(handler, ["trades"], lambda rec, _c: bool(rec.events("disconnected")), settings)
    )
    first_close = rec.events("disconnected")[0]["detail"]
    assert first_close == "t2: replacement failed: it delivered no data"
    assert {f.conn_id for f in rec.data()} == {"t1"}


def test_reconnect_fetches_one_snapshot_even_if_the_book_asks_for_a_resync() -> None:
    """A gap seen while the connection's first snapshot is pending needs no second fetch."""
    sim = Simulator("binance", BTC, limit=150, original_times=True)
    rec = Recorder("binance", ["BTC/USDT"])

    def ask(rec: Recorder, conn: VenueConnection) -> None:
        assert resync.request("binance", "BTCUSDT", "gap before the first snapshot")

    def done(rec: Recorder, _conn: VenueConnection) -> bool:
        return bool(rec.snapshots()) and rec.keepers["BTC/USDT"].synced

    rec, conn = asyncio.run(run_until(sim, ["BTCUSDT"], ["book"], done, recorder=rec, action=ask))
    assert conn.resyncs == 0
    assert sim.stats.rest_snapshots == 1
    assert len(rec.snapshots()) == 1


async def _okx_client(
    sim: Simulator, channels: list[str], settings: ClientSettings
) -> tuple[Recorder, VenueConnection, asyncio.Event, asyncio.Task[None]]:
    await sim.start()
    rec = Recorder("okx")
    conn = VenueConnection(
        PROTOCOLS["okx"],
        sim.ws_url,
        None,
        ["BTC-USDT"],
        channels,
        rec.on_frame,
        rec.statuses.append,
        "t",
        settings,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop))
    await wait_for(lambda: bool(rec.frames))
    return rec, conn, stop, task


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert condition()


def test_okx_resync_is_ignored_on_a_connection_without_the_book_channel() -> None:
    sim = Simulator("okx", OKX_V5, okx_seq_ids=True, original_times=True)

    async def main() -> VenueConnection:
        _rec, conn, stop, task = await _okx_client(sim, ["trades"], FAST)
        requests = sim.stats.subscribe_requests
        conn.request_resync("BTC-USDT", "test")
        await asyncio.sleep(0.1)  # the request runs on the next loop turn
        assert sim.stats.subscribe_requests == requests
        stop.set()
        await task
        await sim.stop()
        return conn

    conn = asyncio.run(main())
    assert conn.resyncs == 0
    assert sim.stats.okx_snapshots == 0


def test_okx_resyncs_of_one_symbol_are_spaced_and_an_early_one_is_deferred() -> None:
    sim = Simulator("okx", OKX_V5, okx_seq_ids=True, original_times=True)
    interval = 0.5

    async def main() -> tuple[VenueConnection, float]:
        settings = replace(FAST, resync_min_interval=interval)
        _rec, conn, stop, task = await _okx_client(sim, ["book"], settings)
        conn.request_resync("BTC-USDT", "first")
        await wait_for(lambda: sim.stats.okx_snapshots == 1)  # built by the simulator
        first = conn._last_resync["BTC-USDT"]  # when the client sent it (not when seen here)
        conn.request_resync("BTC-USDT", "too soon")
        await asyncio.sleep(0.05)
        assert conn.resyncs == 1  # deferred, not sent yet
        await wait_for(lambda: sim.stats.okx_snapshots == 2)  # and not dropped
        spacing = conn._last_resync["BTC-USDT"] - first
        stop.set()
        await task
        await sim.stop()
        return conn, spacing

    conn, spacing = asyncio.run(main())
    assert conn.resyncs == 2
    assert spacing >= interval - 0.01  # the send times the client chose (clock resolution)


def test_live_feed_stops_reading_while_its_queue_is_full_and_loses_nothing() -> None:
    sim = SimulatorThread("binance", BTC, limit=300, original_times=True)
    sim.start()
    try:
        spec = ConnectionSpec(
            PROTOCOLS["binance"],
            ["BTCUSDT"],
            ["trades", "book", "bbo"],
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            settings=FAST,
        )
        feed = LiveFeed([spec], max_queued=20)
        deadline = time.monotonic() + DEADLINE
        while feed.backpressure_waits == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        queued_when_full = feed.queued
        items: list[RawFrame | dict[str, Any]] = []
        tape = [e.text for e in sim.simulator.tape.entries]
        while time.monotonic() < deadline:
            items += feed.poll(max_items=7)
            if sum(isinstance(i, RawFrame) for i in items) >= len(tape) + 1:  # + snapshot
                break
            time.sleep(0.001)
        feed.close()
    finally:
        sim.stop()
    assert feed.backpressure_waits >= 1
    assert queued_when_full <= 20 + 2  # the bound, plus the connect status dicts
    assert [i.text for i in items if isinstance(i, RawFrame) and i.hint is None] == tape


def test_server_that_accepts_then_closes_at_once_backs_off_exponentially() -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.close(1013, "try again later")

    rec, conn = asyncio.run(
        run_custom(handler, ["trades"], lambda _rec, conn: len(conn.reconnect_delays) >= 4)
    )
    assert not rec.data()
    assert [d.attempt for d in list(conn.reconnect_delays)[:4]] == [0, 1, 2, 3]


def test_server_that_acks_then_closes_backs_off_exponentially() -> None:
    """A reply to our subscription is not data: no reset."""

    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send('{"result":null,"id":1}')
        await ws.close(1008, "policy violation")

    rec, conn = asyncio.run(
        run_custom(handler, ["trades"], lambda _rec, conn: len(conn.reconnect_delays) >= 4)
    )
    assert len(rec.frames) >= 4  # the acks reached the parser (which drops them)
    assert [d.attempt for d in list(conn.reconnect_delays)[:4]] == [0, 1, 2, 3]


def test_data_then_instant_close_is_held_to_the_venue_connection_limit() -> None:
    """Each connection delivers one frame, so the backoff resets every time; the
    venue's connection-rate limit still spaces the attempts."""

    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(_trade(n))
        await ws.close(1001, "going away")

    settings = replace(FAST, connect_limits=((3, 0.5),))
    rec, conn = asyncio.run(
        run_custom(handler, ["trades"], lambda _rec, conn: conn.connects >= 5, settings)
    )
    assert all(d.attempt == 0 for d in conn.reconnect_delays)
    assert conn.throttled >= 1
    limited = [
        s for s in rec.events("reconnecting") if "connection limit 3 per 0.5s" in s["detail"]
    ]
    assert len(limited) == conn.throttled


def test_connect_budget_keeps_every_sliding_window_within_its_limit() -> None:
    budget = ConnectBudget(((3, 1.0), (5, 10.0)))
    waits = [budget.reserve(0.0) for _ in range(6)]
    assert waits == [0.0, 0.0, 0.0, 1.0, 1.0, 10.0]
    assert budget.reserve(20.0) == 0.0  # old attempts have left both windows
    binance = ConnectBudget(((300, 300.0),))
    at = [binance.reserve(0.0) for _ in range(301)]
    assert at[:300] == [0.0] * 300 and at[300] == 300.0
