"""Kafka away longer than ``message.timeout.ms``, and Kafka away at start (real broker)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main
from flow_helpers import BTC_SPOT, outputs
from gated_source import GatedSource
from services import Message, Services, consume_all, delete_topics, unique

from candlewax.config import PipelineConfig, parse_config
from candlewax.metrics import REGISTRY
from flows.pipeline import build_flow
from flows.runner import run_pipeline
from sinks.kafka_producer import ReliableProducer
from sources.frames import RawFrame
from sources.kafka_raw import frame_of
from sources.replay import read_capture

Record = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 3000  # message.timeout.ms of the outage test: the outage lasts several times it


def delivery_errors() -> float:
    return REGISTRY.get_sample_value("candlewax_sink_errors_total", {"sink": "kafka"}) or 0.0


def by_msg_id(messages: list[Message]) -> list[Message]:
    """What a consumer dropping repeats by ``msg_id`` keeps (docs/kafka_redis.md)."""
    seen: set[bytes] = set()
    out = []
    for msg in messages:
        if msg.headers["msg_id"] not in seen:
            seen.add(msg.headers["msg_id"])
            out.append(msg)
    return out


def outage_config(services: Services, tmp_path: Path, prefix: str) -> PipelineConfig:
    """Replay of BTC_SPOT to JSONL (the direct run) and to Kafka with a short timeout."""
    producer = {"message.timeout.ms": TIMEOUT_MS, "reconnect.backoff.max.ms": 500}
    return parse_config(
        {
            "sources": [{"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)}],
            "operators": {"ohlcv": {"intervals": ["1s"]}},
            "sinks": [
                {"type": "jsonl", "path": str(tmp_path / "direct")},
                {
                    "type": "kafka",
                    "brokers": [services.kafka],
                    "topic_prefix": prefix,
                    "producer": producer,
                },
            ],
        }
    )


def run_stage2(services: Services, prefix: str, out: Path) -> dict[str, list[Record]]:
    """Stage 2 over the run's raw topic (read once, not tailed): its outputs by channel."""
    stage2 = parse_config(
        {
            "sources": [
                {
                    "venue": "binance",
                    "mode": "kafka",
                    "kafka": {"brokers": [services.kafka], "topic_prefix": prefix, "tail": False},
                }
            ],
            "operators": {"ohlcv": {"intervals": ["1s"]}},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        }
    )
    run_pipeline(stage2)
    return outputs(out)


def test_an_outage_longer_than_the_message_timeout_loses_no_message_nor_header(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("outage")
    frames = list(read_capture(BTC_SPOT, "binance"))[:12_000]
    cfg = outage_config(services, tmp_path, prefix)
    at_stop, down = threading.Event(), threading.Event()
    at_end, up = threading.Event(), threading.Event()
    gates = {4000: (at_stop, down), 8000: (at_end, up)}
    errors_before = delivery_errors()
    seen: dict[str, Any] = {}

    def outage() -> None:
        at_stop.wait(120)
        services.run("stop", "kafka")
        seen["down"] = not services.up()
        stopped = time.monotonic()
        down.set()  # frames 4000-8000 are produced while the broker is away
        at_end.wait(120)
        # Away until messages have timed out (delivery errors reported) and then some.
        deadline = time.monotonic() + 120
        while delivery_errors() == errors_before and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2 * TIMEOUT_MS / 1000)
        seen["outage_s"] = time.monotonic() - stopped
        services.run("start", "kafka")
        up.set()

    operator = threading.Thread(target=outage)
    operator.start()
    try:
        run_main(build_flow(cfg, GatedSource(frames, gates)))  # type: ignore[no-untyped-call]
    finally:
        down.set()
        up.set()
        operator.join()
    assert seen["down"] is True
    assert seen["outage_s"] > 2 * TIMEOUT_MS / 1000
    assert delivery_errors() > errors_before, "no message timed out: the test proves nothing"
    try:
        direct = outputs(tmp_path / "direct")
        raw = consume_all(services.kafka, f"{prefix}.raw.binance")
        # Every raw message is a whole frame: value and every header, resent or not.
        assert all({"msg_id", "ts_ingest", "conn_id"} <= set(m.headers) for m in raw)
        kept = by_msg_id(raw)
        assert sorted(
            frame_of("binance", m.value, list(m.headers.items())) for m in kept
        ) == sorted(frames)
        for channel, suffix in (("trades", "trades"), ("book", "orderbook"), ("bars", "bars")):
            messages = consume_all(services.kafka, f"{prefix}.norm.{suffix}")
            assert all("msg_id" in m.headers for m in messages), channel
            records = [m.json() for m in by_msg_id(messages)]
            assert sorted(map(repr, records)) == sorted(map(repr, direct[channel])), channel
        # Stage 2 over the raw topic: every frame is a frame again (no dead letter) and
        # every trade comes out once (order and bars: the test below).
        again = run_stage2(services, prefix, tmp_path / "stage2")
        assert again["dead_letter"] == direct["dead_letter"] == []
        assert sorted(map(repr, again["trades"])) == sorted(map(repr, direct["trades"]))
    finally:
        delete_topics(services.kafka, prefix)


