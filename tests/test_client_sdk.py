"""candlewax.client.Stream against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest
from fanout_helpers import Client, fanout_server, ws_config
from websockets.asyncio.server import ServerConnection, serve

from candlewax.client import (
    AuthError,
    Book,
    Stream,
    StreamError,
    Subscribed,
    SubscriptionError,
    Trade,
    decode,
)
from candlewax.client.stream import StreamStats
from candlewax.schema import make_trade
from sinks.fanout.threaded import acquire, release

TRADES = [
    make_trade("binance", "BTC/USDT", 10 + i, 20 + i, str(i), f"6000{i}.5", "0.1", "buy")
    for i in range(5)
]
BOOK = {
    "type": "book",
    "schema_version": 1,
    "venue": "okx",
    "symbol": "BTC/USDT",
    "ts_exchange": 1,
    "ts_ingest": 2,
    "depth": 3,
    "bids": [["100.5", "1"], ["100", "2"], ["99", "3"]],
    "asks": [["101", "1"], ["102", "2"], ["103", "3"]],
    "sequence": 9,
}


def test_reconnects_and_resubscribes_after_a_server_restart() -> None:
    events: list[str] = []
    first = acquire(ws_config())
    port = first.address[1]

    async def main() -> Client:
        client = Client(
            first.url,
            symbols=["BTC/USDT"],
            on_connect=lambda s: events.append("connect"),
            on_disconnect=lambda s, reason: events.append(f"disconnect: {reason}"),
        )
        await client.subscribed()
        first.publish(TRADES[:2])
        await client.barrier()
        await asyncio.to_thread(release, first)  # server gone: the client retries
        second = await asyncio.to_thread(acquire, ws_config(port=port))
        try:
            second.publish([BOOK])  # state before the client is back: its snapshot
            await client.subscribed()
            second.publish(TRADES[2:])
            await client.barrier("again")
            subs = second.call(lambda hub: hub.subscriptions())
            assert subs == 1, "the client must have subscribed again"
        finally:
            await client.close()
            await asyncio.to_thread(release, second)
        return client

    client = asyncio.run(main())
    assert events[0] == "connect" and events[1].startswith("disconnect: connection closed (1001")
    assert events.count("connect") == 2
    # BOOK came once: in the new snapshot or live, depending on who was first.
    assert client.records() == [*TRADES[:2], BOOK, *TRADES[2:]]
    assert [type(m).__name__ for m in client.messages].count("Subscribed") == 2
    assert client.stream.stats.connects == 2


def test_a_silent_server_is_detected_by_heartbeat_timeout() -> None:
    connections = 0

    async def silent(conn: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await conn.wait_closed()  # accepts, then never says anything

    async def main() -> list[str]:
        reasons: list[str] = []
        async with serve(silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            stream = Stream(
                f"ws://127.0.0.1:{port}/stream",
                heartbeat_timeout=0.2,
                backoff_base=0.01,
                max_retries=2,
                on_disconnect=lambda s, reason: reasons.append(reason),
            )
            with pytest.raises(StreamError, match="gave up after 2 retries"):
                async for _ in stream:
                    pass
            server.close()
        return reasons

    reasons = asyncio.run(main())
    assert connections == 3
    assert reasons == ["heartbeat timeout: the server went silent"] * 3


def test_plain_iterator_yields_typed_records_snapshot_first() -> None:
    with fanout_server() as srv:
        srv.publish([BOOK])
        stream = Stream(srv.url, depth=2, on_connect=lambda s: srv.publish(TRADES))
        got: list[Any] = []
        for message in stream:
            got.append(message)
            if len(got) == 1 + len(TRADES):
                break
    book, *trades = got
    assert isinstance(book, Book) and book.depth == 2 and len(book.bids) == 2
    assert all(isinstance(t, Trade) for t in trades)
    assert [t.model_dump(mode="json") for t in trades] == TRADES
    assert isinstance(stream.subscribed[0], Subscribed) and stream.subscribed[0].depth == 2


def test_batched_server_messages_are_json_arrays() -> None:
    with fanout_server(batch_ms=20, batch_max=2) as srv:

        async def main() -> tuple[Client, list[Any]]:
            raw: list[Any] = []
            client = Client(
                srv.url, typed=False, on_message=lambda m: raw.append(m), channels=["trades"]
            )
            await client.subscribed()
            srv.publish(TRADES)
            await client.barrier()
            await client.close()
            return client, raw

        client, _ = asyncio.run(main())
        assert client.data() == TRADES

        async def raw_frames() -> list[Any]:
            from websockets.asyncio.client import connect

            async with connect(srv.url, compression=None) as ws:
                await ws.recv()
                await ws.send('{"type":"subscribe","channels":["trades"]}')
                await ws.recv()
                await ws.recv()
                srv.publish(TRADES)
                await ws.send('{"type":"ping"}')
                out: list[Any] = []
                while True:
                    message = orjson.loads(await ws.recv())
                    if isinstance(message, dict) and message["type"] == "pong":
                        return out
                    out.append(message)

        frames = asyncio.run(raw_frames())
    assert frames == [TRADES[0:2], TRADES[2:4], TRADES[4:5]]


def test_rejected_subscription_raises() -> None:
    with fanout_server() as srv:

        async def main() -> None:
            async for _ in Stream(srv.url, symbols=["BTCUSDT"]):
                pass

        with pytest.raises(SubscriptionError, match="not a unified symbol"):
            asyncio.run(main())


def test_bad_token_raises_auth_error_without_retrying() -> None:
    connects = threading.Event()
    with fanout_server(auth={"tokens": ["good-token"]}) as srv:

        async def main() -> None:
            stream = Stream(srv.url, token="bad", on_connect=lambda s: connects.set())
            async for _ in stream:
                pass

        with pytest.raises(AuthError, match="invalid token"):
            asyncio.run(main())

        async def good() -> Any:
            async with Stream(srv.url, token="good-token", control=True) as stream:
                async for message in stream:
                    return message

        assert type(asyncio.run(good())).__name__ == "Hello"
    assert not connects.is_set()


def test_hooks_may_be_coroutines_and_may_fail() -> None:
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(type(message).__name__)
        if len(seen) == 1:
            raise RuntimeError("a bug in user code")

    with fanout_server() as srv:

        async def main() -> list[Any]:
            out = []
            publish = lambda s: srv.publish(TRADES[:1])  # noqa: E731
            async with Stream(srv.url, on_message=on_message, on_connect=publish) as stream:
                async for message in stream:
                    out.append(message)
                    break
            return out

        (trade,) = asyncio.run(main())
    assert isinstance(trade, Trade)
    assert seen[:3] == ["Hello", "Subscribed", "Snapshot"]


def test_decode_counts_what_it_cannot_read() -> None:
    stats = StreamStats()
    items = [
        {"type": "dropped", "count": 7, "total": 7},
        {"type": "from-the-future"},
        {"type": "trade", "venue": "binance"},  # off the contract
        TRADES[0],
    ]
    out = decode(orjson.dumps(items), typed=True, stats=stats)
    assert [type(m).__name__ for m in out] == ["Dropped", "Trade"]
    assert stats.dropped == 7 and stats.unknown == 2
    assert decode(b"not json", typed=True, stats=stats) == [] and stats.unknown == 3


def test_bad_arguments_fail_early() -> None:
    with pytest.raises(TypeError, match="list of names"):
        Stream(symbols="BTC/USDT")  # a str is a Sequence[str]: caught at run time
    with pytest.raises(ValueError, match="unknown subscription keys"):
        Stream(subscriptions=[{"symbol": ["BTC/USDT"]}])


def test_one_unreadable_snapshot_record_costs_only_itself() -> None:
    stats = StreamStats()
    snapshot = {
        "type": "snapshot",
        "id": 1,
        "records": [
            {"type": "status", "venue": "binance", "event": "from-a-newer-server"},
            TRADES[0],
        ],
    }
    (message,) = decode(orjson.dumps(snapshot), typed=True, stats=stats)
    assert [type(r).__name__ for r in message.records] == ["Trade"]


MANY_TRADES = [
    make_trade("binance", "BTC/USDT", 10 + i, 20 + i, str(i), "60000.5", "0.1", "buy")
    for i in range(300)
]


def test_receiving_schedules_no_timer_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat timeout is one watchdog timer per timeout period: a timeout
    around every receive scheduled and cancelled a timer per message, which halved
    the SDK's throughput."""
    timers = 0
    client_loop: list[asyncio.AbstractEventLoop] = []
    call_at = asyncio.BaseEventLoop.call_at

    def counting(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> Any:
        nonlocal timers
        timers += self in client_loop
        return call_at(self, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_at", counting)
    with fanout_server() as srv:

        async def main() -> int:
            client_loop.append(asyncio.get_running_loop())
            got = 0
            stream = Stream(
                srv.url, channels=["trades"], on_connect=lambda s: srv.publish(MANY_TRADES)
            )
            async for _ in stream:
                got += 1
                if got == len(MANY_TRADES):
                    break
            await stream.close()
            return got

        assert asyncio.run(main()) == len(MANY_TRADES)
    assert timers < 20


def test_plain_iterator_hands_over_batches_not_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """``for msg in Stream(...)``: the consumer thread does not call into the
    connection's loop per record (one round trip per record capped it)."""
    consumer = threading.current_thread()
    hops = 0
    call_soon_threadsafe = asyncio.BaseEventLoop.call_soon_threadsafe

    def counting(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += threading.current_thread() is consumer and self is not server_loop
        return call_soon_threadsafe(self, *args, **kwargs)

    with fanout_server(batch_ms=5) as srv:
        server_loop = srv._thread.loop
        monkeypatch.setattr(asyncio.BaseEventLoop, "call_soon_threadsafe", counting)
        got = []
        for message in Stream(
            srv.url, channels=["trades"], on_connect=lambda s: srv.publish(MANY_TRADES)
        ):
            got.append(message)
            if len(got) == len(MANY_TRADES):
                break
    assert [t.model_dump(mode="json") for t in got] == MANY_TRADES
    assert hops < 20


def test_the_sdk_asks_for_arrays_and_keeps_the_url_query() -> None:
    with fanout_server(auth={"tokens": ["sesame-token"]}) as srv:

        async def main() -> list[Any]:
            url = srv.url + "?token=sesame-token"
            stream = Stream(url, channels=["trades"], on_connect=lambda s: srv.publish(MANY_TRADES))
            got = []
            async for trade in stream:
                got.append(trade)
                if len(got) == len(MANY_TRADES):
                    break
            clients = srv.call(lambda hub: [c.arrays for c in hub.clients.values()])
            await stream.close()
            assert clients == [True]
            return got

        got = asyncio.run(main())
    assert [t.model_dump(mode="json") for t in got] == MANY_TRADES
