"""Golden outputs: what `candlewax replay` writes for every bundled capture, frozen.

Used by tests/test_golden_outputs.py (compare) and scripts/regen_goldens.py (write).
docs/benchmarks.md ("Golden outputs") says when regenerating is allowed.

Per capture, ``fixtures/golden/<venue dir>/<capture name without .gz>/`` holds

- ``manifest.json``: the command, the capture's sha256 and, per output file, the record count
  and the sha256 of every *stream* (below) and of the whole file;
- ``<file>.jsonl.xz``: a copy of every non-empty output file (xz: ~0.8 MB for all), so a
  failure can print the first record that differs.

A stream is the records of one logical series in one file, in file order: trades of a symbol,
bars of a symbol and interval, books of a symbol, BBOs of a symbol and origin, ... Equal
streams mean the same records, byte for byte, in the same order per series; how the flow
interleaves different series (of one symbol or of different ones) in a file is not part of
the contract, since it depends on batching, workers and operator fusion.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "fixtures" / "captures"
GOLDEN = ROOT / "fixtures" / "golden"
OUTPUT_FILES = ("trades", "bars", "book", "status", "late", "dead_letter")
INTERVALS = "1s,1m"

# Every bundled capture and the venue it was recorded from (the --venue of `candlewax replay`).
VENUES = {
    "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz": "binance-usdm",
    "binance/hftbacktest_spot_btcusdt_20240808.txt.gz": "binance",
    "binance/hftbacktest_spot_ethusdt_20240808.txt.gz": "binance",
    "okx/cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz": "okx",
    "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz": "okx",
    "bybit/cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz": "bybit",
    "bybit/nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl.gz": "bybit",
    "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz": "kraken",
    "hyperliquid/hftbacktest_btc_l2Book_trades_20250126.txt.gz": "hyperliquid",
    "coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz": "coinbase",
}


def bundled_captures() -> list[str]:
    """Every capture file under fixtures/captures (relative paths), documentation excluded."""
    return sorted(
        p.relative_to(CAPTURES).as_posix()
        for p in CAPTURES.rglob("*")
        if p.is_file() and p.suffix != ".md"
    )


def golden_dir(capture: str) -> Path:
    return GOLDEN / capture.removesuffix(".gz")


def replay_args(capture: str, out: Path) -> list[str]:
    """`candlewax replay` arguments: the full default pipeline (normalize, dedupe, book
    top-20 + BBO, OHLCV 1s and 1m) into a JSONL directory."""
    return [
        "replay",
        str(CAPTURES / capture),
        "--venue",
        VENUES[capture],
        "--out",
        str(out),
        "--intervals",
        INTERVALS,
    ]


def run_replay(capture: str, out: Path) -> None:
    from candlewax.cli import main

    code = main(replay_args(capture, out))
    if code != 0:
        raise RuntimeError(f"candlewax {' '.join(replay_args(capture, out))} exited with {code}")


def replay_config(capture: str, out: Path, workers: int) -> Any:
    """The config `candlewax replay` builds, on ``workers`` worker threads."""
    from candlewax.cli import _parser
    from candlewax.config import parse_config
    from candlewax.replay_cmd import replay_config as replay_cmd_config

    cfg = replay_cmd_config(_parser().parse_args(replay_args(capture, out)))
    data = cfg.model_dump()
    data["workers"] = workers
    return parse_config(data, "golden replay", env={})


def stream_of(line: bytes) -> str:
    """The series a record belongs to, e.g. ``bar binance BTC/USDT 1s``."""
    record = orjson.loads(line)
    kind = record.get("type")
    if kind == "late":
        trade = record.get("trade", {})
        parts = [kind, trade.get("venue"), trade.get("symbol"), record.get("interval")]
    else:
        parts = [kind, record.get("venue"), record.get("symbol")]
        if kind == "bar":
            parts.append(record.get("interval"))
        elif kind == "bbo":
            parts.append(record.get("origin"))
    return " ".join(str(p) for p in parts if p is not None)


def split_streams(lines: Iterable[bytes]) -> dict[str, list[bytes]]:
    streams: dict[str, list[bytes]] = {}
    for line in lines:
        streams.setdefault(stream_of(line), []).append(line)
    return streams


def _sha(lines: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
        digest.update(b"\n")
    return digest.hexdigest()


def read_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    return data.splitlines()


def describe(lines: list[bytes]) -> dict[str, Any]:
    """Record count and sha256 of a file and of each of its streams."""
    streams = split_streams(lines)
    return {
        "records": len(lines),
        "sha256": _sha(lines),
        "streams": {
            name: {"records": len(s), "sha256": _sha(s)} for name, s in sorted(streams.items())
        },
    }


def capture_sha(capture: str) -> str:
    return hashlib.sha256((CAPTURES / capture).read_bytes()).hexdigest()


def write_golden(capture: str, out: Path) -> Path:
    """Freeze the outputs of ``out`` (a replay of ``capture``) as its golden files."""
    target = golden_dir(capture)
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.jsonl.xz"):
        old.unlink()
    files: dict[str, Any] = {}
    for name in OUTPUT_FILES:
        data = (out / f"{name}.jsonl").read_bytes()
        lines = data.splitlines()
        files[f"{name}.jsonl"] = describe(lines)
        if lines:
            xz = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
            (target / f"{name}.jsonl.xz").write_bytes(xz)
    manifest = {
        "capture": capture,
        "capture_sha256": capture_sha(capture),
        "command": "candlewax "
        + " ".join(replay_args(capture, Path("OUT"))).replace(
            str(CAPTURES) + "/", "fixtures/captures/"
        ),
        "files": files,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return target


def load_manifest(capture: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((golden_dir(capture) / "manifest.json").read_text())
    return data


@dataclass
class Difference:
    file: str
    stream: str
    message: str


def _first_difference(want: list[bytes], got: list[bytes]) -> str:
    for i, (w, g) in enumerate(zip(want, got, strict=False)):
        if w != g:
            pairs = enumerate(zip(w, g, strict=False))
            col = next((c for c, (a, b) in pairs if a != b), min(len(w), len(g)))
            return (
                f"record {i} differs at character {col}:\n"
                f"  golden: {w.decode(errors='replace')}\n"
                f"  now:    {g.decode(errors='replace')}"
            )
    if len(want) > len(got):
        return f"{len(want) - len(got)} record(s) missing, first: {want[len(got)].decode()}"
    return f"{len(got) - len(want)} extra record(s), first: {got[len(want)].decode()}"


def compare(capture: str, out: Path) -> list[Difference]:
    """Every stream of ``out`` that differs from the golden files of ``capture``, with its
    first differing record (read from the golden copy)."""
    manifest = load_manifest(capture)
    found: list[Difference] = []
    for name in OUTPUT_FILES:
        file = f"{name}.jsonl"
        golden = manifest["files"][file]
        lines = read_lines(out / file)
        now = describe(lines)
        if now["sha256"] == golden["sha256"]:
            continue  # byte-identical file: nothing to explain
        want_streams = golden["streams"]
        got_streams = now["streams"]
        if want_streams == got_streams:
            continue  # same series, interleaved differently: allowed
        want_lines = split_streams(read_lines(golden_dir(capture) / f"{file}.xz"))
        got_lines = split_streams(lines)
        for stream in sorted(set(want_streams) | set(got_streams)):
            if want_streams.get(stream) == got_streams.get(stream):
                continue
            want, got = want_lines.get(stream, []), got_lines.get(stream, [])
            detail = _first_difference(want, got)
            counts = f"{len(want)} golden / {len(got)} now records"
            found.append(Difference(file, stream, f"{counts}; {detail}"))
    return found


def report(capture: str, differences: list[Difference], limit: int = 5) -> str:
    lines = [f"{capture}: {len(differences)} stream(s) differ from {golden_dir(capture)}"]
    for diff in differences[:limit]:
        lines.append(f"- {diff.file} [{diff.stream}]: {diff.message}")
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more")
    lines.append("Never regenerate to hide a difference; see docs/benchmarks.md, 'Golden outputs'.")
    return "\n".join(lines)
