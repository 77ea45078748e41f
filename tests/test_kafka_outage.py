"""Kafka away longer than ``message.timeout.ms``, and Kafka away at start (real broker)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from flow_helpers import BTC_SPOT, outputs
from gated_source import GatedSource
from services import Message, Services, consume_all, delete_topics, unique

from candlewax.config import parse_config
from candlewax.metrics import REGISTRY
from flows.pipeline import build_flow
from flows.runner import run_pipeline
from sinks.kafka_producer import ReliableProducer
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


def test_an_outage_longer_than_the_message_timeout_loses_no_message_nor_header(
    services: Services, tmp_path: Path
) -> None:
    prefix = unique("outage")
    frames = list(read_capture(BTC_SPOT, "binance"))[:12_000]
    producer = {"message.timeout.ms": TIMEOUT_MS, "reconnect.backoff.max.ms": 500}
    cfg = parse_config(
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
        # every trade comes out once. (Its bars can differ from the direct run's: a frame
        # produced again goes behind newer frames of its symbol, docs/kafka_redis.md.)
        stage2 = parse_config(
            {
                "sources": [
                    {
                        "venue": "binance",
                        "mode": "kafka",
                        "kafka": {
                            "brokers": [services.kafka],
                            "topic_prefix": prefix,
                            "tail": False,
                        },
                    }
                ],
                "operators": {"ohlcv": {"intervals": ["1s"]}},
                "sinks": [{"type": "jsonl", "path": str(tmp_path / "stage2")}],
            }
        )
        run_pipeline(stage2)
        again = outputs(tmp_path / "stage2")
        assert again["dead_letter"] == direct["dead_letter"] == []
        assert sorted(map(repr, again["trades"])) == sorted(map(repr, direct["trades"]))
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
