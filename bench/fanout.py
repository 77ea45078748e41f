"""Frame-in to client-out latency of the WebSocket fan-out, on loopback.

Run from the repository root::

    /work/venv/bin/python bench/fanout.py               # every scenario (~4 min)
    /work/venv/bin/python bench/fanout.py --quick       # shorter runs (~30 s)
    /work/venv/bin/python bench/fanout.py --scenario one-firehose --seconds 20
    /work/venv/bin/python bench/fanout.py --switch-interval 0.0005   # GIL hand-off tuning

What runs: this process runs the real dataflow (``flows.pipeline.build_flow``,
normalize -> sinks, dedupe / bars / books off so every frame makes exactly one
trade record) with the ``websocket`` sink. Its input is a paced in-memory
source: the real Binance spot trade frames of the bundled capture, with the
symbol rewritten to one of ``--symbols`` synthetic markets (S000/USDT, ...),
emitted at ``--rate`` frames per second in 1 ms ticks. Each frame's
``ts_ingest`` is stamped with the wall clock when the source hands it to the
engine: that is "frame in". A second process holds the raw client connections
on one epoll loop: per readable socket one ``recv`` and the wall clock of it,
nothing else while the run lasts (frames are split and parsed after it), so the
clients cost the shared cores as little as a client can; "client out" is the
clock of the read that brought a message's last byte; latency = client out -
ts_ingest of every record received. All processes use the same machine clock.
Each run prints the CPU seconds of every process (flow, server(s), clients) and
of the whole machine (other people's jobs included) over the run. The first
second is warm-up and not counted; every run stops by itself (the source ends
after --seconds, the clients 3 s after the last message or at a hard deadline).

Scenarios (2-core machines: the engine, the server process(es) and every client
share them). The server runs in its own process (``processes: 1``, the default)
unless the name says ``thread`` (``processes: 0``: a thread of the flow's process).

- one-firehose: 1 raw-reader client subscribed to everything, no batching (baseline).
- one-sdk-1k / -5k / -10k: the same through the Python SDK (typed pydantic
  objects, ``async for``) at 1k, 5k and --rate frames/s, with a raw reader on the
  same stream at the same time in its own process (the baseline of the ratio).
- recv-max / sdk-max: records/s one client takes: the client stops reading, the
  bench queues --max-records records for it in a server process (no flow; handed
  over 10 at a time, as the flow does at 10k msg/s), then lets it read. recv-max
  is websockets' own ``recv()`` loop without decoding, one record per message
  (baseline); sdk-max the SDK (which asks for ``?arrays=1``: one array per
  hand-over); sdk-max-batched the SDK with batch_ms 20 (up to 500 per message).
- 1000-by-symbol-thread / 1000-by-symbol: 1,000 clients, each subscribed to one of
  100 symbols (10 per symbol), no batching, 10k msg/s in, 100k msg/s out, with the
  engine busy (1s/1m/1h bars on): server thread vs server process.
- 1000-by-symbol-2proc: the same with two server processes (``processes: 2``,
  SO_REUSEPORT: ~500 clients each, each parses the whole stream).
- 1000-by-symbol-batched: the same (server process) with batch_ms 20.
- 1000-firehose-batched: 1,000 clients subscribed to everything at --firehose-rate
  (default 1,000 msg/s in -> 1M records/s out) with batch_ms 50.

At the end it prints ratios measured in the same run: SDK vs raw reader p99 at
10k msg/s, SDK vs recv-loop records/s, and thread vs process p99 for 1,000 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import select
import socket
import subprocess
import sys
import time
import urllib.request
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main

ROOT = Path(__file__).resolve().parent.parent
# CANDLEWAX_BENCH_CODE=<checkout>: the flow and the server (also in the processes this
# spawns: they inherit the variable) run that checkout's code; the clients and the
# measurement stay this script's. For comparing servers with the same clients.
CODE = Path(os.environ.get("CANDLEWAX_BENCH_CODE") or ROOT).resolve()
sys.path.insert(0, str(CODE))

from candlewax.config import WebsocketSink, parse_config  # noqa: E402
from candlewax.schema import make_trade  # noqa: E402
from flows.pipeline import build_flow  # noqa: E402
from sinks.fanout.threaded import acquire, release  # noqa: E402
from sources.frames import RawFrame  # noqa: E402
from sources.replay import read_capture  # noqa: E402

CAPTURE = ROOT / "fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz"
TICK_S = 0.001
WARMUP_S = 1.0
TS_RE = re.compile(rb'"ts_ingest":(\d+)')


# ---- input: paced real trade frames ----


def trade_texts(symbols: int) -> list[str]:
    """The capture's trade frames, round-robin over ``symbols`` synthetic markets."""
    texts = [f.text for f in read_capture(CAPTURE, "binance") if '"e":"trade"' in f.text]
    texts = texts[: len(texts) // symbols * symbols]  # frame i is for symbol i % symbols
    out = []
    for i, text in enumerate(texts):
        native = f"S{i % symbols:03d}USDT"
        out.append(text.replace("btcusdt@", native.lower() + "@").replace("BTCUSDT", native))
    return out


class _Paced(StatefulSourcePartition[RawFrame, None]):
    def __init__(self, texts: list[str], rate: float, seconds: float) -> None:
        self.texts = texts
        self.rate = rate
        self.total = int(rate * seconds)
        self.sent = 0
        self.start: float | None = None
        self.awake: datetime | None = None

    def next_batch(self) -> list[RawFrame]:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        if self.sent >= self.total:
            raise StopIteration
        due = min(self.total, int((now - self.start) * self.rate))
        stamp = time.time_ns() // 1000  # frame in
        texts, n = self.texts, len(self.texts)
        batch = [RawFrame("binance", "bench", stamp, texts[i % n]) for i in range(self.sent, due)]
        self.sent = due
        self.awake = datetime.now(UTC) + timedelta(seconds=TICK_S)
        return batch

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> None:
        return None


class PacedSource(FixedPartitionedSource[RawFrame, None]):
    def __init__(self, texts: list[str], rate: float, seconds: float) -> None:
        self.args = (texts, rate, seconds)

    def list_parts(self) -> list[str]:
        return ["paced"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Paced:
        return _Paced(*self.args)


# ---- clients (other processes) ----


class _Connection:
    """One raw WebSocket client connection: handshake and subscribe (blocking, before
    the run), then only non-blocking reads. Everything read is kept with the wall clock
    of the read and parsed after the run (``records``): during the run a client costs
    one ``recv`` per readable socket, so the clients are not what the run measures."""

    def __init__(self, host: str, port: int, path: str, subscribe: bytes) -> None:
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += _recv_some(sock)
        if not buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(buf[:200].decode(errors="replace"))
        buf = buf[buf.index(b"\r\n\r\n") + 4 :]
        sock.sendall(_masked_text(subscribe))
        while b'{"type":"subscribed"' not in buf:  # live data comes after it
            buf += _recv_some(sock)
        sock.setblocking(False)
        self.sock = sock
        self.chunks: list[bytes] = [buf]
        self.stamps = array("q", [0])  # wall clock (us) of each read

    def records(self, sink: _Sink) -> None:
        """Split what was read into frames; a frame's "client out" is the read that
        brought its last byte."""
        buf = b""
        for data, now in zip(self.chunks, self.stamps, strict=True):
            buf += data
            pos, size = 0, len(buf)
            while size - pos >= 2:
                opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
                head = 2
                if length == 126:
                    if size - pos < 4:
                        break
                    length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
                elif length == 127:
                    if size - pos < 10:
                        break
                    length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
                if size - pos < head + length:
                    break
                if opcode == 1:
                    sink.message(buf[pos + head : pos + head + length], now)
                pos += head + length
            buf = buf[pos:]
        self.chunks = []


def _recv_some(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise RuntimeError("server closed the connection while subscribing")
    return data


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


class _Sink:
    def __init__(self) -> None:
        self.latencies = array("q")
        self.worst: dict[int, int] = {}  # 100 ms of input (by ts_ingest) -> worst latency
        self.records = 0
        self.messages = 0
        self.dropped = 0
        self.first_ts: int | None = None
        self.first_rx = 0.0
        self.last_rx = 0.0

    def message(self, payload: bytes, now: int) -> None:
        if payload.startswith(b'{"type":"dropped"'):
            self.dropped += int(re.search(rb'"count":(\d+)', payload).group(1))  # type: ignore[union-attr]
            return
        if payload.startswith(b'{"type":"') and not payload.startswith(b'{"type":"trade"'):
            return  # hello, subscribed, snapshot
        stamps = TS_RE.findall(payload)
        if not stamps:
            return
        self.messages += 1
        first = self.first_ts
        if first is None:
            first = self.first_ts = int(stamps[0])
        cutoff = first + int(WARMUP_S * 1e6)
        for raw in stamps:
            ts = int(raw)
            self.records += 1
            if ts >= cutoff:
                self.latencies.append(now - ts)
                slot = (ts - first) // 100_000
                if now - ts > self.worst.get(slot, 0):
                    self.worst[slot] = now - ts


def client_process(url: str, subscriptions: list[bytes], deadline_s: float, conn: Any) -> None:
    """Raw clients, one epoll loop: per readable socket one ``recv`` and the time of
    it; frames are parsed after the run. Sends back the latencies (us), records and
    messages received, drops reported, and this process's CPU seconds while receiving."""
    gc.disable()
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    connections = [_Connection(host, int(port), path, s) for s in subscriptions]
    by_fd = {c.sock.fileno(): c for c in connections}
    receive = {fd: c.sock.recv for fd, c in by_fd.items()}
    chunks = {fd: c.chunks.append for fd, c in by_fd.items()}
    stamps = {fd: c.stamps.append for fd, c in by_fd.items()}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    conn.send("ready")
    cpu = time.process_time()
    clock = time.time_ns
    hard_stop = time.monotonic() + deadline_s
    last_rx = 0.0
    reads = 0
    while True:
        events = poller.poll(0.2)
        if events:
            last_rx = time.monotonic()
            reads += len(events)
            for fd, _ in events:
                data = receive[fd](65536)  # not more: a larger buffer is an mmap per call
                if data:
                    chunks[fd](data)
                    stamps[fd](clock() // 1000)  # client out
                else:
                    poller.unregister(fd)
        elif last_rx and time.monotonic() - last_rx > 3.0:
            break
        if time.monotonic() > hard_stop:
            break
    cpu = time.process_time() - cpu
    sink = _Sink()
    for c in connections:
        c.sock.close()
        c.records(sink)
    usage = (cpu, reads, sink.worst)
    conn.send((sink.latencies.tobytes(), sink.records, sink.messages, sink.dropped, 0.0, usage))


def sdk_client_process(url: str, deadline_s: float, conn: Any, hold: bool = False) -> None:
    """One ``candlewax.client.Stream`` (typed records), as a user would iterate it.
    ``hold``: after subscribing, wait for "go" before reading anything."""
    from candlewax.client import Stream

    def connected(stream: Stream) -> None:
        conn.send("ready")
        if hold:
            conn.recv()  # blocks this client's loop: the server queues meanwhile

    async def main() -> None:
        sink = _Sink()
        stream = Stream(url, channels=["trades"], on_connect=connected)
        hard_stop = time.monotonic() + deadline_s

        async def stopper() -> None:  # ends the iteration: 3 s idle, or the deadline
            while time.monotonic() < hard_stop:
                await asyncio.sleep(0.2)
                if sink.last_rx and time.monotonic() - sink.last_rx > 3.0:
                    break
            await stream.close()

        task = asyncio.get_running_loop().create_task(stopper())
        warmup = WARMUP_S * 1e6
        async for trade in stream:
            now = time.time_ns() // 1000
            ts = trade.ts_ingest  # type: ignore[union-attr]
            sink.records += 1
            if sink.first_ts is None:
                sink.first_ts = ts
                sink.first_rx = time.monotonic()
            sink.last_rx = time.monotonic()
            if ts >= sink.first_ts + warmup:
                sink.latencies.append(now - ts)
        await task
        receive_s = sink.last_rx - sink.first_rx
        latencies = sink.latencies.tobytes()
        conn.send((latencies, sink.records, sink.records, stream.stats.dropped, receive_s))

    asyncio.run(main())


def recv_loop_process(url: str, deadline_s: float, conn: Any, hold: bool = False) -> None:
    """Baseline for the SDK's throughput: websockets' own ``recv()`` loop, no decoding."""
    from websockets.asyncio.client import connect

    async def main() -> None:
        async with connect(url, compression=None, max_size=None, max_queue=1024) as ws:
            await ws.send('{"type":"subscribe","channels":["trades"]}')
            while b'"snapshot"' not in await ws.recv(decode=False):
                pass
            conn.send("ready")
            if hold:
                conn.recv()
            count, first, last = 0, 0.0, 0.0
            hard_stop = time.monotonic() + deadline_s
            while time.monotonic() < hard_stop:
                try:
                    async with asyncio.timeout(3.0):
                        await ws.recv(decode=False)
                except TimeoutError:
                    break
                last = time.monotonic()
                if not count:
                    first = last
                count += 1
        conn.send((b"", count, count, 0, last - first))

    asyncio.run(main())


# ---- one run ----


@dataclass
class Result:
    name: str
    clients: int
    rate: float
    expected: int
    received: int
    messages: int
    dropped: int
    server_dropped: int
    latencies: list[int]
    receive_s: float = 0.0  # first to last record at the client (throughput runs)
    cpu: str = ""  # CPU seconds per process during the run, and the load average

    def pct(self, p: float) -> float | None:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1000 if lat else None

    def row(self) -> str:
        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        loss = 1 - self.received / self.expected if self.expected else 0.0
        per_s = self.received / self.receive_s if self.receive_s else None
        lat_max = max(self.latencies) / 1000 if self.latencies else 0.0
        return (
            f"| {self.name} | {self.clients} | {self.rate:,.0f} | {self.expected:,} | "
            f"{self.received:,} ({loss:.2%} lost) | "
            f"{'-' if per_s is None else f'{per_s:,.0f}'} | "
            f"{fmt(self.pct(0.5))} | {fmt(self.pct(0.99))} | {fmt(self.pct(0.999))} | "
            f"{lat_max:.1f} |"
        )


def run(
    name: str,
    *,
    clients: int,
    rate: float,
    seconds: float,
    symbols: int,
    batch_ms: float = 0.0,
    by_symbol: bool = False,
    client: str = "reader",
    processes: int = 1,
    busy: bool = False,
) -> list[Result]:
    """One scenario: the flow (this process) at ``rate`` frames/s into the fan-out
    (``processes`` 0: a thread of this process; else server processes), clients in
    another process. ``busy``: 1s/1m/1h bars on, so the engine works harder (clients
    take trades only: the bars go to nobody)."""
    texts = trade_texts(symbols)
    ws = {"type": "websocket", "host": "127.0.0.1", "port": 0, "batch_ms": batch_ms}
    ws |= {"queue_size": 100_000, "max_lag_s": None, "heartbeat_s": 3600}
    ws |= {"processes": processes}
    server = acquire(WebsocketSink.model_validate(ws))
    # Dedupe stays off: the paced source repeats the capture's trade ids.
    operators: dict[str, Any] = {"book": {"enabled": False}, "dedupe": {"enabled": False}}
    if busy:
        operators["ohlcv"] = {"intervals": ["1s", "1m", "1h"]}
    else:
        operators["ohlcv"] = {"enabled": False}
    try:
        cfg = parse_config(
            {
                "name": "bench-fanout",
                "sources": [_source(symbols)],
                "operators": operators,
                "sinks": [{**ws, "port": server.address[1]}],
            }
        )
        ctx = mp.get_context("spawn")
        deadline = seconds + 90
        subs = []
        for i in range(clients):
            request: dict[str, Any] = {"type": "subscribe", "channels": ["trades"]}
            if by_symbol:
                request["symbols"] = [f"S{i % symbols:03d}/USDT"]
            subs.append(_json(request))
        # The SDK runs beside a raw reader on the same stream: the same moments of
        # machine load hit both, so their ratio is fair.
        kinds = ["sdk", "reader"] if client == "sdk" else ["reader"]
        pipes, procs = [], []
        for kind in kinds:
            parent, child = ctx.Pipe()
            if kind == "sdk":
                proc = ctx.Process(target=sdk_client_process, args=(server.url, deadline, child))
            else:
                proc = ctx.Process(target=client_process, args=(server.url, subs, deadline, child))
            proc.start()
            if not parent.poll(120) or parent.recv() != "ready":
                raise RuntimeError("clients did not connect")
            pipes.append(parent)
            procs.append(proc)
        flow = build_flow(cfg, source=PacedSource(texts, rate, seconds))
        server_pids = [p for p in getattr(server, "pids", list)() if p is not None]
        usage = _CpuUsage(server_pids)
        profilers = _profile(name, server_pids, seconds)
        run_main(flow)  # type: ignore[no-untyped-call]
        answers = [parent.recv() for parent in pipes]
        cpu = usage.done([a[5] if len(a) > 5 else None for a in answers])
        for profiler in profilers:
            profiler.wait(60)
        for proc in procs:
            proc.join(30)
        server_dropped = _status(server.http_url)["dropped"]
    finally:
        release(server)
    total = int(rate * seconds)
    expected = total * clients // symbols if by_symbol else total * clients
    results = []
    for kind, (raw, records, messages, dropped, *rest) in zip(kinds, answers, strict=True):
        latencies = array("q")
        latencies.frombytes(raw)
        label = name if kind == client else f"{name} (raw reader beside it)"
        results.append(
            Result(
                label,
                clients,
                rate,
                expected,
                records,
                messages,
                dropped,
                server_dropped,
                list(latencies),
                rest[0] if rest else 0.0,
                cpu,
            )
        )
    return results


class _CpuUsage:
    """CPU seconds of the flow's process (the engine; with ``processes: 0`` the server
    thread too), of each server process and of the clients over one run, so a run
    that misses shows which process the 2 shared cores could not serve."""

    def __init__(self, server_pids: list[int]) -> None:
        self.pids = server_pids
        self.start = time.monotonic()
        self.load = os.getloadavg()[0]
        self.flow = _own_cpu()
        self.servers = [_pid_cpu(pid) for pid in server_pids]
        self.box = _box_cpu()

    def done(self, clients: list[tuple[float, int, dict[int, int]] | None]) -> str:
        """``clients``: per client process, its CPU seconds while receiving, its reads
        and its worst latency per 100 ms of input (printed with --timeline)."""
        wall = time.monotonic() - self.start
        flow = _own_cpu() - self.flow
        now = [_pid_cpu(pid) for pid in self.pids]
        servers = [after - before for after, before in zip(now, self.servers, strict=True)]
        parts = [f"flow {flow:.1f}"]
        parts += [f"server {cpu:.1f}" for cpu in servers] or ["server in the flow"]
        parts += [f"clients {c[0]:.1f} ({c[1]:,} reads)" for c in clients if c is not None]
        busy, idle = (after - before for after, before in zip(_box_cpu(), self.box, strict=True))
        text = (
            f"CPU s over {wall:.1f} s wall: {', '.join(parts)}; "
            f"whole machine {busy:.1f} busy, {idle:.1f} idle; "
            f"load average {self.load:.2f} -> {os.getloadavg()[0]:.2f}"
        )
        worst: dict[int, int] = {}
        for c in clients:
            for slot, latency in (c[2] if c is not None else {}).items():
                worst[slot] = max(worst.get(slot, 0), latency)
        if TIMELINE and worst:
            text += "\n  worst ms per 100 ms of input: " + " ".join(
                f"{worst.get(slot, 0) // 1000}" for slot in range(min(worst), max(worst) + 1)
            )
        return text


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _box_cpu() -> tuple[float, float]:
    """Core-seconds the whole machine spent busy and idle (every process, ours or not)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


def _pid_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TIMELINE = False  # --timeline
PROFILE: dict[str, str] = {}  # --py-spy: {"bin": py-spy, "dir": where the profiles go}


def _profile(name: str, pids: list[int], seconds: float) -> list[subprocess.Popen[bytes]]:
    """With --py-spy: sample each server process (and the flow's) while the flow runs,
    without stopping them (--nonblocking); collapsed stacks per process."""
    if not PROFILE:
        return []
    out = Path(PROFILE["dir"])
    out.mkdir(parents=True, exist_ok=True)
    targets = [(f"server{i}", pid) for i, pid in enumerate(pids)] + [("flow", os.getpid())]
    return [
        subprocess.Popen(
            [
                *(PROFILE["bin"], "record", "--nonblocking", "--format", "raw", "-r", "250"),
                *("-d", str(int(seconds + 1)), "-p", str(pid)),
                *("-o", str(out / f"{name}-{who}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for who, pid in targets
    ]


def run_throughput(
    name: str, *, rate: float, seconds: float, client: str, batch_ms: float = 0.0
) -> Result:
    """How many records/s one client takes, one record per WebSocket message: the
    client subscribes and stops reading; the bench publishes ``rate * seconds``
    records straight to a server process (no flow), waits until the server holds
    them all for the client, then lets it read. records/s = received / (last - first
    record at the client), so the server's own speed does not limit it."""
    ws = {"type": "websocket", "host": "127.0.0.1", "port": 0, "processes": 1}
    ws |= {"queue_size": 10_000_000, "max_lag_s": None, "heartbeat_s": 3600}
    ws |= {"batch_ms": batch_ms}
    server = acquire(WebsocketSink.model_validate(ws))
    try:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        target = sdk_client_process if client == "sdk" else recv_loop_process
        proc = ctx.Process(target=target, args=(server.url, seconds + 90, child, True))
        proc.start()
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("client did not connect")
        total = int(rate * seconds)
        # Batches of 10, as the flow hands them over at 10k msg/s (1 ms ticks): with
        # ?arrays=1 (the SDK) each becomes one array message of 10 records.
        for first in range(0, total, 10):
            stamp = time.time_ns() // 1000
            server.publish([_trade(i, stamp) for i in range(first, min(total, first + 10))])
            if first % 10_000 == 0:
                while _status(server.http_url)["records"] < first - 20_000:
                    time.sleep(0.05)  # keep the feed's backlog small: nothing is dropped
        while _status(server.http_url)["records"] < total:
            time.sleep(0.05)
        parent.send("go")
        _, records, messages, dropped, receive_s = parent.recv()
        proc.join(30)
        server_dropped = _status(server.http_url)["dropped"]
    finally:
        release(server)
    return Result(name, 1, rate, total, records, messages, dropped, server_dropped, [], receive_s)


def _trade(i: int, stamp: int) -> dict[str, Any]:
    return make_trade("binance", "BTC/USDT", stamp, stamp, str(i), "60000.10", "0.001", "buy")


def _status(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def _source(symbols: int) -> dict[str, Any]:
    natives = [f"S{i:03d}/USDT" for i in range(symbols)]
    return {"venue": "binance", "mode": "replay", "capture": str(CAPTURE), "symbols": natives}


def _json(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def _ratio(results: dict[str, Result], a: str, b: str, what: str) -> str | None:
    ra, rb = results.get(a), results.get(b)
    if ra is None or rb is None:
        return None
    if what == "p99":
        pa, pb = ra.pct(0.99), rb.pct(0.99)
        if not pa or not pb:
            return None
        return f"p99 {a} / {b}: {pa:.2f} / {pb:.2f} ms = {pa / pb:.2f}x"
    ta = ra.received / ra.receive_s if ra.receive_s else 0.0
    tb = rb.received / rb.receive_s if rb.receive_s else 0.0
    if not ta or not tb:
        return None
    return f"records/s {a} / {b}: {ta:,.0f} / {tb:,.0f} = {ta / tb:.2f}x"


SDK_RATES = ("1k", "5k", "10k")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s runs")
    parser.add_argument("--seconds", type=float, help="seconds of input per scenario (10)")
    parser.add_argument("--rate", type=float, default=10_000, help="frames per second in")
    parser.add_argument("--firehose-rate", type=float, default=1_000)
    parser.add_argument(
        "--max-records", type=int, default=200_000, help="records queued for the *-max runs"
    )
    parser.add_argument("--scenario", action="append", help="run only these (repeatable)")
    parser.add_argument("--py-spy", help="py-spy binary: profile the server and flow processes")
    parser.add_argument("--profile-dir", default="out/bench-fanout-profiles")
    parser.add_argument("--timeline", action="store_true", help="worst latency per 100 ms")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval for the flow's process, seconds (default 0.005)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    global TIMELINE
    TIMELINE = args.timeline
    if args.py_spy:
        PROFILE.update(bin=args.py_spy, dir=args.profile_dir)
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    rate = args.rate
    one = dict(clients=1, symbols=100)
    by_symbol = dict(clients=1000, rate=rate, symbols=100, by_symbol=True, busy=True)
    scenarios: dict[str, dict[str, Any]] = {
        "one-firehose": dict(**one, rate=rate),
        "one-sdk-1k": dict(**one, rate=1_000, client="sdk"),
        "one-sdk-5k": dict(**one, rate=5_000, client="sdk"),
        "one-sdk-10k": dict(**one, rate=rate, client="sdk"),
        "recv-max": dict(rate=args.max_records, client="recv", throughput=True),
        "sdk-max": dict(rate=args.max_records, client="sdk", throughput=True),
        "sdk-max-batched": dict(
            rate=args.max_records, client="sdk", throughput=True, batch_ms=20.0
        ),
        "1000-by-symbol-thread": dict(**by_symbol, processes=0),
        "1000-by-symbol": dict(**by_symbol, processes=1),
        "1000-by-symbol-2proc": dict(**by_symbol, processes=2),
        "1000-by-symbol-batched": dict(**by_symbol, batch_ms=20.0),
        "1000-firehose-batched": dict(
            clients=1000, rate=args.firehose_rate, symbols=100, batch_ms=50.0
        ),
    }
    chosen = args.scenario or list(scenarios)
    print(
        f"# fan-out latency, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {seconds:g} s per run, "
        f"switch interval {sys.getswitchinterval() * 1000:g} ms, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"server code {CODE}"
    )
    print(
        "| scenario | clients | msg/s in | records expected | received | records/s "
        "| p50 ms | p99 ms | p99.9 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results: dict[str, Result] = {}
    for name in chosen:
        spec = dict(scenarios[name])
        if spec.pop("throughput", False):
            runs = [run_throughput(name, seconds=1.0, **spec)]  # rate = records in all
        else:
            runs = run(name, seconds=seconds, **spec)
        for result in runs:
            results[result.name] = result
            print(result.row(), flush=True)
            if result.cpu:
                print(f"  ({result.cpu})", flush=True)
            if result.dropped or result.server_dropped:
                print(
                    f"  (dropped: client saw {result.dropped}, "
                    f"server counted {result.server_dropped})"
                )
    beside = " (raw reader beside it)"
    ratios = [
        *(
            _ratio(results, f"one-sdk-{k}", f"one-sdk-{k}{beside}", "p99")
            for k in ("1k", "5k", "10k")
        ),
        _ratio(results, "sdk-max", "recv-max", "records/s"),
        _ratio(results, "1000-by-symbol-thread", "1000-by-symbol", "p99"),
    ]
    for line in ratios:
        if line is not None:
            print(line)
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
