"""Trades of the bundled Binance spot BTCUSDT capture, as candlewax trade dicts."""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from candlewax.schema import make_trade

CAPTURE = (
    Path(__file__).resolve().parent.parent
    / "fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz"
)


@cache
def _load() -> tuple[dict[str, Any], ...]:
    trades = []
    with gzip.open(CAPTURE, "rt") as lines:
        for line in lines:
            ts_ns, text = line.split(" ", 1)
            frame = orjson.loads(text)
            if frame.get("stream") != "btcusdt@trade":
                continue
            data = frame["data"]
            trades.append(
                make_trade(
                    "binance",
                    "BTC/USDT",
                    data["T"] * 1000,
                    int(ts_ns) // 1000,
                    str(data["t"]),
                    data["p"],
                    data["q"],
                    "sell" if data["m"] else "buy",
                )
            )
    return tuple(trades)


def btcusdt_trades() -> list[dict[str, Any]]:
    """Fresh copies (tests may mutate them), in capture (arrival) order."""
    return [dict(trade) for trade in _load()]
