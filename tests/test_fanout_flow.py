"""Replay -> dataflow -> fan-out server -> SDK clients with different filters.

Every client must receive exactly the records of the same run's JSONL output
that its filter matches (in order), raw subscribers exactly the recorder's
frames, and a late subscriber the latest state first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fanout_helpers import (
    Client,
    Record,
    as_dict,
    fanout_service,
    jsonl_records,
    recorded_frames,
    three_venue_config,
)

from candlewax.schema import CHANNEL_OF_TYPE, validate_record
from flows.runner import run_pipeline
from sinks.fanout.threaded import Fanout

SPECS: dict[str, dict[str, Any]] = {
    "default": {},
    "usdm_trades": {"channels": ["trades"], "exchanges": ["binance-usdm"]},
    "books5": {"channels": ["orderbook"], "symbols": ["ELON/USDT", "UNI/USD:UNI"], "depth": 5},
    "two_subs": {
        "subscriptions": [
            {"channels": ["bars"], "exchanges": ["okx"], "symbols": ["ZEN/USDT"]},
            {"channels": ["trades", "late"], "symbols": ["UNI/USD:UNI", "SUSHI/USDT:USDT"]},
        ]
    },
    "ops": {"channels": ["status", "late", "dead_letter"]},
    "raw_zen": {"channels": [], "exchanges": ["okx"], "symbols": ["ZEN/USDT"], "raw": True},
}


def _symbol(r: Record) -> str | None:
    return r["trade"]["symbol"] if r["type"] == "late" else r.get("symbol")


def _top(r: Record, depth: int) -> Record:
    if r["type"] != "book":
        return r
    return {
        **r,
        "depth": min(depth, r["depth"]),
        "bids": r["bids"][:depth],
        "asks": r["asks"][:depth],
    }


# Written independently of the server's routing code: what each client should get.
EXPECTED: dict[str, Callable[[Record], Record | None]] = {
    "default": lambda r: r if r["type"] in ("trade", "book", "bbo", "bar", "status") else None,
    "usdm_trades": lambda r: r if r["type"] == "trade" and r["venue"] == "binance-usdm" else None,
    "books5": lambda r: (
        _top(r, 5)
        if r["type"] in ("book", "bbo") and r["symbol"] in ("ELON/USDT", "UNI/USD:UNI")
        else None
    ),
    "two_subs": lambda r: (
        r
        if (r["type"] == "bar" and r["venue"] == "okx" and r["symbol"] == "ZEN/USDT")
        or (r["type"] in ("trade", "late") and _symbol(r) in ("UNI/USD:UNI", "SUSHI/USDT:USDT"))
        else None
    ),
    "ops": lambda r: r if r["type"] in ("status", "late", "dead_letter") else None,
    "raw_zen": lambda r: None,
}


def by_channel(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(CHANNEL_OF_TYPE[r["type"]], []).append(r)
    return out


@dataclass
class Run:
    server: Fanout
    clients: dict[str, Client]
    records: list[Record]
    out: Path


@pytest.fixture(scope="module", params=[0, 1], ids=["in-process", "server-process"])
def run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Run]:
    """The same run with the server as a thread of the flow's process and as a server
    process fed by it (``processes: 1``)."""
    out = tmp_path_factory.mktemp("fanout")
    with fanout_service(raw=True, processes=request.param) as server:
        cfg = three_venue_config(out, server.address[1], raw=True)

        async def main() -> dict[str, Client]:
            clients = {name: Client(server.url, **spec) for name, spec in SPECS.items()}
            for client in clients.values():
                await client.subscribed()  # before the flow starts: nothing is missed
            await asyncio.to_thread(run_pipeline, cfg)
            for client in clients.values():
                await client.barrier()
                await client.close()
            return clients

        clients = asyncio.run(main())
        yield Run(server, clients, jsonl_records(out / "jsonl"), out)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "raw_zen"])
def test_each_client_gets_exactly_what_its_filter_matches(run: Run, name: str) -> None:
    expected = [e for r in run.records if (e := EXPECTED[name](r)) is not None]
    got = run.clients[name].data()
    assert expected, "the replay must produce records for this filter"
    assert by_channel(got) == by_channel(expected)
    assert len(got) == len(expected)


def test_records_arrive_as_typed_schema_objects(run: Run) -> None:
    client = run.clients["default"]
    kinds = Counter(type(m).__name__ for m in client.messages)
    assert kinds["Trade"] and kinds["Book"] and kinds["BBO"] and kinds["Bar"] and kinds["Status"]
    assert kinds["Subscribed"] == 1 and kinds["Snapshot"] == 1 and kinds["Pong"] == 1
    for record in client.data()[:50]:
        validate_record(record)


def test_raw_subscriber_gets_the_venue_frames_as_received(run: Run) -> None:
    frames = recorded_frames(run.out / "recorder")[("okx", "ZEN_USDT")]
    got = run.clients["raw_zen"].of_kind("raw")
    assert frames
    assert [g["data"] for g in got] == [f["raw"] for f in frames]
    assert [(g["ts_ingest"], g["conn_id"]) for g in got] == [
        (f["ts_ingest"], f["conn_id"]) for f in frames
    ]
    assert {g["symbol"] for g in got} == {"ZEN/USDT"}
    assert not [m for m in run.clients["raw_zen"].data() if m["type"] != "raw"]


def _latest(records: list[Record], kind: str, **match: Any) -> Record:
    found = [r for r in records if r["type"] == kind and all(r[k] == v for k, v in match.items())]
    assert found, (kind, match)
    return found[-1]


def test_late_subscriber_gets_the_latest_state_first(run: Run) -> None:
    spec = {
        "channels": ["orderbook", "bars", "status"],
        "exchanges": ["okx"],
        "symbols": ["UNI/USD:UNI"],
        "depth": 3,
    }

    async def main() -> Client:
        client = Client(run.server.url, **spec)
        await client.subscribed()
        await client.close()
        return client

    client = asyncio.run(main())
    kinds = [type(m).__name__ for m in client.messages]
    assert kinds == ["Hello", "Subscribed", "Snapshot"]
    snapshot = [as_dict(r) for r in client.messages[2].records]  # type: ignore[union-attr]
    uni = {"venue": "okx", "symbol": "UNI/USD:UNI"}
    recs = [r for r in run.records if r["type"] != "late"]
    assert snapshot == [
        _latest(recs, "status", **uni),
        _top(_latest(recs, "book", **uni), 3),
        _latest(recs, "bbo", origin="book", **uni),
        _latest(recs, "bbo", origin="ticker", **uni),
        _latest(recs, "bar", interval="1s", **uni),
        _latest(recs, "bar", interval="1m", **uni),
    ]


def test_http_snapshot_status_metrics_health(run: Run) -> None:
    base = run.server.http_url
    snap = httpx.get(f"{base}/snapshot", params={"venue": "okx", "symbol": "ELON/USDT", "depth": 2})
    assert snap.status_code == 200
    (item,) = snap.json()["snapshots"]
    elon = {"venue": "okx", "symbol": "ELON/USDT"}
    assert item["book"] == _top(_latest(run.records, "book", **elon), 2)
    assert item["bars"] == {
        "1s": _latest(run.records, "bar", interval="1s", **elon),
        "1m": _latest(run.records, "bar", interval="1m", **elon),
    }
    every = httpx.get(f"{base}/snapshot", params={"venue": "binance-usdm"}).json()["snapshots"]
    assert {s["symbol"] for s in every} == {
        "AKRO/USDT:USDT",
        "CTK/USDT:USDT",
        "KEEP/USDT:USDT",
        "SUSHI/USDT:USDT",
    }
    assert (
        httpx.get(f"{base}/snapshot", params={"venue": "okx", "symbol": "X/Y"}).status_code == 404
    )
    assert httpx.get(f"{base}/snapshot", params={"depth": "-1"}).status_code == 400

    status = httpx.get(f"{base}/status").json()
    assert status["records"] == len(run.records)
    assert set(status) >= {
        "active_subscriptions",
        "messages_per_second",
        "uptime_s",
        "exchange_status",
        "clients",
    }
    okx = status["exchange_status"]["okx"]
    assert okx["checksum_failures"] == 1
    assert okx["records"] == sum(
        1 for r in run.records if (r.get("venue") or r.get("trade", {}).get("venue")) == "okx"
    )

    text = httpx.get(f"{base}/metrics").text
    for name in (
        "candlewax_ws_clients",
        "candlewax_ws_messages_sent_total",
        "candlewax_ws_dropped_total",
        "candlewax_ws_queued_messages",
        'candlewax_sink_records_total{sink="sink_2_websocket"}',
        'candlewax_frames_total{venue="okx"}',
        'candlewax_records_total{type="trade",venue="binance-usdm"}',
        'candlewax_status_events_total{event="checksum_mismatch",venue="okx"}',
    ):
        assert name in text
    assert httpx.get(f"{base}/healthz").text == "ok\n"
    assert httpx.get(f"{base}/nope").status_code == 404


@pytest.mark.parametrize("processes", [0, 1])
def test_several_workers_deliver_the_same_records(tmp_path: Path, processes: int) -> None:
    with fanout_service(processes=processes) as server:
        cfg = three_venue_config(tmp_path, server.address[1], workers=2)

        async def main() -> Client:
            client = Client(server.url, typed=False, channels=["trades", "orderbook", "bars"])
            await client.subscribed()
            await asyncio.to_thread(run_pipeline, cfg)
            await client.barrier()
            await client.close()
            return client

        client = asyncio.run(main())
    expected = [
        r for r in jsonl_records(tmp_path / "jsonl") if r["type"] in ("trade", "book", "bbo", "bar")
    ]
    key = orjson.dumps
    assert expected
    assert sorted(map(key, client.data())) == sorted(map(key, expected))
