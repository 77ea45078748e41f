"""Kafka sinks and the Kafka source against a real broker (scripts/services.sh)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from flow_helpers import BTC_SPOT, OKX_TBT, OKX_V5, outputs
from gated_source import GatedSource
from services import Message, Services, consume_all, delete_topics, topics, unique

from candlewax.cli import _parser
from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.config import PipelineConfig, parse_config
from candlewax.metrics import REGISTRY
from candlewax.replay_cmd import replay_config
from flows import inputs
from flows.pipeline import build_flow
from flows.runner import run_pipeline
from sinks.kafka import KafkaRawSink, KafkaRecordSink
from sinks.kafka_codec import encode_record
from sinks.kafka_topics import record_key
from sinks.message_ids import frame_id, record_id
from sources.frames import RawFrame
from sources.kafka_raw import frame_headers, frame_of, item_of
from sources.registry import make_parser
from sources.replay import read_capture

Record = dict[str, Any]
CHANNEL_TOPIC = {
    "trades": "norm.trades",
    "book": "norm.orderbook",
    "bars": "norm.bars",
    "status": "norm.status",
    "late": "norm.late",
    "dead_letter": "dlq",
}
CAPTURES = {"okx": OKX_TBT, "binance": BTC_SPOT}


def per_key(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by "venue:symbol", each group in its original order."""
    out: dict[str, list[Record]] = {}
    for record in records:
        out.setdefault(record_key(record), []).append(record)
    return out


def per_stream(records: Sequence[Record]) -> dict[tuple[str, ...], list[Record]]:
    """Records grouped by key and by the operator that made them, each in its order.

    Records of one key from different operators (ticker BBOs from normalize, book
    BBOs from the book) interleave as the engine's batches meet, which depends on
    how the input was batched; within one operator the order is fixed."""
    out: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        origin = str(record.get("origin") or record.get("event") or "")
        out.setdefault((record_key(record), record["type"], origin), []).append(record)
    return out


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": "kafka"}) or 0.0


def unique_by_id(messages: list[Message]) -> list[Message]:
    seen: set[bytes] = set()
    out = []
    for msg in messages:
        if msg.headers["msg_id"] not in seen:
            seen.add(msg.headers["msg_id"])
            out.append(msg)
    return out


def kafka_sink(svc: Services, prefix: str, **extra: Any) -> KafkaSinkConfig:
    return KafkaSinkConfig(type="kafka", brokers=[svc.kafka], topic_prefix=prefix, **extra)


# ---- stage 1: `candlewax replay --kafka` over a real capture ----


@dataclass
class Stage1:
    venue: str
    prefix: str
    jsonl: dict[str, list[Record]]
    frames: list[RawFrame]


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def stage1(
    request: pytest.FixtureRequest, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage1]:
    venue = request.param
    prefix = unique(venue)
    out = tmp_path_factory.mktemp(f"stage1-{venue}")
    argv = ["replay", str(CAPTURES[venue]), "--venue", venue, "--out", str(out)]
    args = _parser().parse_args([*argv, "--intervals", "1s,1m", "--kafka", services.kafka])
    with pytest.MonkeyPatch.context() as env:  # the CLI's sink, on this test's topics
        env.setenv("CANDLEWAX__SINKS__1__TOPIC_PREFIX", prefix)
        cfg = replay_config(args)
    run_pipeline(cfg)
    yield Stage1(venue, prefix, outputs(out), list(read_capture(CAPTURES[venue], venue)))
    delete_topics(services.kafka, prefix)


def test_every_normalized_topic_equals_the_jsonl_output(services: Services, stage1: Stage1) -> None:
    for channel, suffix in CHANNEL_TOPIC.items():
        messages = consume_all(services.kafka, f"{stage1.prefix}.{suffix}")
        records = [m.json() for m in messages]
        # Same records, and each symbol in the same order (one key, one partition).
        assert per_key(records) == per_key(stage1.jsonl[channel]), channel
        for msg, record in zip(messages, records, strict=True):
            assert msg.key == record_key(record)
            assert record["schema_version"] == 1
            assert msg.headers["msg_id"].decode() == record_id(msg.key, record, msg.value)
        assert len({m.headers["msg_id"] for m in messages}) == len(messages), channel
    assert all(stage1.jsonl[c] for c in ("trades", "book", "bars"))


