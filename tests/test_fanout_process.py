"""The fan-out server in its own process(es) (``processes: N``): restart after a
crash, a stalled server process never blocks the flow (drops are counted, never
silent), several processes share one port, errors a user can cause stay one line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from fanout_helpers import Client, fanout_service, ws_config

from candlewax.client import Stream
from candlewax.schema import make_trade
from sinks.fanout import child
from sinks.fanout.feed import HEADER, RECORDS
from sinks.fanout.hub import Hub
from sinks.fanout.processes import ServerProcesses
from sinks.fanout.threaded import acquire

Record = dict[str, Any]


def trades(first: int, count: int) -> list[Record]:
    return [
        make_trade("binance", "BTC/USDT", 1 + i, 2 + i, str(i), "60000.5", "0.25", "buy")
        for i in range(first, first + count)
    ]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_server_process_is_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "candlewax.fanout")
    with fanout_service(processes=1) as srv:
        assert isinstance(srv, ServerProcesses)
        (pid,) = srv.pids()
        assert pid is not None

        async def main() -> Client:
            client = Client(srv.url, channels=["trades"])
            await client.subscribed()
            srv.publish(trades(0, 3))
            await client.barrier("before")
            os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(wait_until, lambda: srv.restarts == 1, "the restart")
            await client.subscribed()  # the SDK reconnected to the new process
            srv.publish(trades(3, 2))
            await client.barrier("after")
            await client.close()
            return client

        client = asyncio.run(main())
        assert srv.pids() != [pid]
    assert [r["trade_id"] for r in client.data()] == ["0", "1", "2", "3", "4"]
    deaths = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(deaths) == 1 and f"(pid {pid}) died with exit code -9" in deaths[0]


def test_a_stalled_server_process_never_blocks_the_flow_and_drops_are_counted() -> None:
    cfg = ws_config(processes=1, queue_size=1_000_000, max_lag_s=None, heartbeat_s=3600)
    srv = ServerProcesses(cfg, feed_backlog=1_000_000)
    srv.start()
    try:
        (pid,) = srv.pids()
        assert pid is not None

        async def main() -> tuple[Client, int]:
            client = Client(srv.url, typed=False, channels=["trades"])
            await client.subscribed()
            os.kill(pid, signal.SIGSTOP)  # the server process stops reading its feed
            published = 0
            try:
                # More than the feed's socket buffer and backlog hold: if publishing
                # waited for the server, this would never end.
                while srv.lost < 10_000:
                    srv.publish(trades(published, 1_000))
                    published += 1_000
            finally:
                os.kill(pid, signal.SIGCONT)
            # A pong covers what the server process has read from the feed: wait for it
            # to read everything that was not dropped.
            expected = published - srv.lost
            await asyncio.to_thread(wait_until, lambda: _records(srv) == expected, "the feed")
            await client.barrier()
            await client.close()
            return client, published

        client, published = asyncio.run(main())
        ids = [int(r["trade_id"]) for r in client.data()]
    finally:
        srv.stop()
    assert len(ids) == published - srv.lost  # every record is delivered or counted as lost
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # whole batches dropped, in order


def _records(srv: ServerProcesses) -> int:
    return int(httpx.get(f"{srv.http_url}/status").json()["records"])


def test_records_that_cannot_be_encoded_are_skipped_and_counted() -> None:
    good = trades(0, 2)
    bad = {**trades(2, 1)[0], "price": object()}
    with fanout_service(processes=1) as srv:

        async def main() -> Client:
            client = Client(srv.url, typed=False, channels=["trades"])
            await client.subscribed()
            srv.publish([good[0], bad, good[1]])
            await client.barrier()
            await client.close()
            return client

        client = asyncio.run(main())
        status = httpx.get(f"{srv.http_url}/status").json()
    assert client.data() == good
    assert status["skipped_records"] == 1


def test_several_server_processes_share_the_port_and_each_gets_the_whole_stream() -> None:
    with fanout_service(processes=3) as srv:
        assert isinstance(srv, ServerProcesses)
        assert len({pid for pid in srv.pids() if pid is not None}) == 3

        async def main() -> list[Client]:
            clients = [Client(srv.url, typed=False, channels=["trades"]) for _ in range(9)]
            for client in clients:
                await client.subscribed()
            srv.publish(trades(0, 50))
            for client in clients:
                await client.barrier()
                await client.close()
            return clients

        clients = asyncio.run(main())
        served = [httpx.get(f"{srv.http_url}/status").json()["records"] for _ in range(6)]
    for client in clients:
        assert client.data() == trades(0, 50)
    assert set(served) == {50}  # whichever process answers holds the whole state


def test_a_port_in_use_is_one_oserror_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            acquire(ws_config(port=port, processes=1))


def test_sdk_plain_iterator_against_a_server_process() -> None:
    with fanout_service(processes=1) as srv:
        got = []
        for message in Stream(srv.url, on_connect=lambda s: srv.publish(trades(0, 3))):
            got.append(message.model_dump(mode="json"))  # type: ignore[union-attr]
            if len(got) == 3:
                break
    assert got == trades(0, 3)


def test_a_server_process_that_fell_behind_dispatches_all_that_waits_before_writing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Everything waiting on the feed is dispatched in one loop iteration, so each client
    gets one write for all of it (an asyncio stream took 256 KiB an iteration: a write
    per client per 256 KiB kept a starved server behind)."""
    payloads = [orjson.dumps(trades(i * 10, 10)) for i in range(600)]
    backlog = b"".join(HEADER.pack(len(p), RECORDS) + p for p in payloads)  # ~1.6 MB
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * len(backlog))
    if ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * len(backlog):
        pytest.skip("the kernel caps socket buffers below the backlog (net.core.wmem_max)")
    ours.sendall(backlog)  # all of it waits before the server reads anything
    ingested: list[int] = []
    before_first_write_pass: list[int] = []
    ingest = Hub.ingest

    def counting_ingest(hub: Hub, records: list[Record]) -> None:
        if not ingested:  # runs once the loop is done with this iteration
            hub.loop.call_soon(lambda: before_first_write_pass.append(len(ingested)))
        ingested.append(len(records))
        ingest(hub, records)

    monkeypatch.setattr(Hub, "ingest", counting_ingest)

    class Ready:
        def send(self, message: Any) -> None:
            assert message[0] == "ready", message

    def close_when_all_arrived() -> None:
        wait_until(lambda: len(ingested) == len(payloads), "the backlog to be dispatched")
        ours.close()  # EOF: the server stops

    closer = threading.Thread(target=close_when_all_arrived)
    closer.start()
    asyncio.run(child._serve(ws_config(processes=1), theirs, Ready(), False))
    closer.join()
    assert before_first_write_pass == [len(payloads)]
