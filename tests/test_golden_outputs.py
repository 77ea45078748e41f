"""`candlewax replay` of every bundled capture writes exactly the golden outputs.

The goldens (fixtures/golden/) were written by scripts/regen_goldens.py before the hot-path
redesign of issue 8: every record, byte for byte, in the same order per series (trades of a
symbol, bars of a symbol and interval, ...). A speed-up must keep them; regenerating is only
for an intended change of the output (docs/benchmarks.md, "Golden outputs").
"""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
from golden_outputs import (
    OUTPUT_FILES,
    VENUES,
    bundled_captures,
    capture_sha,
    compare,
    describe,
    golden_dir,
    load_manifest,
    read_lines,
    replay_config,
    report,
    run_replay,
)

from flows.runner import run_pipeline


def test_every_bundled_capture_has_a_golden() -> None:
    assert bundled_captures() == sorted(VENUES), (
        "a capture without a venue/golden: add it to VENUES in tests/golden_outputs.py and run "
        "scripts/regen_goldens.py --capture <it>"
    )
    for capture in VENUES:
        manifest = load_manifest(capture)
        assert manifest["capture_sha256"] == capture_sha(capture), f"{capture} changed"


@pytest.mark.parametrize("capture", sorted(VENUES))
def test_golden_copies_match_their_manifest(capture: str) -> None:
    files = load_manifest(capture)["files"]
    assert sorted(files) == sorted(f"{name}.jsonl" for name in OUTPUT_FILES)
    for file, want in files.items():
        copy = golden_dir(capture) / f"{file}.xz"
        assert copy.exists() == (want["records"] > 0), copy
        assert describe(read_lines(copy)) == want, copy


@pytest.mark.parametrize("capture", sorted(VENUES))
def test_replay_writes_the_golden_outputs(capture: str, tmp_path: Path) -> None:
    run_replay(capture, tmp_path)
    differences = compare(capture, tmp_path)
    assert not differences, report(capture, differences)


def test_two_workers_write_the_same_series(tmp_path: Path) -> None:
    """Four symbols on two workers: the flow interleaves them differently, each series
    stays the same."""
    capture = "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
    run_pipeline(replay_config(capture, tmp_path, workers=2))
    differences = compare(capture, tmp_path)
    assert not differences, report(capture, differences)


def _golden_outputs(capture: str, out: Path) -> dict[str, list[bytes]]:
    """The golden files of ``capture`` written back to ``out`` as plain JSONL."""
    lines = {}
    for name in OUTPUT_FILES:
        copy = golden_dir(capture) / f"{name}.jsonl.xz"
        data = lzma.decompress(copy.read_bytes()) if copy.exists() else b""
        (out / f"{name}.jsonl").write_bytes(data)
        lines[name] = data.splitlines()
    return lines


def _write(out: Path, name: str, lines: list[bytes]) -> None:
    (out / f"{name}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def test_compare_catches_a_one_character_change(tmp_path: Path) -> None:
    capture = "binance/hftbacktest_spot_ethusdt_20240808.txt.gz"
    bars = _golden_outputs(capture, tmp_path)["bars"]
    assert compare(capture, tmp_path) == []
    i = len(bars) // 2
    changed = bars[i].replace(b'"trades":', b'"trades":1', 1)  # e.g. 37 -> 137 trades
    assert changed != bars[i]
    _write(tmp_path, "bars", [*bars[:i], changed, *bars[i + 1 :]])
    (difference,) = compare(capture, tmp_path)
    assert difference.file == "bars.jsonl"
    assert "differs at character" in difference.message
    assert changed.decode() in difference.message


def test_compare_catches_reordered_and_missing_records(tmp_path: Path) -> None:
    capture = "binance/hftbacktest_spot_ethusdt_20240808.txt.gz"
    trades = _golden_outputs(capture, tmp_path)["trades"]
    _write(tmp_path, "trades", [trades[1], trades[0], *trades[2:]])
    (reordered,) = compare(capture, tmp_path)
    assert "record 0 differs" in reordered.message
    _write(tmp_path, "trades", trades[:-1])
    (missing,) = compare(capture, tmp_path)
    assert "1 record(s) missing" in missing.message


def test_compare_allows_other_interleaving_of_series(tmp_path: Path) -> None:
    """Bars of 1s and 1m (two series) in another order in the file: still equal."""
    capture = "binance/hftbacktest_spot_ethusdt_20240808.txt.gz"
    bars = _golden_outputs(capture, tmp_path)["bars"]
    _write(tmp_path, "bars", sorted(bars, key=lambda line: b'"interval":"1m"' not in line))
    assert compare(capture, tmp_path) == []
