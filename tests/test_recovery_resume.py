"""A replay stopped half way and resumed from Bytewax recovery gives the direct run's bars."""

from __future__ import annotations

import gzip
from pathlib import Path

from flow_helpers import BTC_SPOT, outputs

from candlewax.config import parse_config
from flows.runner import run_pipeline


def run(capture: Path, out: Path, recovery: Path | None) -> dict[str, list[dict]]:
    data: dict = {
        "sources": [{"venue": "binance", "mode": "replay", "capture": str(capture)}],
        "operators": {"ohlcv": {"intervals": ["1s", "1m"]}, "book": {"emit_interval_ms": 1000}},
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    if recovery is not None:
        data["recovery"] = {"dir": str(recovery), "snapshot_interval_s": 1}
    run_pipeline(parse_config(data, env={}))
    return outputs(out)


def test_resumed_run_continues_open_windows_and_books(tmp_path: Path) -> None:
    lines = gzip.decompress(BTC_SPOT.read_bytes()).splitlines(keepends=True)
    half = tmp_path / "half.txt.gz"
    half.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))
    state = tmp_path / "state"

    direct = run(BTC_SPOT, tmp_path / "direct", None)
    first = run(half, tmp_path / "first", state)
    second = run(BTC_SPOT, tmp_path / "second", state)  # resumes after the first half

    def key(bar: dict) -> tuple:
        return (bar["interval"], bar["start"])

    finals = {key(b): b for b in first["bars"] + second["bars"] if b["final"]}
    expected = {key(b): b for b in direct["bars"]}
    # The end of a resumable run leaves its windows open (in-progress bars, not final)...
    assert not [b for b in first["bars"] if b["final"] and key(b) not in expected]
    # ...the resumed run closes them, and its own end again leaves the last ones open.
    open_at_end = {key(b): b for b in second["bars"] if not b["final"]}
    assert open_at_end
    for k, bar in expected.items():
        if k in open_at_end:
            assert open_at_end[k] == {**bar, "final": False}
        else:
            assert finals[k] == bar
    assert not first["late"] and not second["late"]
    # Books go on after the resume (the emit clock was not pushed to the far future).
    assert [r for r in second["book"] if r["type"] == "book"]
