"""The benchmark's three ways of running the pipeline do the same work (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bytewax.testing import run_main
from flow_helpers import outputs

from bench.pipeline import (
    bench_config,
    load_frames,
    merged,
    run_dataflow,
    run_plain_batched,
    run_plain_loop,
)
from candlewax.config import parse_config
from candlewax.schema import make_status
from flows import outputs as flow_outputs
from flows.inputs import MemorySource
from flows.pipeline import build_flow
from flows.runner import run_pipeline
from sources.frames import RawFrame

FRAMES = 6000


@pytest.fixture(scope="module")
def streams() -> dict[str, list[RawFrame]]:
    return load_frames(FRAMES)


def test_subset_holds_both_symbols_and_their_snapshots(streams: dict[str, list[RawFrame]]) -> None:
    assert len(merged(streams)) == FRAMES
    for symbol, frames in streams.items():
        native = symbol.replace("/", "")
        assert [f.hint for f in frames if f.hint] == [f"depth_snapshot:{native}"]


def test_dataflow_and_plain_loops_emit_the_same_records(
    streams: dict[str, list[RawFrame]],
) -> None:
    cfg = bench_config()
    frames = merged(streams)
    expected = run_plain_loop(cfg, frames)
    assert expected > FRAMES * 0.9  # bbo, trades, bars and books of both symbols
    assert run_plain_batched(cfg, frames, 128) == expected
    for batch in (1, 128, 2000):
        assert run_dataflow(cfg, streams, 1, batch) == expected, batch
    assert run_dataflow(cfg, streams, 2, 128) == expected


def test_source_status_dicts_pass_through_normalize(
    streams: dict[str, list[RawFrame]], tmp_path: Path
) -> None:
    cfg = parse_config(
        {
            "sources": [{"venue": "binance", "symbols": ["BTC/USDT"], "mode": "live"}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path)}],
        }
    )
    status = make_status("binance", "BTC/USDT", "connected", 1, "test")
    items = [status, *streams["BTC/USDT"][:500]]
    run_main(build_flow(cfg, source=MemorySource({"mem": items}, batch_size=64)))
    out = outputs(tmp_path)
    assert out["status"] == [status]
    assert out["trades"]
    assert not out["dead_letter"]


def test_null_sink_counts_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = bench_config().model_copy(update={"sources": bench_config().sources[:1]})
    flow_outputs.NULL_WRITTEN.clear()
    run_pipeline(cfg)
    assert flow_outputs.NULL_WRITTEN["sink_0_null"] > 40_000
    assert list(tmp_path.iterdir()) == []
