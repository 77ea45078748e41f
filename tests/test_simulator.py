"""The exchange simulator seen by a plain WebSocket / HTTP client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from flow_helpers import outputs
from live_helpers import Feed, all_of, has_trades, run_live, tape_trade_ids
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from candlewax.symbols import SymbolMap
from operators.book import BookKeeper
from operators.checksum import okx_checksum
from operators.events import DepthMsg
from simulator.cli import build_parser, main, make_simulator
from simulator.embedded import SimulatorThread
from simulator.faults import Faults
from simulator.restamp import first_event_ms
from simulator.server import Simulator
from simulator.tape import load_tape
from simulator.venues.binance import binance_key
from simulator.venues.okx import okx_key
from sources.binance import BinanceParser
from sources.frames import SNAPSHOT_HINT, RawFrame

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
OKX_LEGACY = CAPTURES / "okx" / "cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"
BTC_STREAMS = "btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker"
CAPTURE_SNAPSHOT_ID = 50093239218  # lastUpdateId of the REST snapshot inside the BTC capture
T = TypeVar("T")
_SEQ = re.compile(r'"prevSeqId":-?[0-9]+,"seqId":[0-9]+,')


def serve(sim: Simulator, session: Callable[[Simulator], Awaitable[T]]) -> T:
    """Run ``session`` against the started simulator, then stop it."""

    async def run() -> T:
        await sim.start()
        try:
            return await asyncio.wait_for(session(sim), 20)
        finally:
            await sim.stop()

    return asyncio.run(run())


async def receive(ws: ClientConnection, n: int) -> list[str]:
    """Up to ``n`` text frames, fewer if the server closes the connection."""
    out: list[str] = []
    try:
        while len(out) < n:
            message = await ws.recv()
            assert isinstance(message, str)
            out.append(message)
    except ConnectionClosed:
        pass
    return out


def depth_get(sim: Simulator, query: str) -> httpx.Response:
    return httpx.get(f"{sim.rest_url}/api/v3/depth?{query}")


# ---- Binance ----


def test_combined_stream_sends_only_the_subscribed_streams_in_order() -> None:
    sim = Simulator("binance", BTC, limit=300, original_times=True)
    trades = [e.text for e in sim.tape.entries if e.key == "btcusdt@trade"]
    assert 0 < len(trades) < len(sim.tape.entries)

    async def session(sim: Simulator) -> list[str]:
        async with connect(f"{sim.ws_url}/stream?streams=btcusdt@trade") as ws:
            return await receive(ws, len(trades))

    assert serve(sim, session) == trades
    assert sim.stats.finished == 1


def test_subscribe_method_frames_are_acknowledged() -> None:
    sim = Simulator("binance", BTC, limit=100, original_times=True)
    depth = [e.text for e in sim.tape.entries if e.key == "btcusdt@depth"]

    async def session(sim: Simulator) -> list[str]:
        async with connect(f"{sim.ws_url}/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":7}')
            got = await receive(ws, 1 + len(depth))
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
            await ws.send('{"method":"NOPE","id":9}')
            return got + await receive(ws, 2)

    got = serve(sim, session)
    assert orjson.loads(got[0]) == {"result": None, "id": 7}
    assert got[1 : 1 + len(depth)] == depth
    assert orjson.loads(got[-2]) == {"result": ["btcusdt@depth@100ms"], "id": 8}
    assert orjson.loads(got[-1])["error"]["code"] == 2


def test_rest_depth_before_any_diff_is_the_captures_own_snapshot() -> None:
    sim = Simulator("binance", BTC, limit=50, original_times=True)

    async def session(sim: Simulator) -> list[httpx.Response]:
        return await asyncio.to_thread(
            lambda: [
                depth_get(sim, "symbol=BTCUSDT&limit=5"),
                depth_get(sim, "symbol=ETHUSDT"),
                depth_get(sim, "limit=5"),
                httpx.get(f"{sim.rest_url}/api/v3/nothing"),
            ]
        )

    ok, unknown, missing, not_found = serve(sim, session)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/json")
    body = ok.json()
    assert body["lastUpdateId"] == CAPTURE_SNAPSHOT_ID
    assert len(body["bids"]) == 5 and len(body["asks"]) == 5
    assert body["bids"][0] == ["61837.63000000", "3.78826000"]  # exact text, best first
    assert unknown.status_code == 400 and unknown.json()["code"] == -1121
    assert missing.status_code == 400 and missing.json()["code"] == -1102
    assert not_found.status_code == 404


def test_rest_depth_follows_the_diffs_sent_and_syncs_a_book() -> None:
    sim = Simulator("binance", BTC, limit=400, original_times=True)
    entries = sim.tape.entries
    last_u = [e.last_id for e in entries if e.book][-1]

    async def session(sim: Simulator) -> tuple[list[str], str]:
        async with connect(f"{sim.ws_url}/stream?streams={BTC_STREAMS}") as ws:
            frames = await receive(ws, len(entries))
            snapshot = await asyncio.to_thread(depth_get, sim, "symbol=BTCUSDT&limit=5000")
            return frames, snapshot.text

    frames, snapshot = serve(sim, session)
    assert orjson.loads(snapshot)["lastUpdateId"] == last_u
    # A book that gets the snapshot in the middle of the stream stays gap-free.
    keeper = BookKeeper("binance", "BTC/USDT")
    parser = BinanceParser(SymbolMap("binance", ["BTC/USDT"]))
    half = len(frames) // 2
    stream = [RawFrame("binance", "c", 1, text) for text in frames]
    snap = RawFrame("binance", "c", 1, snapshot, SNAPSHOT_HINT + "BTCUSDT")
    for frame in [*stream[:half], snap, *stream[half:]]:
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg):
                keeper.on_msg(item)
    assert keeper.synced and keeper.gaps == 0 and keeper.last_id == last_u


def test_dropped_depth_diff_is_a_gap_the_book_detects() -> None:
    sim = Simulator(
        "binance", BTC, limit=200, faults=Faults(drop_depth=frozenset({3})), original_times=True
    )
    depth = [e for e in sim.tape.entries if e.key == "btcusdt@depth"]

    async def session(sim: Simulator) -> list[str]:
        async with connect(f"{sim.ws_url}/stream?streams=btcusdt@depth@100ms") as ws:
            return await receive(ws, len(depth) - 1)

    got = serve(sim, session)
    assert got == [e.text for e in depth if e.depth_no != 3]
    assert sim.stats.dropped == 1
    keeper = BookKeeper("binance", "BTC/USDT")
    parser = BinanceParser(SymbolMap("binance", ["BTC/USDT"]))
    seed = sim.tape.seeds["BTCUSDT"]
    snapshot = orjson.dumps(
        {"lastUpdateId": seed.last_update_id, "bids": seed.bids, "asks": seed.asks}
    ).decode()
    out: list[dict[str, Any]] = []
    for frame in [
        RawFrame("binance", "c", 1, snapshot, SNAPSHOT_HINT),
        *[RawFrame("binance", "c", 1, t) for t in got],
    ]:
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg):
                out += keeper.on_msg(item)
    assert keeper.gaps == 1
    assert [s["event"] for s in out if s["type"] == "status"][:1] == ["gap_detected"]


def test_duplicates_are_sent_back_to_back() -> None:
    sim = Simulator(
        "binance", BTC, limit=60, faults=Faults(duplicate_every=10), original_times=True
    )
    texts = [e.text for e in sim.tape.entries]

    async def session(sim: Simulator) -> list[str]:
        async with connect(f"{sim.ws_url}/stream?streams={BTC_STREAMS}") as ws:
            return await receive(ws, len(texts) + len(texts) // 10)

    got = serve(sim, session)
    expected: list[str] = []
    for n, text in enumerate(texts, 1):
        expected += [text, text] if n % 10 == 0 else [text]
    assert got == expected
    assert sim.stats.duplicated == len(texts) // 10


def test_disconnect_then_resume_re_sends_the_overlap() -> None:
    sim = Simulator(
        "binance",
        BTC,
        limit=200,
        overlap=4,
        faults=Faults(disconnect_every_msgs=50),
        original_times=True,
    )
    texts = [e.text for e in sim.tape.entries]
    trades = [e.text for e in sim.tape.entries if e.key == "btcusdt@trade"]

    async def session(sim: Simulator) -> tuple[list[str], list[str], int | None, list[str]]:
        url = f"{sim.ws_url}/stream?streams={BTC_STREAMS}"
        async with connect(url) as ws:
            first = await receive(ws, 1000)
            code = ws.close_code
        async with connect(url) as ws:
            second = await receive(ws, 1000)
        # Another subscription set has its own position: it starts from the beginning.
        async with connect(f"{sim.ws_url}/stream?streams=btcusdt@trade") as ws:
            other = await receive(ws, len(trades))
        return first, second, code, other

    first, second, code, other = serve(sim, session)
    assert first == texts[:50] and code == 1001
    assert second == texts[46:96]
    assert other == trades
    assert sim.stats.resumed == 1 and sim.stats.disconnects == 2


def test_usdm_capture_serves_every_symbol_snapshot_on_fapi_path() -> None:
    sim = Simulator("binance-usdm", USDM, limit=200, original_times=True)

    async def session(sim: Simulator) -> list[httpx.Response]:
        url = f"{sim.rest_url}/fapi/v1/depth?symbol="
        return await asyncio.to_thread(lambda: [httpx.get(url + s) for s in sorted(sim.tape.seeds)])

    responses = serve(sim, session)
    assert sorted(sim.tape.seeds) == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    assert all(r.status_code == 200 and len(r.json()["bids"]) == 100 for r in responses)


# ---- OKX ----


async def okx_subscribe(ws: ClientConnection, op: str, args: list[dict[str, str]]) -> None:
    await ws.send(orjson.dumps({"op": op, "args": args}).decode())


def test_okx_subscribe_ack_ping_and_capture_frames() -> None:
    sim = Simulator("okx", OKX_V5, original_times=True)
    trades = [e.text for e in sim.tape.entries if e.key == "trades:BTC-USDT"]

    async def session(sim: Simulator) -> list[str]:
        async with connect(sim.ws_url) as ws:
            await ws.send("ping")
            await okx_subscribe(ws, "subscribe", [{"channel": "trades", "instId": "BTC-USDT"}])
            got = await receive(ws, 2 + len(trades))
            await ws.send("{bad json")
            return got + await receive(ws, 1)

    got = serve(sim, session)
    assert got[0] == "pong"
    ack = orjson.loads(got[1])
    assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "trades", "instId": "BTC-USDT"}
    assert got[2:-1] == trades
    error = orjson.loads(got[-1])
    assert error["event"] == "error" and error["code"] == "60012"
    assert sim.stats.app_pings == 1


def test_okx_resubscribe_gets_a_fresh_snapshot_with_a_correct_checksum() -> None:
    sim = Simulator("okx", OKX_LEGACY, limit=600, okx_seq_ids=True, original_times=True)
    inst = "PROPS-ETH"
    book = [e for e in sim.tape.entries if e.key == f"books:{inst}"]
    arg = {"channel": "books-l2-tbt", "instId": inst}

    async def session(sim: Simulator) -> list[str]:
        async with connect(sim.ws_url) as ws:
            await okx_subscribe(ws, "subscribe", [arg])
            got = await receive(ws, 1 + len(book))
            await okx_subscribe(ws, "unsubscribe", [arg])
            await okx_subscribe(ws, "subscribe", [arg])
            return got + await receive(ws, 3)

    got = serve(sim, session)
    pushes = [orjson.loads(t) for t in got[1 : 1 + len(book)]]
    # seqIds synthesized into the capture frames chain without a gap.
    seqs = [(p["data"][0]["prevSeqId"], p["data"][0]["seqId"]) for p in pushes]
    assert seqs[0][0] == -1
    for push, (prev, _), (_, last) in zip(pushes[1:], seqs[1:], seqs[:-1], strict=True):
        assert prev == (-1 if push["action"] == "snapshot" else last)
    assert seqs[-1][1] == seqs[0][1] + len(seqs) - 1
    unsub, resub, snapshot = (orjson.loads(t) for t in got[-3:])
    assert unsub["event"] == "unsubscribe" and resub["event"] == "subscribe"
    assert snapshot["action"] == "snapshot" and snapshot["arg"] == arg
    data = snapshot["data"][0]
    assert data["prevSeqId"] == -1 and data["seqId"] == seqs[-1][1]
    bids = [(p, s) for p, s, *_ in data["bids"]]
    asks = [(p, s) for p, s, *_ in data["asks"]]
    assert data["checksum"] == okx_checksum(bids, asks)
    # The last capture frame's checksum was computed by OKX over the same book.
    assert data["checksum"] == pushes[-1]["data"][0]["checksum"]
    assert sim.stats.okx_snapshots == 1


def test_okx_corrupted_checksum_changes_only_that_update() -> None:
    tape = load_tape(OKX_V5, "okx")
    book = [e for e in tape.entries if e.key == "books:BTC-USDT"]
    k = [e.depth_no for e in book if e.depth_no][1]  # the 2nd BTC-USDT update
    sim = Simulator(
        "okx", tape, faults=Faults(corrupt_checksum=frozenset({k})), original_times=True
    )

    async def session(sim: Simulator) -> list[str]:
        async with connect(sim.ws_url) as ws:
            await okx_subscribe(ws, "subscribe", [{"channel": "books", "instId": "BTC-USDT"}])
            return await receive(ws, 1 + len(book))

    got = serve(sim, session)[1:]
    assert sim.stats.corrupted == 1
    [i] = [i for i, (g, e) in enumerate(zip(got, book, strict=True)) if g != e.text]
    assert book[i].depth_no == k
    sent, orig = orjson.loads(got[i]), orjson.loads(book[i].text)
    assert sent["data"][0]["checksum"] != orig["data"][0]["checksum"]
    sent["data"][0]["checksum"] = orig["data"][0]["checksum"]
    assert sent == orig


# ---- options and CLI ----


def test_tape_numbers_book_updates_and_keeps_frames_verbatim() -> None:
    tape = load_tape(BTC, "binance", limit=100)
    raw = tape.entries
    assert tape.seeds["BTCUSDT"].last_update_id == CAPTURE_SNAPSHOT_ID
    numbered = [e.depth_no for e in raw if e.depth_no]
    assert numbered == list(range(1, len(numbered) + 1))
    assert all('"lastUpdateId"' not in e.text for e in raw)  # REST bodies are not replayed


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Simulator(
            "binance",
            BTC,
            limit=10,
            overlap=5,
            faults=Faults(disconnect_every_msgs=5),
            original_times=True,
        )
    with pytest.raises(ValueError, match="pace"):
        Simulator("binance", BTC, limit=10, pace="fast", original_times=True)
    with pytest.raises(ValueError, match="1-based"):
        Faults(drop_depth=frozenset({0}))
    with pytest.raises(ValueError, match="speaks"):
        load_tape(BTC, "deribit")


def test_cli_builds_the_simulator_from_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--disconnect-every-msgs", "--drop-depth", "--corrupt-checksum", "--stall-after"):
        assert flag in help_text
    args = build_parser().parse_args(
        [
            "--venue=okx",
            f"--capture={OKX_V5}",
            "--pace=3x",
            "--drop-depth=4",
            "--drop-depth=9",
            "--duplicate-every=5",
            "--stall-after=10",
            "--stall-seconds=1.5",
            "--okx-seq-ids",
        ]
    )
    sim = make_simulator(args)
    assert sim.speed == 3.0 and sim.okx_seq_ids
    assert sim.faults.drop_depth == {4, 9} and sim.faults.duplicate_every == 5
    assert sim.faults.stall_after == 10 and sim.faults.stall_seconds == 1.5
    assert main(["--venue=binance", "--capture=/nonexistent/capture.gz"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- event times moved to the present (the default) ----


def time_edits(recorded: Any, sent: Any, path: str = "") -> list[tuple[str, int]]:
    """(path, sent - recorded) for every value that differs; anything but a changed
    integer (or integer text) fails."""
    if isinstance(recorded, dict) and isinstance(sent, dict):
        assert list(recorded) == list(sent), path
        return [e for k in recorded for e in time_edits(recorded[k], sent[k], f"{path}.{k}")]
    if isinstance(recorded, list) and isinstance(sent, list):
        assert len(recorded) == len(sent), path
        return [
            e
            for i, (a, b) in enumerate(zip(recorded, sent, strict=True))
            for e in time_edits(a, b, f"{path}[]")
        ]
    if recorded == sent:
        return []
    assert type(recorded) is type(sent) and str(recorded).isdigit(), (path, recorded, sent)
    return [(path, int(sent) - int(recorded))]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def binance_all(sim: Simulator, streams: str, n: int) -> list[str]:
    async with connect(f"{sim.ws_url}/stream?streams={streams}") as ws:
        return await receive(ws, n)


@pytest.mark.parametrize(
    ("venue", "capture", "streams", "fields"),
    [
        ("binance", BTC, BTC_STREAMS, {".data.E", ".data.T"}),
        (
            "binance-usdm",
            USDM,
            "sushiusdt@aggTrade/sushiusdt@depth/sushiusdt@bookTicker/sushiusdt@kline_1m",
            {".data.E", ".data.T", ".data.k.t", ".data.k.T"},
        ),
    ],
)
def test_binance_event_times_move_to_now_by_one_offset(
    venue: str, capture: Path, streams: str, fields: set[str]
) -> None:
    sim = Simulator(venue, capture, limit=600)
    keys = {binance_key(name) for name in streams.split("/")}
    recorded = [e.text for e in sim.tape.entries if e.key in keys]
    before = wall_ms()
    sent = serve(sim, lambda sim: binance_all(sim, streams, len(recorded)))
    after = wall_ms()
    assert len(sent) == len(recorded)
    edits = [
        e
        for a, b in zip(recorded, sent, strict=True)
        for e in time_edits(orjson.loads(a), orjson.loads(b))
    ]
    assert {path for path, _ in edits} == fields  # trade ids ("t"), update ids untouched
    [offset] = {delta for _, delta in edits}  # one constant: order and spacing kept
    assert offset == sim.time_offset_ms and offset % 1000 == 0
    assert [len(t) for t in sent] == [len(t) for t in recorded]  # every other byte as is
    first = first_event_ms(sim.tape)
    assert before <= first + offset <= after + 1000  # the replay starts now


def test_okx_event_times_move_to_now_and_snapshots_keep_valid_checksums() -> None:
    sim = Simulator("okx", OKX_LEGACY, limit=600, okx_seq_ids=True)
    inst = "BTC-USD-220325-40000-C"
    args = [{"channel": c, "instId": inst} for c in ("books-l2-tbt", "trades", "tickers")]
    keys = {okx_key(arg) for arg in args}
    recorded = [e.text for e in sim.tape.entries if e.key in keys]

    async def session(sim: Simulator) -> tuple[list[str], list[str]]:
        async with connect(sim.ws_url) as ws:
            await okx_subscribe(ws, "subscribe", args)
            got = await receive(ws, len(args) + len(recorded))
            await okx_subscribe(ws, "unsubscribe", args[:1])
            await okx_subscribe(ws, "subscribe", args[:1])
            return got, await receive(ws, 3)  # 2 acks and a fresh snapshot

    before = wall_ms()
    got, again = serve(sim, session)
    frames = [f for f in got if '"event"' not in f]
    assert len(frames) == len(recorded)
    edits = [
        e
        for a, b in zip(recorded, frames, strict=True)
        for e in time_edits(orjson.loads(a), orjson.loads(_SEQ.sub("", b)))
    ]
    assert {path for path, _ in edits} == {".data[].ts"}
    [offset] = {delta for _, delta in edits}
    assert offset == sim.time_offset_ms and before <= first_event_ms(sim.tape) + offset
    snapshot = orjson.loads(again[-1])
    assert snapshot["action"] == "snapshot"
    data = snapshot["data"][0]
    last_book = [orjson.loads(f) for f in frames if '"books-l2-tbt"' in f][-1]["data"][0]
    assert data["ts"] == last_book["ts"]  # the built snapshot is shifted too
    top = [[lv[0], lv[1]] for lv in data["bids"][:25]], [[lv[0], lv[1]] for lv in data["asks"][:25]]
    assert data["checksum"] == okx_checksum(*top)


def test_original_times_sends_every_frame_as_recorded() -> None:
    sim = Simulator("binance", BTC, limit=200, original_times=True)
    recorded = [e.text for e in sim.tape.entries]
    assert serve(sim, lambda sim: binance_all(sim, BTC_STREAMS, len(recorded))) == recorded
    assert sim.time_offset_ms is None


def test_live_pipeline_with_default_settings_makes_bars_not_late_records(tmp_path: Path) -> None:
    """The demo's pipeline with the live defaults (windows also closed by the wall clock)
    against simulators with theirs: the trades fall in windows that are still open."""
    feeds = [
        Feed("binance", ["BTC/USDT"], SimulatorThread("binance", BTC, limit=6000)),
        Feed("okx", ["BTC/USDT"], SimulatorThread("okx", OKX_V5)),
    ]
    operators = {
        "book": {"depth": 10, "emit_interval_ms": 1000},
        "ohlcv": {"intervals": ["1s", "1m"], "lateness_ms": 2000},  # wall_clock_close: live
    }
    every_trade = all_of(
        *(has_trades("BTC/USDT", set(tape_trade_ids(f.tape, f.venue, "BTC/USDT"))) for f in feeds)
    )
    run_live(feeds, tmp_path, operators, every_trade)
    out = outputs(tmp_path)
    trades = Counter(t["venue"] for t in out["trades"])
    assert trades["binance"] > 1000 and trades["okx"] > 10
    assert {(b["venue"], b["interval"]) for b in out["bars"]} == {
        (venue, interval) for venue in ("binance", "okx") for interval in ("1s", "1m")
    }
    assert len(out["late"]) <= sum(trades.values()) // 1000  # before: every trade, twice
    assert out["dead_letter"] == []
    offsets = [feed.sim.simulator.time_offset_ms for feed in feeds]
    assert all(offset is not None and offset > 0 for offset in offsets)


# ---- the command: signals ----


def start_simulate(*extra: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    """``candlewax simulate`` in a child process, once it listens. ``ignore_sigint``
    does what a shell does to a job started with ``&``."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    argv = [
        sys.executable,
        "-m",
        "candlewax.cli",
        "simulate",
        "--venue=binance",
        f"--capture={BTC}",
        "--limit=100",
        *extra,
    ]

    def as_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_background_job if ignore_sigint else None,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Ctrl-C"):
            return proc
    proc.kill()
    raise AssertionError(f"simulate did not start: {proc.communicate()}")


@pytest.mark.parametrize(("signum", "background"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_simulate_stops_on_sigint_in_the_background_and_on_sigterm(
    signum: signal.Signals, background: bool
) -> None:
    proc = start_simulate(ignore_sigint=background)
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""
    [line] = out.splitlines()
    assert line.startswith(f"stopped ({signum.name}): tape_frames=")
