"""A client that stops reading: bounded memory, drops told, disconnect; others unaffected."""

from __future__ import annotations

import asyncio
import socket
import threading

import orjson
import pytest
from fanout_helpers import Client, Record, fanout_server
from flow_helpers import OKX_TBT, run_replay
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from candlewax import metrics
from candlewax.client.protocol import CLOSE_TOO_SLOW
from sinks.fanout.hub import Hub
from sinks.fanout.server import WRITE_LIMIT

QUEUE = 500
BATCH = 500
BATCHES = 24  # ~9 MB of book records: more than the socket buffers (~4.5 MB) and queue hold


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    out = run_replay(OKX_TBT, "okx", tmp_path_factory.mktemp("tbt"))
    return [r for r in out["book"] if r["type"] == "book"]


def _stalled_socket(address: tuple[str, int], rcvbuf: int | None = 4096) -> socket.socket:
    """A client socket whose small receive buffer fills fast (with ``max_queue=1`` the
    client library stops reading once one message waits)."""
    sock = socket.create_connection(address)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    return sock


def _too_slow_count() -> float:
    return (
        metrics.REGISTRY.get_sample_value("candlewax_ws_disconnects_total", {"reason": "too_slow"})
        or 0.0
    )


def _stalled_view(hub: Hub) -> tuple[int, int, int, int]:
    """(clients, queued messages, dropped, socket buffer bytes) of the worst client;
    dropped counts clients that already left too (on a loaded machine the stalled
    one can lag past max_lag_s and be gone before the last look)."""
    worst = max(hub.clients.values(), key=lambda c: c.outbox.dropped_total, default=None)
    if worst is None:
        return 0, 0, hub.dropped(), 0
    ob = worst.outbox
    return len(hub.clients), ob.queued, hub.dropped(), ob.transport.get_write_buffer_size()


def test_stalled_client_is_bounded_and_dropped_while_others_get_everything(
    books: list[Record],
) -> None:
    payload = [books[i % len(books)] for i in range(BATCH)]
    biggest = max(len(orjson.dumps(r)) for r in payload) + 16
    options = {"queue_size": QUEUE, "max_lag_s": 0.5, "client_rate": 1000, "client_burst": 1000}
    with fanout_server(heartbeat_s=3600, **options) as srv:
        slow_before = _too_slow_count()

        async def main() -> tuple[list[Client], list[tuple[int, int, int, int]], int]:
            stalled = await connect(
                srv.url, sock=_stalled_socket(srv.address), max_queue=1, compression=None
            )
            await stalled.send('{"type":"subscribe","channels":["orderbook"]}')
            readers = [Client(srv.url, typed=False, channels=["orderbook"]) for _ in range(2)]
            for reader in readers:
                await reader.subscribed()
            views = []
            for _ in range(BATCHES):
                srv.publish(payload)
                for reader in readers:  # readers keep up; the stalled one never reads
                    await reader.barrier()
                views.append(srv.call(_stalled_view))
            # Lagging past max_lag_s: the server closes the stalled client (and frees its
            # queue at once; the socket goes after the close timeout).
            closing = 0
            for _ in range(200):
                closing = int(_too_slow_count() - slow_before)  # closed, or already gone
                if closing:
                    break
                await asyncio.sleep(0.05)
            stalled.transport.abort()
            for reader in readers:
                await reader.close()
            return readers, views, closing

        readers, views, closing = asyncio.run(main())

    for reader in readers:
        got = reader.data()
        assert len(got) == BATCH * BATCHES
        assert got[:BATCH] == payload and got[-BATCH:] == payload
        assert not reader.of_kind("dropped")
    assert max(queued for _, queued, _, _ in views) <= QUEUE
    assert max(buffered for *_, buffered in views) <= WRITE_LIMIT + BATCH * biggest
    assert views[-1][2] > 0, "the stalled client must have been dropped messages"
    assert closing == 1, "the stalled client must be disconnected"
    assert _too_slow_count() == slow_before + 1


