"""Bytewax recovery: the end of a finite input closes the bar windows as without recovery;
a run stopped early leaves them open, and the resumed run gives the direct run's bars."""

from __future__ import annotations

from pathlib import Path

import pytest
import user_ops
from flow_helpers import BTC_SPOT, outputs

from candlewax.config import parse_config
from flows.runner import run_pipeline


def run(out: Path, recovery: Path | None, stop_at: str | None = None) -> dict[str, list[dict]]:
    data: dict = {
        "sources": [{"venue": "binance", "mode": "replay", "capture": str(BTC_SPOT)}],
        "operators": {
            "ohlcv": {"intervals": ["1s", "1m"]},
            "book": {"emit_interval_ms": 1000},
            # The same flow in every run (recovery keys state by step); it only acts
            # while STOP_AT is set.
            "user": [{"path": "user_ops:stop_at", "channels": ["trades"]}],
        },
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    if recovery is not None:
        data["recovery"] = {"dir": str(recovery), "snapshot_interval_s": 1}
    user_ops.STOP_AT = stop_at
    try:
        run_pipeline(parse_config(data, env={}))
    finally:
        user_ops.STOP_AT = None
    return outputs(out)


def key(bar: dict) -> tuple[str, int]:
    return (bar["interval"], bar["start"])


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return run(tmp_path_factory.mktemp("direct"), None)


def test_finite_replay_with_recovery_closes_its_windows(
    tmp_path: Path, direct: dict[str, list[dict]]
) -> None:
    state = tmp_path / "state"
    assert all(bar["final"] for bar in direct["bars"])
    assert run(tmp_path / "once", state)["bars"] == direct["bars"]
    # Run again on the finished state: the capture is done, nothing comes out twice.
    assert run(tmp_path / "again", state)["bars"] == []


def test_stopped_run_resumes_to_the_direct_runs_bars(
    tmp_path: Path, direct: dict[str, list[dict]]
) -> None:
    state = tmp_path / "state"
    first = run(tmp_path / "first", state, stop_at="3735688000")  # about half way
    second = run(tmp_path / "second", state)  # resumes after what the first one read

    expected = {key(b): b for b in direct["bars"]}
    # The stopped run leaves its windows open (in-progress bars, not final)...
    open_at_stop = [b for b in first["bars"] if not b["final"]]
    assert open_at_stop and len(first["bars"]) < len(expected)
    for bar in open_at_stop:
        assert key(bar) in expected
    # ...the resumed run continues them, and the end of the capture closes everything.
    assert all(bar["final"] for bar in second["bars"])
    finals = [key(b) for b in first["bars"] + second["bars"] if b["final"]]
    assert len(finals) == len(set(finals)) == len(expected)
    assert {key(b): b for b in first["bars"] + second["bars"] if b["final"]} == expected
    assert not first["late"] and not second["late"]
    # Books go on after the resume (the emit clock was not pushed to the far future).
    assert [r for r in second["book"] if r["type"] == "book"]