def test_topics_are_created_with_the_configured_partitions(
    services: Services, stage1: Stage1
) -> None:
    found = topics(services.kafka, stage1.prefix)
    expected = {f"{stage1.prefix}.{t}" for t in CHANNEL_TOPIC.values()} | {
        f"{stage1.prefix}.norm.liquidations",
        f"{stage1.prefix}.norm.oi_funding",
        f"{stage1.prefix}.raw.{stage1.venue}",
    }
    assert set(found) == expected
    assert set(found.values()) == {3}


def test_raw_topic_holds_every_frame_exactly_as_received(
    services: Services, stage1: Stage1
) -> None:
    messages = consume_all(services.kafka, f"{stage1.prefix}.raw.{stage1.venue}")
    frames = [frame_of(stage1.venue, m.value, list(m.headers.items())) for m in messages]
    assert sorted(frames) == sorted(stage1.frames)
    assert [m.headers["msg_id"].decode() for m in messages] == [frame_id(f) for f in frames]
    if stage1.venue == "binance":  # the REST snapshot keeps its hint, so books match below
        assert any(f.hint is not None for f in frames)


def test_stage2_from_the_raw_topic_gives_the_direct_run_outputs(
    services: Services, stage1: Stage1, tmp_path: Path
) -> None:
    cfg = stage2_config(services, stage1.venue, stage1.prefix, tmp_path, tail=False)
    run_pipeline(cfg)
    again = outputs(tmp_path)
    for channel, records in stage1.jsonl.items():
        assert per_stream(again[channel]) == per_stream(records), channel