# ---- per-key order across a resend ----


class _TricklePartition(StatefulSourcePartition[RawFrame, int]):
    def __init__(self, source: TrickleSource) -> None:
        self.s = source
        self.pos = 0
        self.awake: datetime | None = None

    def next_batch(self) -> list[RawFrame]:
        s = self.s
        if self.pos >= len(s.frames):
            raise StopIteration
        if s.up.is_set():
            size = 128
        elif self.pos < s.stop_at:
            size = min(128, s.stop_at - self.pos)
        else:
            s.at_stop.set()
            self.awake = datetime.now(UTC) + timedelta(milliseconds=50)
            if not s.down.is_set() or self.pos >= s.pause_at:
                return []  # waiting without blocking the worker (the sink keeps polling)
            size = 8  # a few frames every 50 ms for as long as the broker is away
        batch = s.frames[self.pos : self.pos + size]
        self.pos += len(batch)
        return batch

    def next_awake(self) -> datetime | None:
        return None if self.s.up.is_set() else self.awake

    def snapshot(self) -> int:
        return self.pos


class TrickleSource(FixedPartitionedSource[RawFrame, int]):
    """Frames at full speed up to ``stop_at``; then, once the broker is down, a few
    every 50 ms until it is up again (at most up to ``pause_at``); then the rest."""

    def __init__(self, frames: list[RawFrame], stop_at: int, pause_at: int) -> None:
        self.frames, self.stop_at, self.pause_at = frames, stop_at, pause_at
        self.at_stop, self.down, self.up = threading.Event(), threading.Event(), threading.Event()

    def list_parts(self) -> list[str]:
        return ["trickle"]

    def build_part(self, step_id: str, for_part: str, resume: int | None) -> _TricklePartition:
        return _TricklePartition(self)


def per_key(messages: list[Message]) -> dict[str, list[Message]]:
    """Messages by key, each key's in offset order (one key, one partition)."""
    out: dict[str, list[Message]] = defaultdict(list)
    for msg in sorted(messages, key=lambda m: (m.partition, m.offset)):
        out[msg.key].append(msg)
    return out


