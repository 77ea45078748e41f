"""`candlewax bench`: output shape, frame and record counts, 1 and 2 processes (no timing)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from flow_helpers import BTC_SPOT, ETH_SPOT, OKX_V5
from golden_outputs import CAPTURES, load_manifest

from candlewax.bench_cmd import bench_config, capture_symbols
from candlewax.cli import main
from flows.bench_run import owned
from sources.replay import read_capture

SLICE = 3000


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["bench", *args, "--json"]) == 0
    out: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return out


def _golden_records(capture: Path) -> int:
    """Records `candlewax replay` writes for the capture (fixtures/golden)."""
    files = load_manifest(capture.relative_to(CAPTURES).as_posix())["files"]
    return sum(f["records"] for f in files.values())


def test_json_has_frames_and_every_round(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench(capsys, str(OKX_V5), "--venue", "okx", "--rounds", "2")
    frames = len(list(read_capture(OKX_V5, "okx")))
    assert result["frames"] == frames == 410
    assert result["processes"] == 1
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        assert set(r) == {"seconds", "frames_per_s", "frames", "records", "cpu_seconds"}
        assert r["seconds"] > 0
        assert r["frames_per_s"] == pytest.approx(frames / r["seconds"])
        assert r["frames"] == frames
        # the same pipeline as `candlewax replay`: as many records as it writes
        assert r["records"] == _golden_records(OKX_V5)


@pytest.fixture(scope="module")
def spot_slices(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The first 3,000 lines of the BTCUSDT and ETHUSDT captures (snapshots included): two
    captures of one venue with different symbols."""
    out = tmp_path_factory.mktemp("slices")
    paths = []
    for capture in (BTC_SPOT, ETH_SPOT):
        with gzip.open(capture, "rt") as f:
            head = [next(f) for _ in range(SLICE)]
        path = out / capture.name
        with gzip.open(path, "wt") as f:
            f.writelines(head)
        paths.append(str(path))
    return paths


def test_two_processes_process_every_frame_once(
    spot_slices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    btc = _bench(capsys, spot_slices[0], "--venue", "binance", "--rounds", "1")
    eth = _bench(capsys, spot_slices[1], "--venue", "binance", "--rounds", "1")
    one = _bench(capsys, *spot_slices, "--venue", "binance", "--rounds", "1")
    two = _bench(capsys, *spot_slices, "--venue", "binance", "--rounds", "2", "--processes", "2")
    assert btc["frames"] == eth["frames"] == SLICE
    assert one["frames"] == two["frames"] == 2 * SLICE
    assert two["processes"] == 2
    records = btc["rounds"][0]["records"] + eth["rounds"][0]["records"]
    assert one["rounds"][0]["records"] == records
    for r in two["rounds"]:
        assert r["frames"] == 2 * SLICE  # emitted by the two processes together, once each
        assert r["records"] == records


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(OKX_V5), "--venue", "okx", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "410 frames from 1 capture(s), 1 process, null sink"
    assert lines[1].startswith("round 1: 410 frames in ")
    assert f"frames/s ({_golden_records(OKX_V5):,} records, " in lines[1]


def test_captures_are_spread_by_index() -> None:
    # (A capture's symbols are listed, as the bench lists them; see the next test.)
    five = bench_config([OKX_V5] * 5, "okx", "1m", [[f"{c}/USDT"] for c in "ABCDE"])
    assert owned(five, 0, 2) == [0, 2, 4]
    assert owned(five, 1, 2) == [1, 3]
    one = bench_config([OKX_V5], "okx", "1m", [["A/USDT"]])
    assert owned(one, 1, 2) == []


def test_captures_that_may_share_a_symbol_are_read_together() -> None:
    cfg = bench_config([OKX_V5] * 3, "okx", "1m", [["A/USDT"], ["B/USDT"], ["A/USDT"]])
    assert owned(cfg, 0, 2) == [0, 2]
    assert owned(cfg, 1, 2) == [1]
    assert capture_symbols(bench_config([OKX_V5], "okx", "1m")) == [
        ["BTC/USD:BTC-220527", "BTC/USDT", "UNI/USD:UNI"]
    ]


def test_missing_capture_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "nope.gz"), "--venue", "okx"]) == 2
    err = capsys.readouterr().err
    assert "nope.gz' does not exist" in err
    assert "Traceback" not in err


def test_a_capture_of_another_venue_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: it was "benchmarked" as 410 dead letters, exit 0.
    assert main(["bench", str(OKX_V5), "--venue", "binance"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "capture 1:" in err and "--venue okx" in err


def test_processes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(OKX_V5), "--venue", "okx", "--processes", "0"])
    assert exc.value.code == 2
    assert "--processes: must be at least 1, got 0" in capsys.readouterr().err
