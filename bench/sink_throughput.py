"""Kafka and Redis sink throughput against the raw clients, on real pipeline output.

Run from the repository root (docs/benchmarks.md has the results)::

    /work/venv/bin/python bench/sink_throughput.py                 # 5 rounds (~1 min)
    /work/venv/bin/python bench/sink_throughput.py --quick         # 10k frames, 2 rounds
    /work/venv/bin/python bench/sink_throughput.py --repeat 7 --markdown

Servers: ``scripts/services.sh start`` (real Kafka 4 KRaft and redis-server on
127.0.0.1; ports from CANDLEWAX_KAFKA_PORT / CANDLEWAX_REDIS_PORT) is run first.

Input: the bundled Binance captures (bench/pipeline.py's ``load_frames``) are
run once through the dataflow; its output records (74,806: trades, books, BBOs,
bars) and the raw frames (74,867) are kept in memory, and each run sends them
``--passes`` times (3: ~225k messages, long enough to time on a shared machine).
Each round then measures, round-robin:

K1.  the producer alone: a plain confluent-kafka ``Producer`` with the sink's
     settings (idempotent, acks=all, lz4, linger 20 ms) producing exactly the
     messages the record sink produces (topic, key, JSON value, headers all
     computed beforehand), ``poll(0)`` every 128 messages, ``flush()`` at the end;
K1b. a hand-written loop: the least an application does to ship the records with
     that producer (``orjson.dumps`` + "venue:symbol" key, no ids or type header);
K2.  ``KafkaRecordSink.write_batch`` on batches of 128 records + ``checkpoint()``:
     encoding, ids and headers included in the timed part;
K3/K3b/K4. the same for raw frames (``KafkaRawSink``; the hand-written loop sends
     the text with the ts_ingest / conn_id / hint headers, no id);
R1. redis-py pipeline alone: the commands the Redis sink sends (XADD, PUBLISH,
    HSET + EXPIRE per key), built beforehand, one pipeline per 128 records;
R2. ``RedisSink.write_batch`` on the same batches (commands built in the timed part).

Rates: Kafka messages/s, Redis commands/s (and records/s). A run ends only when
Kafka acknowledged every message / Redis answered every pipeline. Every run
writes to its own topics / keys, deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import bench_config, load_frames
from candlewax.config import KafkaSink as KafkaSinkConfig
from candlewax.config import RedisSink as RedisSinkConfig
from flows.inputs import MemorySource
from flows.pipeline import build_flow
from sinks.kafka import KafkaRawSink, KafkaRecordSink
from sinks.kafka_codec import encode_record
from sinks.kafka_producer import DEFAULT_PRODUCER
from sinks.kafka_topics import all_topics, ensure_topics, record_topics
from sinks.message_ids import frame_id
from sinks.redis import RedisSink
from sources.frames import RawFrame
from sources.kafka_raw import frame_headers, raw_topic

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128
Record = dict[str, Any]


def servers() -> tuple[str, str]:
    subprocess.run([str(ROOT / "scripts/services.sh"), "start"], check=True)
    kafka = f"127.0.0.1:{os.environ.get('CANDLEWAX_KAFKA_PORT', '9092')}"
    redis_url = f"redis://127.0.0.1:{os.environ.get('CANDLEWAX_REDIS_PORT', '6379')}/0"
    return kafka, redis_url


def pipeline_output(limit: int | None) -> tuple[list[Record], list[tuple[RawFrame, str]]]:
    """The dataflow's records for the bundled captures, and the frames with their symbol."""
    from bytewax.testing import run_main

    from candlewax.config import parse_config

    streams = load_frames(limit)
    with tempfile.TemporaryDirectory() as tmp:
        data = bench_config().model_dump(mode="json")
        data["sinks"] = [{"type": "jsonl", "path": tmp}]
        run_main(build_flow(parse_config(data), MemorySource(dict(streams))))  # type: ignore[no-untyped-call]
        records = [
            orjson.loads(line)
            for name in ("trades", "book", "bars", "status")
            for line in (Path(tmp) / f"{name}.jsonl").read_bytes().splitlines()
        ]
    records.sort(key=lambda r: r.get("ts_ingest", r.get("end", 0)))
    frames = [(f, symbol) for symbol, frames in streams.items() for f in frames]
    frames.sort(key=lambda item: item[0].ts_ingest)
    return records, frames


