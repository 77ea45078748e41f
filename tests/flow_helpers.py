"""Run a pipeline in-process and read its JSONL output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from candlewax.config import PipelineConfig, parse_config
from flows.runner import run_pipeline

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "fixtures" / "captures"
BTC_SPOT = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
ETH_SPOT = CAPTURES / "binance" / "hftbacktest_spot_ethusdt_20240808.txt.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
OKX_TBT = CAPTURES / "okx" / "cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"

Record = dict[str, Any]


def read_jsonl(path: Path) -> list[Record]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def outputs(directory: Path) -> dict[str, list[Record]]:
    names = ("trades", "bars", "book", "status", "late", "dead_letter")
    return {name: read_jsonl(directory / f"{name}.jsonl") for name in names}


def replay_config(
    capture: Path,
    venue: str,
    out: Path,
    *,
    symbols: list[str] | None = None,
    operators: dict[str, Any] | None = None,
    workers: int = 1,
) -> PipelineConfig:
    return parse_config(
        {
            "workers": workers,
            "sources": [
                {
                    "venue": venue,
                    "symbols": symbols or [],
                    "mode": "replay",
                    "capture": str(capture),
                }
            ],
            "operators": operators or {"ohlcv": {"intervals": ["1s", "1m"]}},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        }
    )


def run_replay(capture: Path, venue: str, out: Path, **kwargs: Any) -> dict[str, list[Record]]:
    run_pipeline(replay_config(capture, venue, out, **kwargs))
    return outputs(out)