def test_an_outage_longer_than_the_message_timeout_keeps_every_key_in_produce_order(
    services: Services, tmp_path: Path
) -> None:
    # Messages keep being produced while the broker is away, so messages time out (and
    # are produced again) while newer messages of their key are still queued: before the
    # sink held and purged its queue on a failure, the resent ones went behind those.
    prefix = unique("order")
    frames = list(read_capture(BTC_SPOT, "binance"))[:12_000]
    cfg = outage_config(services, tmp_path, prefix)
    source = TrickleSource(frames, stop_at=3000, pause_at=10_000)
    errors_before = delivery_errors()
    seen: dict[str, Any] = {}

    def outage() -> None:
        source.at_stop.wait(120)
        services.run("stop", "kafka")
        seen["down"] = not services.up()
        source.down.set()
        deadline = time.monotonic() + 120
        while delivery_errors() == errors_before and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2 * TIMEOUT_MS / 1000)  # several rounds of timeouts and resends
        services.run("start", "kafka")
        source.up.set()

    operator = threading.Thread(target=outage)
    operator.start()
    try:
        # No epoch end (no checkpoint wait) during the outage: the flow keeps producing.
        run_main(build_flow(cfg, source), epoch_interval=timedelta(seconds=600))  # type: ignore[no-untyped-call]
    finally:
        source.down.set()
        source.up.set()
        operator.join()
    assert seen["down"] is True
    assert delivery_errors() > errors_before, "no message timed out: the test proves nothing"
    try:
        direct = outputs(tmp_path / "direct")
        position = {frame: i for i, frame in enumerate(frames)}
        raw = consume_all(services.kafka, f"{prefix}.raw.binance")
        kept = by_msg_id(raw)
        assert sorted(
            frame_of("binance", m.value, list(m.headers.items())) for m in kept
        ) == sorted(frames)
        for key, messages in per_key(raw).items():
            order = [
                position[frame_of("binance", m.value, list(m.headers.items()))]
                for m in by_msg_id(messages)
            ]
            moved = sum(1 for a, b in pairwise(order) if a > b)
            assert moved == 0, f"raw {key}: {moved} frame(s) behind a newer one"
        direct_trades: dict[str, list[Record]] = defaultdict(list)
        for trade in direct["trades"]:
            direct_trades[f"{trade['venue']}:{trade['symbol']}"].append(trade)
        trades = per_key(consume_all(services.kafka, f"{prefix}.norm.trades"))
        assert set(trades) == set(direct_trades)
        for key, messages in trades.items():
            got = [m.json() for m in by_msg_id(messages)]
            assert got == direct_trades[key], f"trades {key}: not in produce order"
        # Stage 2 over the raw topic sees the frames of every symbol in order: the same
        # bars, books and trades as the direct run, nothing late, no gap.
        again = run_stage2(services, prefix, tmp_path / "stage2")
        assert again["dead_letter"] == direct["dead_letter"] == []
        assert again["late"] == direct["late"]
        for channel in ("trades", "book", "bars"):
            assert sorted(map(repr, again[channel])) == sorted(map(repr, direct[channel])), channel
    finally:
        delete_topics(services.kafka, prefix)


# ---- Kafka unreachable at start ----


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def candlewax(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX__")}
    return subprocess.run(
        [sys.executable, "-m", "candlewax.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard, not a speed assertion
    )


def test_replay_with_kafka_unreachable_fails_at_once_with_one_line(tmp_path: Path) -> None:
    broker = f"127.0.0.1:{closed_port()}"
    done = candlewax(
        "replay",
        str(BTC_SPOT),
        "--venue",
        "binance",
        "--out",
        str(tmp_path / "out"),
        "--kafka",
        broker,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert broker in lines[0] and "unreachable" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_stage2_run_with_kafka_unreachable_fails_at_once_with_one_line(tmp_path: Path) -> None:
    broker = f"127.0.0.1:{closed_port()}"
    pipeline = tmp_path / "stage2.yaml"
    pipeline.write_text(
        "sources:\n"
        "  - venue: binance\n"
        "    mode: kafka\n"
        f"    kafka: {{brokers: ['{broker}'], tail: false}}\n"
        "sinks:\n"
        f"  - {{type: jsonl, path: '{tmp_path / 'out'}'}}\n"
    )
    done = candlewax("run", str(pipeline), cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert broker in lines[0] and "unreachable" in lines[0]


def test_a_missing_raw_topic_is_one_line_naming_it(services: Services, tmp_path: Path) -> None:
    prefix = unique("absent")
    pipeline = tmp_path / "stage2.yaml"
    pipeline.write_text(
        "sources:\n"
        "  - venue: binance\n"
        "    mode: kafka\n"
        f"    kafka: {{brokers: ['{services.kafka}'], topic_prefix: {prefix}, tail: false}}\n"
        "sinks:\n"
        f"  - {{type: jsonl, path: '{tmp_path / 'out'}'}}\n"
    )
    done = candlewax("run", str(pipeline), cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert f"{prefix}.raw.binance" in lines[0]


def test_librdkafka_logs_go_through_python_logging_rate_limited(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    broker = f"127.0.0.1:{closed_port()}"
    producer = ReliableProducer([broker], {"reconnect.backoff.max.ms": 100})
    with caplog.at_level(logging.INFO):
        producer.produce("t", b"v", "k", [])
        deadline = time.monotonic() + 3  # librdkafka retries the connection every ~100 ms
        while time.monotonic() < deadline:
            producer.after_batch(0)
            time.sleep(0.05)
    assert "Connection refused" not in capfd.readouterr().err  # nothing raw on stderr
    librdkafka = [r for r in caplog.records if r.name == "candlewax.librdkafka"]
    assert librdkafka and "Connection refused" in librdkafka[0].getMessage()
    assert len(librdkafka) <= 3  # dozens of reconnect attempts, one line per kind per 10 s
