"""``candlewax bench``: frames/s of the production dataflow over captures held in memory.

The captures are read into memory first (not timed); then the dataflow of ``candlewax
replay`` (normalize, dedupe, book top-20 + BBO, OHLCV, here with a ``null`` sink) runs over
them, ``--rounds`` times from fresh state. With ``--processes N`` the captures are spread
over N processes of one Bytewax cluster, one worker each (process *p* reads captures *p*,
*p + N*, ... and processes their symbols itself, as ``candlewax run -p N`` does with
configured sources; see ``flows.bench_run``), and a round runs from every process having
loaded its frames and built its flow to the last process finished.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from candlewax.cluster_cmd import free_addresses, wait_listening
from candlewax.config import ConfigError, PipelineConfig, parse_config

# A process that stops answering (crashed without a word) ends the bench after this long.
_REPLY_TIMEOUT_S = 600.0


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="frames/s of the pipeline over captures in memory (null sink)",
        description="Loads the captures into memory (not timed), then runs the full default "
        "pipeline over them with a null sink and prints frames, seconds and frames/s per "
        "round. With --processes N the captures are spread over N processes of one Bytewax "
        "cluster (capture i goes to process i mod N).",
    )
    bench.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE", help="capture files")
    bench.add_argument("--venue", required=True, help="venue the captures were recorded from")
    bench.add_argument("--processes", type=_positive, default=1, help="cluster processes (1)")
    bench.add_argument("--rounds", type=_positive, default=3, help="timed runs (3)")
    bench.add_argument("--intervals", default="1s,1m", help="bar intervals (1s,1m)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bench_config(
    captures: list[Path], venue: str, intervals: str, symbols: list[list[str]] | None = None
) -> PipelineConfig:
    """The pipeline of ``candlewax replay``, one source per capture (listing ``symbols[i]``,
    see ``capture_symbols``), a null sink."""
    listed = symbols if symbols is not None else [[] for _ in captures]
    return parse_config(
        {
            "name": "bench",
            "sources": [
                {"venue": venue, "mode": "replay", "capture": str(path), "symbols": names}
                for path, names in zip(captures, listed, strict=True)
            ],
            "operators": {
                "ohlcv": {"intervals": [i.strip() for i in intervals.split(",") if i.strip()]}
            },
            "sinks": [{"type": "null"}],
        },
        "candlewax bench",
        env={},
    )


def capture_symbols(cfg: PipelineConfig) -> list[list[str]]:
    """Every symbol of each capture (read once, not timed). Listed in the bench's sources,
    they let captures of different symbols be read in different processes, as configured
    sources with their symbols listed are (sources that may share a symbol share a
    partition, flows/cluster.py)."""
    from flows.pipeline import build_normalizer
    from sources.replay import CaptureError, read_capture

    parsers = build_normalizer(cfg).parsers
    out: list[list[str]] = []
    for src in cfg.sources:
        assert src.capture is not None
        parser = parsers[src.venue]
        try:
            names = {parser.symbol_of(frame) for frame in read_capture(src.capture, src.venue)}
        except CaptureError as exc:
            raise ConfigError(f"candlewax bench: {exc}") from None
        out.append(sorted(name for name in names if name))
    return out


def load_frames(cfg: PipelineConfig, which: list[int]) -> list[list[Any]]:
    """The frames of the captures ``which`` (others stay empty), as replay would emit them."""
    from sources.replay import CaptureError, read_capture

    loaded: list[list[Any]] = [[] for _ in cfg.sources]
    for i in which:
        src = cfg.sources[i]
        assert src.capture is not None
        try:
            loaded[i] = list(read_capture(src.capture, src.venue))
        except CaptureError as exc:
            raise ConfigError(f"candlewax bench: {exc}") from None
    # Input, not what is measured: the cyclic GC would walk every frame in each full pass.
    gc.collect()
    gc.freeze()
    return loaded


@dataclass
class Round:
    seconds: float
    frames: int  # emitted by the sources of all processes
    records: int  # written to the null sink
    cpu_seconds: float  # CPU time of all processes during the run
    # (frames emitted, records written, CPU seconds) of each process, with --processes
    per_process: list[tuple[int, int, float]] | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds


def _count_records() -> int:
    from flows.outputs import NULL_WRITTEN

    return sum(NULL_WRITTEN.values())


def _build(cfg: PipelineConfig, frames: list[list[Any]], place: Any = None) -> Any:
    from flows.bench_run import OwnedMemorySource
    from flows.cluster import SINGLE
    from flows.outputs import NULL_WRITTEN
    from flows.pipeline import build_flow

    NULL_WRITTEN.clear()
    place = SINGLE if place is None else place
    return build_flow(cfg, source=OwnedMemorySource(cfg, frames, place), place=place)


def bench_here(cfg: PipelineConfig, rounds: int) -> tuple[int, list[Round]]:
    """Every capture in this process, one worker."""
    from flows import bench_run

    frames = load_frames(cfg, list(range(len(cfg.sources))))
    results = []
    for _ in range(rounds):
        flow = _build(cfg, frames)
        start, cpu = time.perf_counter(), time.process_time()
        bench_run.run_here(flow)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results.append(Round(seconds, bench_run.EMITTED[0], _count_records(), cpu))
    return sum(map(len, frames)), results


def _member(
    conn: Connection,
    args: tuple[list[Path], str, str, list[list[str]]],
    processes: int,
    process_id: int,
) -> None:
    """One cluster process: load its captures, then per round build the flow, say ready,
    wait for the addresses, run, report (frames emitted, records written, CPU seconds)."""
    from flows import bench_run
    from flows.cluster import Place

    cfg = bench_config(*args)
    mine = bench_run.owned(cfg, process_id, processes)
    frames = load_frames(cfg, mine)
    conn.send(sum(map(len, frames)))
    while True:
        flow = _build(cfg, frames, Place(process_id, processes))
        conn.send("ready")
        addresses = conn.recv()
        if addresses is None:
            return
        cpu = time.process_time()
        bench_run.run_cluster_process(flow, addresses, process_id)
        conn.send((bench_run.EMITTED[0], _count_records(), time.process_time() - cpu))


def _reply(conn: Connection, process: Any) -> Any:
    if not conn.poll(_REPLY_TIMEOUT_S):
        raise RuntimeError(f"bench process {process.name} did not answer")
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"bench process {process.name} exited ({process.exitcode})") from None


def bench_cluster(
    args: tuple[list[Path], str, str, list[list[str]]], processes: int, rounds: int
) -> tuple[int, list[Round]]:
    """One Bytewax cluster of ``processes`` processes (spawned: no state forked from here);
    ``args`` are those of ``bench_config``."""
    ctx = multiprocessing.get_context("spawn")
    members = []
    for pid in range(processes):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_member, args=(there, args, processes, pid), name=f"bench-{pid}")
        proc.start()
        there.close()
        members.append((here, proc))
    try:
        loaded = sum(_reply(conn, proc) for conn, proc in members)
        results = []
        for _ in range(rounds):
            for conn, proc in members:
                if _reply(conn, proc) != "ready":
                    raise RuntimeError(f"bench process {proc.name} is out of step")
            addresses = free_addresses(processes)
            start = time.perf_counter()
            for pid, (conn, _) in enumerate(members):
                conn.send(addresses)
                if pid < processes - 1:
                    wait_listening(addresses[pid])
            done = [_reply(conn, proc) for conn, proc in members]
            seconds = time.perf_counter() - start
            frames, records, cpu = (sum(d[i] for d in done) for i in range(3))
            results.append(Round(seconds, frames, records, cpu, [tuple(d) for d in done]))
        for conn, proc in members:
            _reply(conn, proc)  # "ready" for a round that will not come
            conn.send(None)
        for _, proc in members:
            proc.join(timeout=30)
        return loaded, results
    finally:
        for conn, proc in members:
            conn.close()
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def run_bench(args: argparse.Namespace) -> int:
    cfg = bench_config(args.captures, args.venue, args.intervals)  # bad venue/capture: one line
    from candlewax.preflight import preflight

    # A capture of another venue would be timed as dead letters: refuse it as replay does.
    preflight(cfg, {f"sources[{i}]": f"capture {i + 1}" for i in range(len(cfg.sources))})
    config_args = (args.captures, args.venue, args.intervals, capture_symbols(cfg))
    cfg = bench_config(*config_args)
    try:
        if args.processes == 1:
            frames, results = bench_here(cfg, args.rounds)
        else:
            frames, results = bench_cluster(config_args, args.processes, args.rounds)
        for r in results:
            if r.frames != frames:
                # Every frame must be processed exactly once, whatever the processes.
                raise RuntimeError(f"the sources emitted {r.frames:,} frames of {frames:,}")
    except RuntimeError as exc:
        print(f"candlewax bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = {
            "frames": frames,
            "processes": args.processes,
            "captures": [str(p) for p in args.captures],
            "rounds": [
                {
                    "seconds": r.seconds,
                    "frames_per_s": r.frames_per_s,
                    "frames": r.frames,
                    "records": r.records,
                    "cpu_seconds": r.cpu_seconds,
                    **(
                        {}
                        if r.per_process is None
                        else {
                            "per_process": [
                                {"frames": f, "records": n, "cpu_seconds": c}
                                for f, n, c in r.per_process
                            ]
                        }
                    ),
                }
                for r in results
            ],
        }
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        return 0
    who = "1 process" if args.processes == 1 else f"{args.processes} processes"
    print(f"{frames:,} frames from {len(args.captures)} capture(s), {who}, null sink")
    for i, r in enumerate(results, 1):
        print(
            f"round {i}: {r.frames:,} frames in {r.seconds:.3f} s = {r.frames_per_s:,.0f} "
            f"frames/s ({r.records:,} records, {r.cpu_seconds:.3f} CPU s)"
        )
    return 0
