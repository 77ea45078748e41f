"""Independent OHLCV recomputation with polars, shared by the operator and flow tests."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import polars as pl

Record = dict[str, Any]


def reference(trades: list[Record], interval_us: int) -> dict[int, dict[str, Any]]:
    """Bars recomputed with polars; list position is the arrival order."""
    assert all(len(t["price"].split(".")[-1]) <= 8 for t in trades)  # casts below are exact
    frame = pl.DataFrame(
        {
            "ts": [t["ts_exchange"] for t in trades],
            "arrival": range(len(trades)),
            "price_text": [t["price"] for t in trades],
            "size_text": [t["size"] for t in trades],
            "buy": [t["side"] == "buy" for t in trades],
            "trade_id": [t["trade_id"] for t in trades],
        },
        schema_overrides={"ts": pl.Int64},
    )
    frame = frame.with_columns(
        start=pl.col("ts") - pl.col("ts") % interval_us,
        price=pl.col("price_text").cast(pl.Decimal(38, 16)),
        size=pl.col("size_text").cast(pl.Decimal(38, 8)),
    ).with_columns(notional=pl.col("price") * pl.col("size"))
    bars = (
        frame.sort("ts", "arrival")
        .group_by("start", maintain_order=True)
        .agg(
            open=pl.col("price_text").first(),
            close=pl.col("price_text").last(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            volume=pl.col("size").sum(),
            quote_volume=pl.col("notional").sum(),
            buy_volume=pl.col("size").filter(pl.col("buy")).sum(),
            sell_volume=pl.col("size").filter(~pl.col("buy")).sum(),
            trades=pl.len(),
            first_trade_id=pl.col("trade_id").first(),
            last_trade_id=pl.col("trade_id").last(),
        )
    )
    return {row["start"]: row for row in bars.iter_rows(named=True)}


def assert_matches(bar: Record, ref: dict[str, Any], interval_us: int) -> None:
    assert bar["end"] == bar["start"] + interval_us
    assert bar["start"] == ref["start"]
    assert (bar["open"], bar["close"]) == (ref["open"], ref["close"])
    assert (Decimal(bar["high"]), Decimal(bar["low"])) == (ref["high"], ref["low"])
    for field in ("volume", "quote_volume", "buy_volume", "sell_volume"):
        assert Decimal(bar[field]) == (ref[field] or 0), field
    assert bar["trades"] == ref["trades"]
    assert (bar["first_trade_id"], bar["last_trade_id"]) == (
        ref["first_trade_id"],
        ref["last_trade_id"],
    )
    with localcontext(prec=100):
        vwap = (ref["quote_volume"] / ref["volume"]).quantize(
            Decimal("1e-18"), rounding=ROUND_HALF_EVEN
        )
    assert Decimal(bar["vwap"]) == vwap
    assert not bar["filled"]