def batches(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


# ---- Kafka ----


class KafkaBench:
    def __init__(self, brokers: str, records: list[Record], frames: list[tuple[RawFrame, str]]):
        self.brokers = brokers
        self.records = records
        self.frames = frames
        self.prefixes: list[str] = []

    def config(self) -> KafkaSinkConfig:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.prefixes.append(prefix)
        cfg = KafkaSinkConfig(type="kafka", brokers=[self.brokers], topic_prefix=prefix)
        ensure_topics(
            cfg.brokers, all_topics(prefix, ["binance"], True), partitions=3, replication=1
        )
        return cfg

    def _producer(self) -> Producer:
        """A bare producer with the sink's settings (both baselines use it)."""
        return Producer(
            {
                **DEFAULT_PRODUCER,
                "bootstrap.servers": self.brokers,
                "delivery.report.only.error": True,
            }
        )

    def _raw_producer(self, messages: list[tuple[str, bytes, str, Any]]) -> float:
        producer = self._producer()
        produce, poll = producer.produce, producer.poll
        for topic, value, key, headers in messages[:BATCH]:  # warm-up: connection, metadata, PID
            produce(topic, value, key, headers=headers)
        producer.flush(60)
        start = time.perf_counter()
        for i, (topic, value, key, headers) in enumerate(messages[BATCH:]):
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    poll(0.001)
            if i % BATCH == BATCH - 1:
                poll(0)
        if producer.flush(120) != 0:
            raise RuntimeError("raw producer: messages not acknowledged")
        return time.perf_counter() - start

    def raw_records(self) -> tuple[int, float]:
        topics = record_topics(self.config().topic_prefix, ["trades", "book", "bars", "status"])
        messages = []
        for record in self.records:
            topic = topics[record["type"]]
            key, value, headers = encode_record(record)
            messages.append((topic, value, key, headers))
        return len(messages) - BATCH, self._raw_producer(messages)

    def handwritten_records(self) -> tuple[int, float]:
        """The least an application does to ship the records with the bare producer:
        JSON value and "venue:symbol" key, produced as it goes (no ids, no type header)."""
        topics = record_topics(self.config().topic_prefix, ["trades", "book", "bars", "status"])
        return self._handwritten(
            self.records,
            lambda r: (topics[r["type"]], orjson.dumps(r), f"{r['venue']}:{r['symbol']}", None),
        )

    def handwritten_frames(self) -> tuple[int, float]:
        """Raw frames the same way: the text, the key, ts_ingest and conn_id headers."""
        topic = raw_topic(self.config().topic_prefix, "binance")

        def message(item: tuple[RawFrame, str]) -> tuple[str, bytes, str, Any]:
            frame, symbol = item
            headers = [("ts_ingest", str(frame.ts_ingest)), ("conn_id", frame.conn_id)]
            if frame.hint is not None:
                headers.append(("hint", frame.hint))
            return topic, frame.text.encode(), f"{frame.venue}:{symbol}", headers

        return self._handwritten(self.frames, message)

    def _handwritten(
        self, items: list[Any], message: Callable[[Any], tuple[str, bytes, str, Any]]
    ) -> tuple[int, float]:
        producer = self._producer()
        produce, poll = producer.produce, producer.poll
        for item in items[:BATCH]:  # warm-up, as for the others
            topic, value, key, headers = message(item)
            produce(topic, value, key, headers=headers)
        producer.flush(60)
        start = time.perf_counter()
        for i, item in enumerate(items[BATCH:]):
            topic, value, key, headers = message(item)
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    poll(0.001)
            if i % BATCH == BATCH - 1:
                poll(0)
        if producer.flush(120) != 0:
            raise RuntimeError("hand-written producer: messages not acknowledged")
        return len(items) - BATCH, time.perf_counter() - start

    def sink_records(self) -> tuple[int, float]:
        sink = KafkaRecordSink(self.config(), ["binance"])
        work = batches(self.records)
        sink.write_batch(work.pop(0))  # warm-up, as for the raw producer
        sink.checkpoint()
        start = time.perf_counter()
        for batch in work:
            sink.write_batch(batch)
        sink.checkpoint()
        elapsed = time.perf_counter() - start
        sink.close()
        stats = sink.producer.stats
        if stats.produced != len(self.records) or stats.dropped:
            raise RuntimeError(f"record sink lost messages: {stats}")
        return stats.produced - BATCH, elapsed

    def raw_frames(self) -> tuple[int, float]:
        topic = raw_topic(self.config().topic_prefix, "binance")
        messages = []
        for frame, symbol in self.frames:
            key = f"{frame.venue}:{symbol}"
            headers = frame_headers(frame, frame_id(frame))
            messages.append((topic, frame.text.encode(), key, headers))
        return len(messages) - BATCH, self._raw_producer(messages)

    def sink_frames(self) -> tuple[int, float]:
        sink = KafkaRawSink(self.config(), ["binance"])
        work = batches(self.frames)
        sink.write_batch(work.pop(0))
        sink.checkpoint()
        start = time.perf_counter()
        for batch in work:
            sink.write_batch(batch)
        sink.checkpoint()
        elapsed = time.perf_counter() - start
        sink.close()
        if sink.producer.stats.produced != len(self.frames) or sink.producer.stats.dropped:
            raise RuntimeError(f"raw sink lost messages: {sink.producer.stats}")
        return len(self.frames) - BATCH, elapsed

    def cleanup(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.brokers})
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith("bench-")]
        mine = [t for t in names if any(t.startswith(p + ".") for p in self.prefixes)]
        if mine:
            for future in admin.delete_topics(mine, operation_timeout=30).values():
                future.result()


