"""The client protocol on real sockets: bad input, subscriptions, auth, heartbeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from fanout_helpers import fanout_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from candlewax.client.protocol import CLOSE_POLICY, CONTROL_ADAPTER, Heartbeat
from candlewax.schema import make_status, make_trade
from sinks.fanout.auth import make_token
from sinks.fanout.hub import Hub
from sinks.fanout.requests import parse_request

TRADE = make_trade("binance", "BTC/USDT", 1, 2, "7", "60000.5", "0.01", "buy")
OKX_TRADE = make_trade("okx", "ETH/USDT", 1, 2, "8", "3000", "1", "sell")

MALFORMED: list[str | bytes] = [
    "not json",
    "[1, 2, 3]",
    '"just a string"',
    "{}",
    '{"type": "bogus"}',
    '{"type": "subscribe", "chanels": ["trades"]}',
    '{"type": "subscribe", "channels": "trades"}',
    '{"type": "subscribe", "channels": ["candles"]}',
    '{"type": "subscribe", "channels": [1]}',
    '{"type": "subscribe", "symbols": ["BTCUSDT"]}',
    '{"type": "subscribe", "exchanges": ["mtgox"]}',
    '{"type": "subscribe", "depth": 0}',
    '{"type": "subscribe", "depth": true}',
    '{"type": "subscribe", "depth": "20"}',
    '{"type": "subscribe", "raw": "yes"}',
    '{"type": "subscribe", "raw": true}',  # raw not enabled on this server
    '{"type": "subscribe", "channels": []}',
    '{"type": "subscribe", "id": {"a": 1}}',
    '{"type": "subscribe", "id": ""}',
    '{"type": "unsubscribe", "id": "never-made"}',
    '{"type": "ping", "extra": 1}',
    "[" * 5000 + "]" * 5000,
    '{"type": "subscribe", "symbols": ' + orjson.dumps(["A/B"] * 1001).decode() + "}",
    b"\x00\x01binary",
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
]


async def _open(url: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(url, compression=None, **kwargs)
    hello = orjson.loads(await ws.recv())
    return ws, hello


async def _request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps(message).decode())
    reply: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return reply


async def _until_pong(ws: ClientConnection, tag: str = "p") -> list[dict[str, Any]]:
    await ws.send(orjson.dumps({"type": "ping", "id": tag}).decode())
    got: list[dict[str, Any]] = []
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "pong" and message["id"] == tag:
            return got
        got.append(message)


def test_thousands_of_malformed_messages_get_errors_and_break_nothing() -> None:
    rounds = 120  # 3,000 bad messages
    with fanout_server(client_rate=1e6, client_burst=100_000) as srv:

        async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
            bad, _ = await _open(srv.url)
            good, _ = await _open(srv.url)
            await _request(good, {"type": "subscribe", "channels": ["trades"]})
            for _ in range(rounds):
                for message in MALFORMED:
                    await bad.send(message)
            replies = await _until_pong(bad)
            srv.publish([TRADE])
            seen = await _until_pong(good)
            # The abusive connection still works.
            sub = await _request(bad, {"type": "subscribe", "symbols": ["BTC/USDT"], "id": "ok"})
            await bad.close()
            await good.close()
            return replies, seen, sub

        replies, seen, sub = asyncio.run(main())
        health = httpx.get(f"{srv.http_url}/healthz")

    assert len(replies) == rounds * len(MALFORMED)
    assert {r["type"] for r in replies} == {"error"}
    for reply in replies[: len(MALFORMED)]:
        CONTROL_ADAPTER.validate_python(reply)
        assert reply["reason"]
    reasons = [r["reason"] for r in replies[: len(MALFORMED)]]
    assert "not valid JSON" in reasons[0]
    assert "'chanels'" in reasons[5]
    assert "BTCUSDT" in reasons[9]
    assert "raw frames are not enabled" in reasons[15]
    assert "binary" in reasons[-2]
    assert seen[-1] == TRADE
    assert sub["type"] == "subscribed" and sub["id"] == "ok"
    assert health.status_code == 200


def test_subscribe_echoes_the_effective_filter_and_unsubscribe_stops_data() -> None:
    with fanout_server(max_subscriptions=2) as srv:

        async def main() -> list[dict[str, Any]]:
            ws, hello = await _open(srv.url)
            assert hello["type"] == "hello" and hello["default_channels"] == [
                "trades",
                "orderbook",
                "bars",
                "status",
            ]
            out = [await _request(ws, {"type": "subscribe"})]
            out.append(await ws_recv(ws))  # its snapshot
            out.append(await _request(ws, {"type": "subscribe", "id": 1}))
            out.append(
                await _request(
                    ws,
                    {
                        "type": "subscribe",
                        "id": "eth",
                        "channels": ["*", "late", "dead_letter"],
                        "symbols": ["ETH/USDT"],
                        "exchanges": ["okx"],
                        "depth": 5,
                    },
                )
            )
            out.append(await ws_recv(ws))
            out.append(await _request(ws, {"type": "subscribe", "id": "third"}))
            srv.publish([TRADE, OKX_TRADE])
            out.extend(await _until_pong(ws, "a"))
            out.append(await _request(ws, {"type": "unsubscribe", "id": 1}))
            srv.publish([TRADE, OKX_TRADE])
            out.extend(await _until_pong(ws, "b"))
            out.append(await _request(ws, {"type": "unsubscribe"}))
            srv.publish([TRADE, OKX_TRADE])
            out.extend(await _until_pong(ws, "c"))
            await ws.close()
            return out

        out = asyncio.run(main())

    first, snap1, dup, second, snap2, third, t1, t2, unsub1, t3, unsub_all = out
    assert first == {
        "type": "subscribed",
        "id": 1,
        "channels": ["bars", "orderbook", "status", "trades"],
        "symbols": "*",
        "exchanges": "*",
        "depth": None,
        "raw": False,
    }
    assert snap1 == {"type": "snapshot", "id": 1, "records": []}
    assert second["id"] == "eth" and second["symbols"] == ["ETH/USDT"] and second["depth"] == 5
    assert second["channels"] == ["bars", "dead_letter", "late", "orderbook", "status", "trades"]
    assert snap2["id"] == "eth"
    assert third["type"] == "error" and "at most 2" in third["reason"]
    assert third["id"] == "third"
    assert dup == {"type": "error", "reason": "subscription id 1 is already in use", "id": 1}
    assert [t1, t2] == [TRADE, OKX_TRADE]  # OKX_TRADE matches both: sent once
    assert unsub1 == {"type": "unsubscribed", "ids": [1]}
    assert t3 == OKX_TRADE
    assert unsub_all == {"type": "unsubscribed", "ids": ["eth"]}
    assert len(out) == 11  # nothing after unsubscribing everything


async def ws_recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


def test_client_message_rate_is_limited_without_closing() -> None:
    with fanout_server(client_rate=5, client_burst=5) as srv:

        async def main() -> list[dict[str, Any]]:
            ws, _ = await _open(srv.url)
            for i in range(50):
                await ws.send(orjson.dumps({"type": "ping", "id": i}).decode())
            await asyncio.sleep(1.2)  # the bucket refills; the next ping is answered
            replies = await _until_pong(ws, "after")
            await ws.close()
            return replies

        replies = asyncio.run(main())
    pongs = [r for r in replies if r["type"] == "pong"]
    errors = [r for r in replies if r["type"] == "error"]
    assert 5 <= len(pongs) < 50
    assert errors and all("rate limit" in e["reason"] for e in errors)


def test_oversized_client_message_closes_that_connection_only() -> None:
    with fanout_server() as srv:

        async def main() -> tuple[int | None, dict[str, Any]]:
            big, _ = await _open(srv.url)
            code = None
            try:
                await big.send("x" * (65 * 1024))
                await asyncio.wait_for(big.recv(), 10)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
            other, _ = await _open(srv.url)
            reply = await _request(other, {"type": "ping"})
            await other.close()
            return code, reply

        code, reply = asyncio.run(main())
    assert code == 1009
    assert reply["type"] == "pong"


def test_heartbeat_carries_venue_status() -> None:
    with fanout_server(heartbeat_s=0.2) as srv:

        async def main() -> dict[str, Any]:
            ws, _ = await _open(srv.url)
            srv.publish([make_status("okx", None, "connected", 1), OKX_TRADE])
            srv.publish([make_status("okx", "ETH/USDT", "gap_detected", 2)])
            while True:
                message = await ws_recv(ws)  # no subscription: only heartbeats arrive
                if message["type"] == "heartbeat" and message["exchanges"]:
                    await ws.close()
                    return message

        beat = Heartbeat.model_validate(asyncio.run(main()))
    okx = beat.exchanges["okx"]
    assert okx.state == "connected" and okx.gaps == 1 and okx.records == 3
    assert beat.clients == 1


@pytest.mark.parametrize("how", ["header", "query"])
def test_static_token(how: str) -> None:
    with fanout_server(auth={"tokens": ["t0ken-one", "t0ken-two"]}) as srv:

        async def main() -> dict[str, Any]:
            if how == "header":
                ws, hello = await _open(
                    srv.url, additional_headers={"Authorization": "Bearer t0ken-two"}
                )
            else:
                ws, hello = await _open(srv.url + "?token=t0ken-one")
            await ws.close()
            return hello

        assert asyncio.run(main())["type"] == "hello"


async def _rejected(url: str, **kwargs: Any) -> tuple[int | None, str]:
    ws = await connect(url, compression=None, **kwargs)
    try:
        await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""


SECRET = "0123456789abcdef-secret"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "token required"),
        ("wrong", "invalid token"),
        (make_token(SECRET, "bot", -10), "token expired"),
        (make_token("another-secret-0123", "bot", 60), "invalid token"),
        (make_token(SECRET, "bot", 60)[:-2] + "AA", "invalid token"),
        ("bot.99999999999.", "invalid token"),
    ],
)
def test_bad_token_closes_with_1008(token: str | None, reason: str) -> None:
    with fanout_server(auth={"tokens": ["static-ok"], "hmac_secret": SECRET}) as srv:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        code, text = asyncio.run(_rejected(srv.url, additional_headers=headers))
    assert (code, text) == (CLOSE_POLICY, reason)


def test_signed_token_works_until_it_expires() -> None:
    with fanout_server(auth={"hmac_secret": SECRET}) as srv:
        token = make_token(SECRET, "notebook-1", 1.0, now=time.time() + 0.5)

        async def main() -> tuple[dict[str, Any], tuple[int | None, str]]:
            ws, hello = await _open(srv.url + f"?token={token}")
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return hello, (exc.rcvd.code, exc.rcvd.reason)

        hello, closed = asyncio.run(main())
    assert hello["type"] == "hello"
    assert closed == (CLOSE_POLICY, "token expired")


def test_side_port_serves_http_only() -> None:
    with fanout_server(http_port=0) as srv:
        assert srv.server.http_address is not None
        assert srv.http_url != f"http://127.0.0.1:{srv.address[1]}"
        assert httpx.get(f"{srv.http_url}/healthz").text == "ok\n"
        assert httpx.get(f"{srv.http_url}/stream").status_code == 404
        status = httpx.get(f"http://127.0.0.1:{srv.address[1]}/status").json()
        assert status["clients"] == 0


def test_records_off_the_contract_never_stop_the_server() -> None:
    # The server does not validate records (the pipeline does): what it cannot route
    # or cut to depth is counted and skipped, the rest goes out as it came.
    junk: list[Any] = ["junk", {"no": "type"}, {"type": "book", "venue": "okx"}, {"type": "bar"}]
    with fanout_server() as srv:

        async def main() -> list[dict[str, Any]]:
            ws, _ = await _open(srv.url)
            await _request(ws, {"type": "subscribe", "depth": 5})
            await ws_recv(ws)
            srv.publish(junk)
            srv.publish([TRADE])
            got = await _until_pong(ws)
            await ws.close()
            return got

        assert asyncio.run(main()) == [{"type": "bar"}, TRADE]
        assert srv.call(lambda hub: hub.encode_errors) == 1  # the book without "depth"


def test_http_endpoints_need_the_token_when_auth_is_on() -> None:
    import httpx

    with fanout_server(auth={"tokens": ["static-ok"], "hmac_secret": SECRET}) as srv:
        base = srv.http_url
        with httpx.Client(timeout=10) as http:
            assert http.get(f"{base}/healthz").status_code == 200  # probes stay open
            for path in ("/snapshot", "/status", "/metrics"):
                refused = http.get(base + path)
                assert refused.status_code == 401, path
                assert refused.text == "token required\n"
                assert http.get(base + path, params={"token": "wrong"}).status_code == 401
                ok = http.get(base + path, headers={"Authorization": "Bearer static-ok"})
                assert ok.status_code == 200, path
            signed = make_token(SECRET, "grafana", 60)
            assert http.get(f"{base}/status", params={"token": signed}).status_code == 200


def test_arrays_clients_get_one_array_per_dispatch_others_one_object_per_record() -> None:
    trades = [
        make_trade("binance", "BTC/USDT", 1, 2, str(i), "60000.5", "0.01", "buy") for i in range(3)
    ]
    book = {
        "type": "book",
        "schema_version": 1,
        "venue": "binance",
        "symbol": "BTC/USDT",
        "ts_exchange": 1,
        "ts_ingest": 2,
        "depth": 3,
        "bids": [["100", "1"], ["99", "2"], ["98", "3"]],
        "asks": [["101", "1"], ["102", "2"], ["103", "3"]],
        "sequence": 5,
    }
    top2 = {**book, "depth": 2, "bids": book["bids"][:2], "asks": book["asks"][:2]}
    with fanout_server() as srv:

        async def subscribed(query: str, depth: int) -> ClientConnection:
            ws = await connect(srv.url + query, compression=None)
            await ws.recv()  # hello
            request = {"type": "subscribe", "channels": ["trades", "orderbook"], "depth": depth}
            await ws.send(orjson.dumps(request).decode())
            await ws.recv()  # subscribed
            await ws.recv()  # snapshot
            return ws

        async def until_pong(ws: ClientConnection) -> list[Any]:
            await ws.send('{"type":"ping"}')
            out: list[Any] = []
            while True:
                message = orjson.loads(await ws.recv())
                if isinstance(message, dict) and message["type"] == "pong":
                    await ws.close()
                    return out
                out.append(message)

        async def main() -> list[list[Any]]:
            sockets = [
                await subscribed("?arrays=1", 2),
                await subscribed("", 2),
                await subscribed("?arrays=1", 3),
            ]
            srv.publish([*trades, book])  # one dispatch
            return [await until_pong(ws) for ws in sockets]

        arrays, plain, full = asyncio.run(main())
    assert arrays == [[*trades, top2]]
    assert plain == [*trades, top2]
    assert full == [[*trades, book]]


def _book(sequence: int) -> dict[str, Any]:
    return {
        "type": "book",
        "schema_version": 1,
        "venue": "binance",
        "symbol": "BTC/USDT",
        "ts_exchange": sequence,
        "ts_ingest": sequence,
        "depth": 1,
        "bids": [["100", "1"]],
        "asks": [["101", str(sequence)]],
        "sequence": sequence,
    }


def test_replies_keep_their_place_among_the_dispatches_of_one_loop_iteration() -> None:
    """Dispatching only queues a group's data for the iteration's write pass; a pong,
    a new subscription's snapshot or an unsubscribe in between must still come after
    the data published before it and before (or instead of) the data after it."""
    books = [_book(n) for n in (1, 2, 3)]
    with fanout_server(heartbeat_s=3600) as srv:

        def one_iteration(hub: Hub) -> None:
            first, second = hub.clients.values()
            hub.ingest([books[0]])
            subscribe = '{"type":"subscribe","id":"b","channels":["orderbook"]}'
            hub.handle(second, parse_request(subscribe))
            hub.ingest([books[1]])
            hub.handle(first, parse_request('{"type":"ping","id":"p1"}'))
            hub.handle(first, parse_request('{"type":"unsubscribe"}'))
            hub.ingest([books[2]])
            hub.handle(second, parse_request('{"type":"ping","id":"p2"}'))

        async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            a, _ = await _open(srv.url)
            await _request(a, {"type": "subscribe", "id": "a", "channels": ["orderbook"]})
            await a.recv()  # its (empty) snapshot
            b, _ = await _open(srv.url)
            srv.call(one_iteration)
            got_a, got_b = await _until_pong(a, "end"), await _until_pong(b, "end")
            await a.close()
            await b.close()
            return got_a, got_b

        got_a, got_b = asyncio.run(main())
    assert [m["type"] for m in got_a] == ["book", "book", "pong", "unsubscribed"]
    assert [got_a[0], got_a[1]] == [books[0], books[1]]
    assert [got_a[2]["id"], got_a[3]["ids"]] == ["p1", ["a"]]
    assert [m["type"] for m in got_b] == ["subscribed", "snapshot", "book", "book", "pong"]
    assert got_b[1]["records"] == [books[0]]  # in the snapshot, so never sent live
    assert [got_b[2], got_b[3], got_b[4]["id"]] == [books[1], books[2], "p2"]
