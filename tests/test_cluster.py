"""``candlewax run`` as a Bytewax cluster: sources spread over the processes, each symbol
processed in the process that reads it, the same records as one process, and a kill -9 of
one process resumed from recovery to the uninterrupted run's bars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from flow_helpers import BTC_SPOT, ETH_SPOT, ROOT, Record, outputs
from services import Services, consume_all, delete_topics, unique

from candlewax.cluster_cmd import cluster_of
from candlewax.config import parse_config
from candlewax.preflight import UserError
from flows.cluster import Place
from flows.inputs import PipelineSource
from flows.outputs import ProcessSink
from flows.runner import run_pipeline

TESTS = Path(__file__).resolve().parent
# An ETHUSDT trade about half way through its capture (trade 3,000 of 6,106).
ETH_HALF_WAY = "1520541924"


def pipeline(out: Path, recovery: Path | None = None, pace: str = "max") -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "cluster",
        # Listed symbols: two sources of one venue that might share one go to one process.
        "sources": [
            {"venue": "binance", "mode": "replay", "capture": str(c), "pace": pace, "symbols": [s]}
            for c, s in ((BTC_SPOT, "BTC/USDT"), (ETH_SPOT, "ETH/USDT"))
        ],
        "operators": {
            "ohlcv": {"intervals": ["1s", "1m"]},
            "user": [{"path": "user_ops:cluster_probe", "channels": ["trades"]}],
        },
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    if recovery is not None:
        data["recovery"] = {"dir": str(recovery), "snapshot_interval_s": 0.2}
    return data


def run_cluster(
    data: dict[str, Any], tmp: Path, name: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "candlewax.cli", "run", str(path), "-p", "2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(TESTS), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def series(out: dict[str, list[Record]]) -> dict[tuple[Any, ...], list[Record]]:
    """Records per file and series (a symbol's trades, its bars of one interval, its
    books, ...), each series in its order."""
    by: dict[tuple[Any, ...], list[Record]] = {}
    for file, records in out.items():
        for r in records:
            key = (file, r.get("symbol"), r["type"], r.get("interval"))
            by.setdefault(key, []).append(r)
    return by


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Record]]:
    out = tmp_path_factory.mktemp("one")
    run_pipeline(parse_config(pipeline(out), env={}))
    return outputs(out)


# ---- placement ----


def sources(*specs: tuple[str, list[str]]) -> Any:
    return parse_config(
        {
            "sources": [
                {"venue": venue, "mode": "replay", "capture": str(BTC_SPOT), "symbols": symbols}
                for venue, symbols in specs
            ],
            "sinks": [{"type": "null"}],
        },
        env={},
    )


def test_each_process_lists_its_own_sources() -> None:
    cfg = sources(("binance", ["BTC/USDT"]), ("binance", ["ETH/USDT"]), ("okx", []))
    assert PipelineSource(cfg).list_parts() == ["0-binance", "1-binance", "2-okx"]
    assert PipelineSource(cfg, Place(0, 2)).list_parts() == ["0-binance", "2-okx"]
    assert PipelineSource(cfg, Place(1, 2)).list_parts() == ["1-binance"]
    assert PipelineSource(cfg, Place(3, 4)).list_parts() == []


def test_sources_that_may_share_a_symbol_share_a_partition() -> None:
    # Same venue and a common symbol, or a source of every symbol of its capture: one
    # partition, so that each venue:symbol has one state (one dedupe, one book).
    cfg = sources(
        ("binance", ["BTC/USDT", "ETH/USDT"]),
        ("okx", ["BTC/USDT"]),
        ("binance", ["ETH/USDT"]),
        ("okx", ["ETH/USDT"]),
        ("binance-usdm", []),
        ("binance-usdm", ["BTC/USDT:USDT"]),
    )
    assert PipelineSource(cfg).list_parts() == [
        "0-binance+2-binance",
        "1-okx",
        "3-okx",
        "4-binance-usdm+5-binance-usdm",
    ]


def test_a_process_sink_writes_through_its_own_partition() -> None:
    parts = [f"{i}-binance" for i in range(12)]
    sinks = [ProcessSink("k", lambda: None, parts, Place(p, 3)) for p in range(3)]
    # Names follow the sources, not the process count: a store resumes on a rescaled cluster.
    assert sinks[1].list_parts() == ["k@1-binance", "k@4-binance", "k@7-binance", "k@10-binance"]
    assert sinks[0].list_parts()[-1] == "k"  # stage 2's one partition, and older stores'
    # Bytewax indexes part_fn's answer into every partition's name, sorted ("10" < "2").
    everyone = sorted(part for s in sinks for part in s.list_parts())
    assert len(everyone) == len(set(everyone)) == 13
    for p, sink in enumerate(sinks):
        assert everyone[sink.part_fn("binance:BTC/USDT")] == f"k@{p}-binance"
    stage2 = ProcessSink("k", lambda: None, [], Place(1, 2))
    assert stage2.list_parts() == [] and stage2.part_fn("okx:BTC/USDT") == 0


# ---- where a process stands ----


class Args:
    def __init__(self, addresses: str | None = None, process_id: int | None = None) -> None:
        self.addresses = addresses
        self.process_id = process_id


def test_cluster_from_arguments_and_from_a_statefulset(tmp_path: Path) -> None:
    assert cluster_of(Args(), {}) is None
    here = cluster_of(Args("127.0.0.1:2101,10.0.0.2:2101", 1), {})
    assert here is not None and (here.addresses, here.index) == (
        ["127.0.0.1:2101", "10.0.0.2:2101"],
        1,
    )
    hostfile = tmp_path / "hosts"
    hostfile.write_text("cw-0.cw:2101\ncw-1.cw:2101\n\ncw-2.cw:2101\n")
    pod = {
        "BYTEWAX_POD_NAME": "cw-2",
        "BYTEWAX_STATEFULSET_NAME": "cw",
        "BYTEWAX_HOSTFILE_PATH": str(hostfile),
    }
    there = cluster_of(Args(), pod)
    assert there is not None and there.index == 2
    assert there.addresses == ["cw-0.cw:2101", "cw-1.cw:2101", "cw-2.cw:2101"]
    env = {"BYTEWAX_PROCESS_ID": "0", "BYTEWAX_ADDRESSES": "a:1;b:2"}
    assert cluster_of(Args(), env) == cluster_of(Args("a:1,b:2", 0), {})


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (Args("127.0.0.1", 0), {}, "bad cluster address '127.0.0.1'"),
        (Args("h:1,h:99999", 0), {}, "bad cluster address 'h:99999'"),
        (Args("h:1,h:2", 2), {}, "process index 2 is out of range for 2 address(es)"),
        (Args(None, 1), {}, "no addresses"),
        (Args("h:1,h:2", None), {}, "add -i <index>"),
        (Args(), {"BYTEWAX_POD_NAME": "web-1", "BYTEWAX_STATEFULSET_NAME": "cw"}, "'cw-<index>'"),
        (
            Args(),
            {"BYTEWAX_PROCESS_ID": "0", "BYTEWAX_HOSTFILE_PATH": "/nonexistent/hosts"},
            "cannot read BYTEWAX_HOSTFILE_PATH",
        ),
    ],
)
def test_a_bad_cluster_setting_is_a_user_error(
    args: Args, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(UserError) as caught:
        cluster_of(args, env)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cluster_errors_on_the_command_line_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path / "out")))
    for extra, needle in (
        (["-a", "127.0.0.1:1,127.0.0.1:2", "-i", "5"], "process index 5 is out of range"),
        (["-a", "nohost", "-i", "0"], "bad cluster address 'nohost'"),
        (["-p", "2", "-i", "0"], "use either"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "candlewax.cli", "run", str(path), *extra],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith("candlewax run: ") and needle in lines[0]


# ---- whole runs ----


def test_two_processes_write_what_one_process_writes(
    tmp_path: Path, one_process: dict[str, list[Record]]
) -> None:
    log = tmp_path / "log"
    log.mkdir()
    proc = run_cluster(
        pipeline(tmp_path / "out"), tmp_path, "two", {"CANDLEWAX_TEST_PROCESS_LOG": str(log)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = outputs(tmp_path / "out")
    assert sum(map(len, two.values())) == sum(map(len, one_process.values())) > 70_000
    # Same records per series, in the same order (and so the same multisets).
    assert series(two) == series(one_process)
    for file in two:
        assert Counter(map(repr, two[file])) == Counter(map(repr, one_process[file]))
    # Each symbol's trades were handled in one process, the two symbols in two processes.
    handled = [name.split(" ") for name in os.listdir(log)]
    assert sorted(symbol for _, symbol in handled) == ["BTC-USDT", "ETH-USDT"]
    assert len({pid for pid, _ in handled}) == 2


def test_kill_9_of_one_process_resumes_to_the_uninterrupted_bars(
    tmp_path: Path, one_process: dict[str, list[Record]]
) -> None:
    state = tmp_path / "state"
    kill = {"CANDLEWAX_TEST_KILL_AT": ETH_HALF_WAY, "CANDLEWAX_TEST_KILL_STORE": str(state)}
    # Paced, so that epochs are committed before the kill (the probe also waits for one).
    first = run_cluster(pipeline(tmp_path / "first", state, "100x"), tmp_path, "first", kill)
    assert first.returncode != 0  # one process killed, the other lost its peer
    assert "lost its connection to another process" in first.stderr
    second = run_cluster(pipeline(tmp_path / "second", state, "100x"), tmp_path, "second")
    assert second.returncode == 0, second.stderr[-3000:]

    def key(bar: Record) -> tuple[str, str, int]:
        return (bar["symbol"], bar["interval"], bar["start"])

    before, after = outputs(tmp_path / "first"), outputs(tmp_path / "second")
    finals = [b for b in before["bars"] + after["bars"] if b["final"]]
    expected = {key(b): b for b in one_process["bars"]}
    assert {key(b): b for b in finals} == expected
    duplicates = len(finals) - len({key(b) for b in finals})
    print(f"final bars: {len(expected)}, written twice across the kill: {duplicates}")
    # The resumed run went on from a snapshot, not from the start of the captures.
    assert 0 < len(after["trades"]) < len(one_process["trades"])
    assert not before["late"] and not after["late"]


def test_two_processes_publish_to_kafka_what_one_process_writes(
    services: Services, tmp_path: Path, one_process: dict[str, list[Record]]
) -> None:
    # Each process produces its own symbols' records (a per-process sink partition,
    # checkpointed at every epoch end: recovery on).
    prefix = unique("cluster")
    data = pipeline(tmp_path / "out", tmp_path / "state")
    data["sinks"] = [{"type": "kafka", "brokers": [services.kafka], "topic_prefix": prefix}]
    try:
        proc = run_cluster(data, tmp_path, "kafka")
        assert proc.returncode == 0, proc.stderr[-3000:]
        published = {
            name: [orjson.loads(m.value) for m in consume_all(services.kafka, f"{prefix}.{topic}")]
            for name, topic in (("trades", "norm.trades"), ("bars", "norm.bars"))
        }
    finally:
        delete_topics(services.kafka, prefix)
    for name, records in published.items():
        got = series({name: records})
        assert got == series({name: one_process[name]}), name


def test_a_shared_partition_reads_each_source_once_and_resumes_each() -> None:
    cfg = parse_config(
        {
            "sources": [
                {"venue": "binance", "mode": "replay", "capture": str(c)}
                for c in (BTC_SPOT, ETH_SPOT)
            ],
            "sinks": [{"type": "null"}],
        },
        env={},
    )
    source = PipelineSource(cfg)
    (name,) = source.list_parts()  # no symbols listed: they may share one
    assert name == "0-binance+1-binance"
    part = source.build_part("input", name, {"0-binance": 100, "1-binance": 50})
    frames: list[Any] = []
    while True:
        try:
            frames.extend(part.next_batch())
        except StopIteration:
            break
    btc = [f for f in frames if '"s":"BTCUSDT"' in f.text or "btcusdt@" in f.text]
    assert len(frames) == 41_249 - 100 + 33_618 - 50
    assert 0 < len(btc) < len(frames)
    assert part.snapshot() == {"0-binance": 41_249, "1-binance": 33_618}


def test_ctrl_c_stops_every_process_and_flushes_their_bars(tmp_path: Path) -> None:
    path = tmp_path / "paced.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path / "out", pace="20x")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "candlewax.cli", "run", str(path), "-p", "2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stderr=subprocess.PIPE,
        text=True,
    )
    trades = tmp_path / "out" / "trades.jsonl"
    try:
        deadline = time.monotonic() + 300
        # Until both processes are under way (a limit, not a measurement).
        while time.monotonic() < deadline and not (
            trades.exists() and all(s in trades.read_text() for s in ("BTC/USDT", "ETH/USDT"))
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # to the launcher only, as `kill -INT` would
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    out = outputs(tmp_path / "out")
    # Both processes ended their sources early and flushed every open window as final bars.
    assert 0 < len(out["trades"]) < 15_863
    assert {b["symbol"] for b in out["bars"]} == {"BTC/USDT", "ETH/USDT"}
    assert all(b["final"] for b in out["bars"])