def stage2_config(
    svc: Services, venue: str, prefix: str, out: Path, *, tail: bool, recovery: Path | None = None
) -> PipelineConfig:
    data: dict[str, Any] = {
        "sources": [
            {
                "venue": venue,
                "mode": "kafka",
                "kafka": {"brokers": [svc.kafka], "topic_prefix": prefix, "tail": tail},
            }
        ],
        "operators": {"ohlcv": {"intervals": ["1s", "1m"]}},
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    if recovery is not None:
        data["recovery"] = {"dir": str(recovery)}
    return parse_config(data)


# ---- stage 2 offsets: what recovery gives ----


def test_stage2_resumes_from_its_offsets_with_recovery_and_rereads_without(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("recovery")
    parser = make_parser("okx", [])
    frames = [(f, parser.symbol_of(f)) for f in read_capture(OKX_V5, "okx")]
    sink = KafkaRawSink(kafka_sink(services, prefix), ["okx"])
    half = len(frames) // 2
    try:
        sink.write_batch(frames[:half])
        sink.checkpoint()
        store = tmp_path / "recovery"
        first = run_stage2(services, prefix, tmp_path / "a", store)
        sink.write_batch(frames[half:])
        sink.close()
        second = run_stage2(services, prefix, tmp_path / "b", store)
        everything = run_stage2(services, prefix, tmp_path / "c", None)
    finally:
        delete_topics(services.kafka, prefix)
    # With recovery the second run starts at the stored offsets: only the new frames.
    ids = [t["trade_id"] for t in first["trades"] + second["trades"]]
    assert first["trades"] and second["trades"]
    assert sorted(ids) == sorted(t["trade_id"] for t in everything["trades"])
    assert len(set(ids)) == len(ids)
    # Without recovery a run starts at the beginning of the topic again.
    assert len(everything["trades"]) == 74  # every OKX trade of the capture


def run_stage2(
    svc: Services, prefix: str, out: Path, store: Path | None
) -> dict[str, list[Record]]:
    run_pipeline(stage2_config(svc, "okx", prefix, out, tail=False, recovery=store))
    return outputs(out)


def test_a_stop_signal_ends_a_tailing_stage2_run_and_flushes_it(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("stop")
    parser = make_parser("okx", [])
    sink = KafkaRawSink(kafka_sink(services, prefix), ["okx"])
    sink.write_batch([(f, parser.symbol_of(f)) for f in read_capture(OKX_V5, "okx")])
    sink.close()
    cfg = stage2_config(services, "okx", prefix, tmp_path / "tail", tail=True)
    # A daemon thread: without the fix it tails forever and must not hold pytest open.
    run = threading.Thread(target=run_pipeline, args=(cfg,), daemon=True)
    trades = tmp_path / "tail" / "trades.jsonl"
    try:
        run.start()
        deadline = time.monotonic() + 120
        while run.is_alive() and time.monotonic() < deadline:
            if trades.exists() and trades.read_bytes().count(b"\n") >= 74:
                break  # every trade of the topic went through: only the tail is left
            time.sleep(0.05)
        assert run.is_alive(), "a tailing run must not end by itself"
        inputs.STOP.set()  # what the runner's Ctrl-C / SIGTERM handler does
        run.join(60)
        stopped = not run.is_alive()
        finite = run_stage2(services, prefix, tmp_path / "finite", None)
    finally:
        inputs.STOP.clear()
        delete_topics(services.kafka, prefix)
    assert stopped, "STOP must end a tailing kafka-mode run"
    # Flushed like a run that reached the end of its topic: open bars included.
    tailed = outputs(tmp_path / "tail")
    assert tailed["bars"]
    for channel, records in finite.items():
        assert per_stream(tailed[channel]) == per_stream(records), channel


# ---- a broker restart in the middle of a run ----


def test_a_broker_restart_mid_run_loses_nothing(services: Services, tmp_path: Path) -> None:
    prefix = unique("restart")
    frames = list(read_capture(BTC_SPOT, "binance"))[:12_000]
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)}],
            "operators": {"ohlcv": {"intervals": ["1s"]}},
            "sinks": [
                {"type": "jsonl", "path": str(tmp_path)},
                {
                    "type": "kafka",
                    "brokers": [services.kafka],
                    "topic_prefix": prefix,
                    "producer": {"reconnect.backoff.max.ms": 500},
                },
            ],
        }
    )
    at_third, down = threading.Event(), threading.Event()
    at_end, up = threading.Event(), threading.Event()
    gates = {4000: (at_third, down), 8000: (at_end, up)}

    seen_down: list[bool] = []

    def restart_broker() -> None:
        at_third.wait(120)
        services.run("stop", "kafka")
        seen_down.append(not services.up())
        down.set()  # frames 4000-8000 are produced while the broker is away
        at_end.wait(15)
        services.run("start", "kafka")
        up.set()

    operator = threading.Thread(target=restart_broker)
    operator.start()
    try:
        run_main(build_flow(cfg, GatedSource(frames, gates)))  # type: ignore[no-untyped-call]
    finally:
        down.set()
        up.set()
        operator.join()
    assert seen_down == [True]
    try:
        jsonl = outputs(tmp_path)
        for channel in ("trades", "book", "bars"):
            messages = unique_by_id(
                consume_all(services.kafka, f"{prefix}.{CHANNEL_TOPIC[channel]}")
            )
            assert per_key([m.json() for m in messages]) == per_key(jsonl[channel]), channel
        raw = unique_by_id(consume_all(services.kafka, f"{prefix}.raw.binance"))
        assert len(raw) == len(frames)
    finally:
        delete_topics(services.kafka, prefix)


# ---- dead letters, full queues, delivery errors, duplicates ----


def test_malformed_frames_arrive_in_the_dlq_with_their_reason(
    services: Services, tmp_path: Path
) -> None:
    lines = gzip.decompress(BTC_SPOT.read_bytes()).splitlines()[:400]
    bad_frame = b'1723161254300000000 {"stream":"btcusdt@trade","data":{"e":"trade","p":"1"'
    lines[50:50] = [bad_frame, b"garbage without a timestamp"]
    capture = tmp_path / "broken.txt.gz"
    capture.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    prefix = unique("dlq")
    args = _parser().parse_args(
        ["replay", str(capture), "--venue", "binance", "--out", str(tmp_path / "out")]
    )
    args.kafka = services.kafka
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CANDLEWAX__SINKS__1__TOPIC_PREFIX", prefix)
        cfg = replay_config(args)
    try:
        run_pipeline(cfg)
        dead = consume_all(services.kafka, f"{prefix}.dlq")
    finally:
        delete_topics(services.kafka, prefix)
    letters = [m.json() for m in dead]
    assert {d["raw"] for d in letters} == {
        bad_frame.split(b" ", 1)[1].decode(),
        "garbage without a timestamp",
    }
    for msg, letter in zip(dead, letters, strict=True):
        assert letter["type"] == "dead_letter" and letter["reason"]
        assert msg.headers["reason"].decode() == letter["reason"]
        assert msg.key == "binance:"