def test_a_client_lagging_too_long_is_closed_with_1013(books: list[Record]) -> None:
    with fanout_server(queue_size=10, max_lag_s=0.2, heartbeat_s=3600) as srv:

        async def main() -> tuple[list[str], int]:
            # Default buffers: a tiny window would make the final read crawl (TCP
            # silly-window avoidance) past the server's close timeout.
            sock = _stalled_socket(srv.address, rcvbuf=None)
            stalled = await connect(srv.url, sock=sock, max_queue=1, compression=None)
            await stalled.send('{"type":"subscribe","channels":["orderbook"]}')
            # Publish until the server starts dropping for it, then until it gives up.
            for _ in range(500):
                srv.publish(books[:200])
                if srv.call(_stalled_view)[2] > 0:
                    break
            for _ in range(200):
                if srv.call(lambda hub: all(c.outbox.closed for c in hub.clients.values())):
                    break
                await asyncio.sleep(0.02)
            kinds: list[str] = []
            try:
                while True:
                    message = orjson.loads(await asyncio.wait_for(stalled.recv(), 10))
                    kinds.append(message["type"])
            except ConnectionClosed as exc:
                return kinds, exc.rcvd.code if exc.rcvd is not None else 0
            return kinds, 0

        kinds, code = asyncio.run(main())
    assert kinds[:3] == ["hello", "subscribed", "snapshot"] and "book" in kinds
    assert code == CLOSE_TOO_SLOW


def test_a_slow_sdk_client_is_told_how_many_messages_it_lost(books: list[Record]) -> None:
    payload = books[:200]  # smaller than the queue: the backlog is what gets dropped
    with fanout_server(queue_size=300, max_lag_s=None, heartbeat_s=3600) as srv:

        async def main() -> Client:
            client = Client(srv.url, typed=False, channels=["orderbook"])
            await client.subscribed()
            # ~30 MB while this loop (the client's) is blocked and reads nothing: the
            # socket buffers (a few MB) fill, then the 300-message queue overflows.
            for _ in range(200):
                srv.publish(payload)
            srv.call(lambda hub: hub.flush())  # blocks until the server dispatched it all
            await client.barrier()
            await client.close()
            return client

        client = asyncio.run(main())
    notices = client.of_kind("dropped")
    assert notices, "40k records into a 300-message queue must drop"
    assert sum(n["count"] for n in notices) == notices[-1]["total"]
    assert len(client.data()) + notices[-1]["total"] == 200 * len(payload)
    assert client.stream.stats.dropped == notices[-1]["total"]


def test_publishing_faster_than_the_server_loop_drops_and_counts(books: list[Record]) -> None:
    batch = books[:100]
    with fanout_server(heartbeat_s=3600) as srv:
        srv.max_inflight = 300
        srv.max_block_s = 0.01
        entered, gate = threading.Event(), threading.Event()

        def hold_the_loop(hub: Hub) -> None:
            entered.set()
            gate.wait(30)

        async def main() -> tuple[Client, list[bool]]:
            client = Client(srv.url, typed=False, channels=["orderbook"])
            await client.subscribed()
            blocker = threading.Thread(target=srv.call, args=(hold_the_loop, 60))
            blocker.start()
            entered.wait(10)  # the server loop is busy: nothing it is handed gets processed
            accepted = [srv.publish(batch) for _ in range(6)]
            gate.set()
            blocker.join()
            await client.barrier()
            await client.close()
            return client, accepted

        client, accepted = asyncio.run(main())
        lost = srv.lost
    assert accepted == [True, True, True, False, False, False]
    assert lost == 300
    assert client.data() == batch * 3


def test_a_client_that_asks_for_snapshots_but_never_reads_is_cut_off(
    books: list[Record],
) -> None:
    # Replies and snapshots are never dropped, so they are bounded in bytes instead.
    with fanout_server(max_reply_bytes=64 * 1024, client_rate=1000, client_burst=1000) as srv:
        # State of 500 markets: every snapshot carries ~1 MB of books.
        srv.publish([{**books[0], "symbol": f"S{i:03d}/USDT"} for i in range(500)])

        async def main() -> bool:
            sock = _stalled_socket(srv.address)
            stalled = await connect(srv.url, sock=sock, max_queue=1, compression=None)
            before = _too_slow_count()
            for i in range(200):
                await stalled.send(f'{{"type":"subscribe","id":{i},"channels":["orderbook"]}}')
                await stalled.send(f'{{"type":"unsubscribe","id":{i}}}')
                if _too_slow_count() > before:
                    return True
                await asyncio.sleep(0.01)
            for _ in range(200):  # the housekeeping pass closes it
                if _too_slow_count() > before:
                    return True
                await asyncio.sleep(0.02)
            return False

        assert asyncio.run(main()), "the non-reading client must be disconnected"
        assert srv.call(lambda hub: all(c.outbox.closed for c in hub.clients.values()))