# ---- Redis ----


class RedisBench:
    def __init__(self, url: str, records: list[Record]):
        self.url = url
        self.records = records
        self.client = redis.Redis.from_url(url)
        self.prefixes: list[str] = []

    def config(self) -> RedisSinkConfig:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.prefixes.append(prefix)
        return RedisSinkConfig(type="redis", url=self.url, key_prefix=prefix)

    def raw_pipeline(self) -> tuple[int, float]:
        """The sink's commands, built beforehand by recording what the sink sends."""
        recorder = _CommandRecorder()
        sink = RedisSink(self.config(), client=recorder)  # type: ignore[arg-type]
        for batch in batches(self.records):
            sink.write_batch(batch)
        work = recorder.pipelines
        self.client.ping()  # warm-up: the connection
        start = time.perf_counter()
        for commands in work:
            pipe = self.client.pipeline(transaction=False)
            for args in commands:
                pipe.execute_command(*args)
            pipe.execute()
        return sum(len(p) for p in work), time.perf_counter() - start

    def sink(self) -> tuple[int, float]:
        sink = RedisSink(self.config())
        work = batches(self.records)
        sink.client.ping()
        start = time.perf_counter()
        for batch in work:
            sink.write_batch(batch)
        elapsed = time.perf_counter() - start
        sink.close()
        if sink.stats.written != len(self.records) or sink.stats.dropped:
            raise RuntimeError(f"redis sink lost records: {sink.stats}")
        return sink.stats.commands, elapsed

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                self.client.unlink(*keys[i : i + 500])


class _CommandRecorder:
    """Stands in for redis.Redis to capture the sink's pipelines (no server involved)."""

    def __init__(self) -> None:
        self.pipelines: list[list[tuple[Any, ...]]] = []

    def pipeline(self, transaction: bool = False) -> _CommandRecorder:
        self.pipelines.append([])
        return self

    def execute_command(self, *args: Any) -> None:
        self.pipelines[-1].append(args)

    def __len__(self) -> int:
        return len(self.pipelines[-1])

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        return [b"OK"] * len(self.pipelines[-1])

    def close(self) -> None:
        pass


# ---- main ----


def measure(
    rounds: int, runs: dict[str, Callable[[], tuple[int, float]]]
) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            gc.collect()
            count, elapsed = run()
            rates[name].append(count / elapsed)
            print(f"  round {r + 1}: {name:<34} {count:>7,} in {elapsed:6.3f} s", file=sys.stderr)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10k frames, 2 rounds")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--passes", type=int, default=3, help="each run sends the data this many times"
    )
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.repeat
    kafka, redis_url = servers()
    records, frames = pipeline_output(10_000 if args.quick else None)
    passes = 1 if args.quick else args.passes
    records, frames = records * passes, frames * passes  # runs long enough to time
    gc.freeze()
    print(
        f"{len(records):,} records, {len(frames):,} frames per run; {rounds} rounds",
        file=sys.stderr,
    )
    kb = KafkaBench(kafka, records, frames)
    rb = RedisBench(redis_url, records)
    runs = {
        "K1 producer alone, records": kb.raw_records,
        "K1b hand-written loop, records": kb.handwritten_records,
        "K2 kafka record sink": kb.sink_records,
        "K3 producer alone, frames": kb.raw_frames,
        "K3b hand-written loop, frames": kb.handwritten_frames,
        "K4 kafka raw-frame sink": kb.sink_frames,
        "R1 redis-py pipeline, commands": rb.raw_pipeline,
        "R2 redis sink": rb.sink,
    }
    try:
        rates = measure(rounds, runs)
    finally:
        kb.cleanup()
        rb.cleanup()
    # sink -> (producer / pipeline alone, hand-written loop)
    baselines = {"K2": ("K1", "K1b"), "K4": ("K3", "K3b"), "R2": ("R1", None)}
    medians = {name.split()[0]: statistics.median(values) for name, values in rates.items()}
    unit = {"K": "msg/s", "R": "commands/s"}
    if args.markdown:
        print("| measurement | best | median | sink / alone | sink / hand-written |")
        print("|---|--:|--:|--:|--:|")
    for name, values in rates.items():
        tag = name.split()[0]
        alone, written = baselines.get(tag, (None, None))
        ratios = [f"{medians[tag] / medians[b]:.2f}" if b else "" for b in (alone, written)]
        best, median = max(values), statistics.median(values)
        if args.markdown:
            print(f"| {name} | {best:,.0f} | {median:,.0f} | {ratios[0]} | {ratios[1]} |")
        else:
            print(
                f"{name:<34} best {best:>9,.0f}  median {median:>9,.0f} {unit[tag[0]]:<10}"
                f" {ratios[0]:>5} {ratios[1]:>5}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