def real_trades(limit: int) -> list[Record]:
    parser = make_parser("binance", ["BTC/USDT"])
    trades = []
    for frame in read_capture(BTC_SPOT, "binance"):
        for item in parser.parse(frame):
            if isinstance(item, dict) and item["type"] == "trade":
                trades.append(item)
                if len(trades) == limit:
                    return trades
    return trades


def test_a_full_producer_queue_waits_instead_of_crashing(services: Services) -> None:
    prefix = unique("queue")
    trades = real_trades(3000)
    sink = KafkaRecordSink(
        kafka_sink(services, prefix, producer={"queue.buffering.max.messages": 20, "linger.ms": 0}),
        ["binance"],
    )
    try:
        for i in range(0, len(trades), 500):
            sink.write_batch(trades[i : i + 500])
        sink.close()
        delivered = consume_all(services.kafka, f"{prefix}.norm.trades")
    finally:
        delete_topics(services.kafka, prefix)
    assert sink.producer.stats.queue_full > 0  # bytewax issue #522: BufferError, handled
    assert sink.producer.stats.dropped == 0
    assert [m.json() for m in delivered] == trades


def test_delivery_errors_are_counted_and_reported_as_status(services: Services) -> None:
    prefix = unique("errors")
    admin = AdminClient({"bootstrap.servers": services.kafka})
    tiny = NewTopic(f"{prefix}.norm.trades", 1, 1, config={"max.message.bytes": "100"})
    admin.create_topics([tiny])[tiny.topic].result()
    trades = real_trades(50)
    errors, drops = counter("candlewax_sink_errors_total"), counter("candlewax_sink_dropped_total")
    sink = KafkaRecordSink(kafka_sink(services, prefix), ["binance"])
    try:
        sink.write_batch(trades)
        sink.close()  # returns: every message is acknowledged or dropped and counted
        status = [m.json() for m in consume_all(services.kafka, f"{prefix}.norm.status")]
    finally:
        delete_topics(services.kafka, prefix)
    assert sink.producer.stats.dropped == sink.producer.stats.delivery_errors == len(trades)
    assert counter("candlewax_sink_errors_total") - errors == len(trades)
    assert counter("candlewax_sink_dropped_total") - drops == len(trades)
    assert status, "delivery errors must be reported on the status topic"
    assert status[0]["event"] == "error" and status[0]["symbol"] == "BTC/USDT"
    assert "MSG_SIZE_TOO_LARGE" in status[0]["detail"]
    assert f"{prefix}.norm.trades" in status[0]["detail"]


def test_messages_refused_after_a_fatal_error_are_resent_by_a_new_producer(
    services: Services,
) -> None:
    # librdkafka's test fatal error (rd_kafka_test_fatal_error) is not exposed to Python:
    # this is the exception every produce() raises once the producer is fatally broken.
    fatal = KafkaException(KafkaError(KafkaError._FATAL, "test fatal error", fatal=True))
    prefix = unique("fatal")
    topic = f"{prefix}.norm.trades"
    trades = real_trades(40)
    sink = KafkaRecordSink(kafka_sink(services, prefix), ["binance"])
    try:
        sink.write_batch(trades[:10])
        sink.checkpoint()
        _, in_flight = sink.producer.hot_produce()
        for trade in trades[10:]:
            key, value, headers = encode_record(trade)
            in_flight.messages.append((topic, value, key, tuple(headers)))
            sink.producer.produce_failed(in_flight, fatal)
        sink.producer.after_batch(len(trades) - 10)
        sink.close()
        delivered = consume_all(services.kafka, topic)
    finally:
        delete_topics(services.kafka, prefix)
    stats = sink.producer.stats
    assert (stats.dropped, stats.producers, stats.retried) == (0, 2, len(trades) - 10)
    assert [m.json() for m in delivered] == trades


