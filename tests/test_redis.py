"""The Redis sink against a real redis-server (scripts/services.sh)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from bytewax.testing import run_main
from flow_helpers import BTC_SPOT, OKX_TBT, outputs
from gated_source import GatedSource
from services import Services, unique

from candlewax.cli import _parser
from candlewax.config import RedisSink as RedisSinkConfig
from candlewax.config import parse_config
from candlewax.metrics import REGISTRY
from candlewax.replay_cmd import replay_config
from flows.pipeline import build_flow
from flows.runner import run_pipeline
from sinks.kafka_topics import record_key
from sinks.message_ids import record_id
from sinks.redis import RedisSink
from sources.registry import make_parser
from sources.replay import read_capture

Record = dict[str, Any]
CHANNELS = ("trades", "book", "bars", "status", "late", "dead_letter")


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": "redis"}) or 0.0


def where(record: Record) -> str:
    key = record_key(record)
    return key[:-1] if key.endswith(":") else key  # "venue" alone without a symbol


def per_where(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for record in records:
        out.setdefault(where(record), []).append(record)
    return out


def stream_records(client: redis.Redis, key: str) -> list[tuple[bytes, Record]]:
    return [
        (fields[b"id"], orjson.loads(fields[b"data"]))
        for _, fields in client.xrange(key)  # type: ignore[union-attr]
    ]


def drop_keys(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)


@dataclass
class RedisRun:
    prefix: str
    jsonl: dict[str, list[Record]]
    client: redis.Redis
    published: list[tuple[str, Record]]


@pytest.fixture(scope="module")
def run(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisRun]:
    """`candlewax replay --redis` over the 10-instrument OKX capture, with a pub/sub
    subscriber listening from before the first record."""
    prefix = unique("redis")
    client = redis.Redis.from_url(services.redis_url)
    subscriber = client.pubsub()
    subscriber.psubscribe(f"{prefix}:*")
    assert subscriber.get_message(timeout=10)["type"] == "psubscribe"  # type: ignore[index]
    published: list[tuple[str, Record]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            msg = subscriber.get_message(timeout=0.1)
            if msg is not None and msg["type"] == "pmessage":
                published.append((msg["channel"].decode(), orjson.loads(msg["data"])))

    listener = threading.Thread(target=listen)
    listener.start()
    out = tmp_path_factory.mktemp("redis-run")
    argv = ["replay", str(OKX_TBT), "--venue", "okx", "--out", str(out), "--intervals", "1s,1m"]
    args = _parser().parse_args([*argv, "--redis", services.redis_url])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CANDLEWAX__SINKS__1__KEY_PREFIX", prefix)
        cfg = replay_config(args)
    try:
        run_pipeline(cfg)
        jsonl = outputs(out)
        total = sum(len(records) for records in jsonl.values())
        deadline = time.monotonic() + 30
        while len(published) < total and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        listener.join()
        subscriber.close()
    yield RedisRun(prefix, jsonl, client, published)
    drop_keys(client, prefix)


def test_latest_state_holds_the_newest_trade_bbo_book_and_bars(run: RedisRun) -> None:
    symbols = {r["symbol"] for r in run.jsonl["trades"] + run.jsonl["book"]}
    assert len(symbols) == 10
    for symbol in symbols:
        key = f"{run.prefix}:latest:okx:{symbol}"
        state = {k.decode(): orjson.loads(v) for k, v in run.client.hgetall(key).items()}  # type: ignore[union-attr]
        expected: dict[str, Record] = {}
        for record in run.jsonl["trades"] + run.jsonl["book"] + run.jsonl["bars"]:
            if record["symbol"] == symbol:
                field = f"bar:{record['interval']}" if record["type"] == "bar" else record["type"]
                expected[field] = record  # JSONL order = sink order: the last one wins
        assert state == expected, symbol
        assert 0 < run.client.ttl(key) <= 86_400  # type: ignore[operator]


def test_streams_hold_every_record_per_channel_and_symbol(run: RedisRun) -> None:
    for channel in CHANNELS:
        for place, records in per_where(run.jsonl[channel]).items():
            entries = stream_records(run.client, f"{run.prefix}:{channel}:{place}")
            assert [record for _, record in entries] == records, (channel, place)
            for msg_id, record in entries:
                value = orjson.dumps(record)
                assert msg_id.decode() == record_id(record_key(record), record, value)
    assert run.jsonl["trades"] and run.jsonl["bars"] and run.jsonl["book"]


def test_streams_are_readable_with_consumer_groups(run: RedisRun) -> None:
    symbol = run.jsonl["trades"][0]["symbol"]
    stream = f"{run.prefix}:trades:okx:{symbol}"
    run.client.xgroup_create(stream, "analytics", id="0")
    got = run.client.xreadgroup("analytics", "worker-1", {stream: ">"}, count=10_000)
    entries = got[0][1]  # type: ignore[index]
    trades = [orjson.loads(fields[b"data"]) for _, fields in entries]
    assert trades == [t for t in run.jsonl["trades"] if t["symbol"] == symbol]
    run.client.xack(stream, "analytics", *[entry_id for entry_id, _ in entries])
    pending = run.client.xpending(stream, "analytics")
    assert pending["pending"] == 0  # type: ignore[index]


def test_pubsub_fans_out_every_record_on_its_symbol_channel(run: RedisRun) -> None:
    received: dict[str, list[Record]] = {}
    for channel, record in run.published:
        received.setdefault(channel, []).append(record)
    expected: dict[str, list[Record]] = {}
    for channel in CHANNELS:
        for place, records in per_where(run.jsonl[channel]).items():
            expected[f"{run.prefix}:{place}:{channel}"] = records
    assert received == expected


def test_a_redis_restart_mid_run_neither_stops_the_flow_nor_loses_records(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("restart")
    frames = list(read_capture(BTC_SPOT, "binance"))[:9000]
    sink = {"type": "redis", "url": services.redis_url, "key_prefix": prefix}
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)}],
            "operators": {"ohlcv": {"intervals": ["1s"]}},
            "sinks": [
                {"type": "jsonl", "path": str(tmp_path)},
                {**sink, "timeout_s": 1.0, "retry_max_s": 0.2},
            ],
        }
    )
    at_third, down, at_end, up = (threading.Event() for _ in range(4))
    seen_down: list[bool] = []
    reached_end_while_down: list[bool] = []

    def restart_redis() -> None:
        at_third.wait(120)
        services.run("stop", "redis")
        seen_down.append(not services.up())
        down.set()
        # The flow reaches frame 6000 with Redis still away: the sink never blocked it.
        reached_end_while_down.append(at_end.wait(60))
        services.run("start", "redis")
        up.set()

    errors, drops = counter("candlewax_sink_errors_total"), counter("candlewax_sink_dropped_total")
    operator = threading.Thread(target=restart_redis)
    operator.start()
    try:
        run_main(build_flow(cfg, GatedSource(frames, {3000: (at_third, down), 6000: (at_end, up)})))  # type: ignore[no-untyped-call]
    finally:
        down.set()
        up.set()
        operator.join()
    assert seen_down == [True]
    assert reached_end_while_down == [True]
    assert counter("candlewax_sink_errors_total") > errors  # the outage was seen and counted
    assert counter("candlewax_sink_dropped_total") == drops  # and nothing was dropped
    client = redis.Redis.from_url(services.redis_url)
    try:
        jsonl = outputs(tmp_path)
        for channel in ("trades", "book", "bars"):
            for place, records in per_where(jsonl[channel]).items():
                entries = stream_records(client, f"{prefix}:{channel}:{place}")
                seen: set[bytes] = set()
                unique_records = []
                for msg_id, record in entries:  # a batch cut by the outage may repeat
                    if msg_id not in seen:
                        seen.add(msg_id)
                        unique_records.append(record)
                assert unique_records == records, (channel, place)
    finally:
        drop_keys(client, prefix)


def test_with_redis_gone_the_sink_buffers_a_bounded_backlog_and_counts_drops() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = RedisSinkConfig(
        type="redis", url=f"redis://127.0.0.1:{port}/0", buffer_max=100, timeout_s=0.5
    )
    records = real_records(30)
    assert len(records) == 30
    drops = counter("candlewax_sink_dropped_total")
    sink = RedisSink(cfg)
    for _ in range(10):
        sink.write_batch(records)  # returns: the records wait in the backlog
    assert sink.stats.backlog == 100
    assert sink.stats.dropped == 200
    sink.close(timeout_s=0.2)
    assert sink.stats.dropped == 300 and sink.stats.backlog == 0
    assert counter("candlewax_sink_dropped_total") - drops == 300
    assert sink.stats.outages == 1


def real_records(limit: int) -> list[Record]:
    parser = make_parser("okx", [])
    out: list[Record] = []
    for frame in read_capture(OKX_TBT, "okx"):
        out.extend(item for item in parser.parse(frame) if isinstance(item, dict))
        if len(out) >= limit:
            break
    return out[:limit]
