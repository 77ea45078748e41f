"""The simulator's venue plug-in contract (simulator.venues): a venue is one module
(a ``VenueSim``) plus one registry entry, and the generic server serves it.

The toy venue below is OKX's protocol under another name and path with two things
OKX does not have and later venues do (Coinbase, Kraken): a sequence number per
connection written into each frame, and server heartbeats. Frames come from the
real OKX capture.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Mapping
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from simulator import venues
from simulator.cli import build_parser
from simulator.faults import Faults
from simulator.server import Simulator
from simulator.tape import Entry, Tape, load_tape
from simulator.venues import ClientPort, venue_names, venue_sim
from simulator.venues.okx import OkxSim

OKX_V5 = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "captures"
    / "okx"
    / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
)
SUBSCRIBE = orjson.dumps(
    {
        "op": "subscribe",
        "args": [
            {"channel": "books", "instId": "BTC-USDT"},
            {"channel": "trades", "instId": "BTC-USDT"},
        ],
    }
).decode()
_SEQ_NUM = re.compile(r'^\{"sequence_num":([0-9]+),')
HEARTBEAT = '{"channel":"heartbeat"}'


class NumberedSim(OkxSim):
    """OKX frames, numbered per connection from 0, plus heartbeats."""

    names = ("okx-numbered",)
    ws_paths = ("/numbered",)
    ws_url_path = "/numbered"
    connect_hint = "/numbered"
    heartbeat_interval = 0.02
    snapshot_counter = "numbered_snapshots"

    def __init__(self, venue: str, options: Mapping[str, object] | None = None) -> None:
        super().__init__(venue, options)
        self._next: weakref.WeakKeyDictionary[ClientPort, int] = weakref.WeakKeyDictionary()

    def outgoing(self, client: ClientPort, entry: Entry, text: str) -> str:
        number = self._next.get(client, 0)
        self._next[client] = number + 1
        return f'{{"sequence_num":{number},{text[1:]}'

    def heartbeat(self, client: ClientPort) -> str | None:
        return HEARTBEAT if client.subs else None


@pytest.fixture
def numbered(monkeypatch: pytest.MonkeyPatch) -> Tape:
    monkeypatch.setitem(venues.REGISTRY, "okx-numbered", NumberedSim)
    tape = load_tape(OKX_V5, "okx", limit=600)
    return Tape("okx-numbered", tape.entries, tape.seeds, tape.skipped)


def test_the_registry_names_the_venues_the_cli_offers() -> None:
    names = venue_names()
    assert names[:3] == ("binance", "binance-usdm", "okx")  # later venues come after
    venue_action = next(a for a in build_parser()._actions if a.dest == "venue")
    assert tuple(venue_action.choices or ()) == names
    with pytest.raises(ValueError, match=f"speaks {', '.join(names[:-1])} and {names[-1]}, not"):
        venue_sim("nowhere")


def test_a_registered_module_is_served_by_the_generic_server(numbered: Tape) -> None:
    """Path, subscribe acks, in-band snapshot (counted under the venue's name),
    per-connection frame edits that a dropped update turns into a gap, heartbeats."""
    book = [e for e in numbered.entries if e.key == "books:BTC-USDT" and e.depth_no]
    sim = Simulator(
        "okx-numbered",
        numbered,
        faults=Faults(drop_depth=frozenset({book[2].depth_no})),
        original_times=True,
    )
    wanted = [e for e in numbered.entries if e.key in ("books:BTC-USDT", "trades:BTC-USDT")]

    async def session() -> tuple[list[str], int]:
        frames: list[str] = []
        heartbeats = 0

        async def until(count: int, beats: int = 0) -> None:
            nonlocal heartbeats
            while len(frames) < count or heartbeats < beats:
                message = await asyncio.wait_for(ws.recv(), 30)
                assert isinstance(message, str)
                if message == HEARTBEAT:
                    heartbeats += 1
                else:
                    frames.append(message)

        await sim.start()
        try:
            assert sim.ws_url.endswith("/numbered") and sim.rest_url is None
            async with connect(sim.ws_url) as ws:
                await ws.send(SUBSCRIBE)
                await until(2 + len(wanted) - 1)  # acks, every data frame but the dropped one
                # A resubscribe gets a snapshot built by the simulator (books as of now).
                await ws.send(SUBSCRIBE.replace('"subscribe"', '"unsubscribe"'))
                await ws.send(SUBSCRIBE)
                await until(len(frames) + 4 + 1, beats=2)
                return frames, heartbeats
        finally:
            await sim.stop()

    frames, heartbeats = asyncio.run(session())
    data, resubscribed = frames[2:-5], frames[-5:]
    assert [orjson.loads(a)["event"] for a in frames[:2]] == ["subscribe", "subscribe"]
    events = [orjson.loads(t).get("event") for t in resubscribed]
    assert events == ["unsubscribe", "unsubscribe", "subscribe", "subscribe", None]
    assert orjson.loads(resubscribed[-1])["action"] == "snapshot"
    numbers = [int(_SEQ_NUM.match(text)[1]) for text in data]  # type: ignore[index]
    assert numbers == [n for n in range(len(wanted)) if n != wanted.index(book[2])]
    assert [_SEQ_NUM.sub("{", t) for t in data] == [e.text for e in wanted if e is not book[2]]
    assert sim.stats.dropped == 1 and sim.stats.okx_snapshots == 0
    assert sim.stats.venue_counts == {"numbered_snapshots": 1}
    assert sim.stats.as_dict()["numbered_snapshots"] == 1
    assert heartbeats >= 2


def test_an_unknown_path_names_the_venues_own(numbered: Tape) -> None:
    sim = Simulator("okx-numbered", numbered)

    async def get() -> httpx.Response:
        await sim.start()
        try:
            url = f"http://{sim.host}:{sim.port}/ws/v5/public"
            return await asyncio.to_thread(httpx.get, url)
        finally:
            await sim.stop()

    response = asyncio.run(get())
    assert response.status_code == 404
    assert response.text == "not served by the okx-numbered simulator; use /numbered\n"