def test_records_without_a_known_type_go_to_the_dlq_and_the_rest_once(
    services: Services,
) -> None:
    prefix = unique("untyped")
    trades = real_trades(3)
    untyped = {k: v for k, v in trades[1].items() if k != "type"}
    unknown = {**trades[1], "type": "funding"}
    sink = KafkaRecordSink(kafka_sink(services, prefix), ["binance"])
    try:
        sink.write_batch([trades[0], untyped, trades[1], unknown, trades[2]])
        sink.close()
        delivered = consume_all(services.kafka, f"{prefix}.norm.trades")
        dead = consume_all(services.kafka, f"{prefix}.dlq")
    finally:
        delete_topics(services.kafka, prefix)
    assert [m.json() for m in delivered] == trades  # nothing lost, nothing sent twice
    assert sink.dead_letters == 2
    letters = [m.json() for m in dead]
    assert [d["raw"] for d in letters] == [repr(untyped), repr(unknown)]
    assert "no known 'type' (None)" in letters[0]["reason"]
    assert "no known 'type' ('funding')" in letters[1]["reason"]
    assert letters[0]["ts_ingest"] == trades[1]["ts_ingest"]


def test_a_replayed_run_repeats_ids_so_consumers_can_drop_duplicates(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("dupes")
    args = _parser().parse_args(
        ["replay", str(OKX_V5), "--venue", "okx", "--out", str(tmp_path), "--kafka", services.kafka]
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CANDLEWAX__SINKS__1__TOPIC_PREFIX", prefix)
        cfg = replay_config(args)
    try:
        run_pipeline(cfg)
        run_pipeline(cfg)  # as if recovery replayed the whole run: at-least-once
        trades = consume_all(services.kafka, f"{prefix}.norm.trades")
    finally:
        delete_topics(services.kafka, prefix)
    once = outputs(tmp_path)["trades"]
    assert len(trades) == 2 * len(once)
    assert per_key([m.json() for m in unique_by_id(trades)]) == per_key(once)


# ---- the raw message codec (no broker) ----


def test_raw_messages_round_trip_and_bad_ones_become_dead_letters() -> None:
    frame = RawFrame(
        "binance", "0-binance-1", 1723161254300123, '{"x":1}', "depth_snapshot:BTCUSDT"
    )
    headers = [
        (k, v if isinstance(v, bytes) else str(v).encode())
        for k, v in frame_headers(frame, frame_id(frame))
    ]
    assert frame_of("binance", frame.text.encode(), headers) == frame
    assert item_of("binance", frame.text.encode(), headers) == frame
    missing_ts = [h for h in headers if h[0] != "ts_ingest"]
    letter = item_of("binance", b"\xff\xfe", missing_ts)
    assert isinstance(letter, dict) and letter["type"] == "dead_letter"
    assert "ts_ingest" in letter["reason"]
    assert isinstance(item_of("binance", b"\xff", headers), dict)  # not UTF-8


def test_a_frame_that_is_not_utf8_goes_to_the_dlq_not_the_raw_topic(services: Services) -> None:
    prefix = unique("surrogate")
    good = RawFrame("binance", "c-1", 1723161254300000, '{"ok":1}')
    bad = RawFrame("binance", "c-1", 1723161254300001, '{"bad":"\ud800"}')
    sink = KafkaRawSink(kafka_sink(services, prefix), ["binance"])
    try:
        sink.write_batch([(good, None), (bad, None)])
        sink.close()
        raw = consume_all(services.kafka, f"{prefix}.raw.binance")
        dead = [m.json() for m in consume_all(services.kafka, f"{prefix}.dlq")]
    finally:
        delete_topics(services.kafka, prefix)
    assert [frame_of("binance", m.value, list(m.headers.items())) for m in raw] == [good]
    assert len(dead) == 1 and "not UTF-8" in dead[0]["reason"]
    assert dead[0]["ts_ingest"] == bad.ts_ingest
