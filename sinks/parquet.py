"""Final OHLCV bars as Parquet part files (polars).

Final bars are buffered and written as a new file
``<dir>/bars-<seq>-<uuid>.parquet`` every ``rows_per_file`` bars and on
``flush``/``close``. Files are written under a hidden temporary name and
renamed into place, so readers never see a half-written file, a crash loses
at most the buffer, and no file is ever rewritten.

Prices, sizes and volumes are stored as the exact decimal *strings* of the
record (polars ``String``), not ``Decimal``: venues and symbols differ in
scale, and a fixed-scale Decimal column would change the text ("61837.63000000"
vs "61837.63"). Cast for arithmetic, e.g. ``pl.col("close").cast(pl.Decimal(38, 8))``.
Times stay integer microseconds like the JSON records.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from sinks.base import Record, SinkError

_DECIMAL_TEXT = ("volume", "quote_volume", "buy_volume", "sell_volume")
_NULLABLE_TEXT = ("open", "high", "low", "close", "vwap", "first_trade_id", "last_trade_id")

# Column order follows candlewax.schema.Bar.
BAR_SCHEMA: dict[str, Any] = {
    "type": pl.String,
    "schema_version": pl.Int64,
    "venue": pl.String,
    "symbol": pl.String,
    "interval": pl.String,
    "start": pl.Int64,
    "end": pl.Int64,
    "open": pl.String,
    "high": pl.String,
    "low": pl.String,
    "close": pl.String,
    "volume": pl.String,
    "quote_volume": pl.String,
    "vwap": pl.String,
    "buy_volume": pl.String,
    "sell_volume": pl.String,
    "trades": pl.Int64,
    "first_trade_id": pl.String,
    "last_trade_id": pl.String,
    "final": pl.Boolean,
    "filled": pl.Boolean,
}
SORT_KEY = ["venue", "symbol", "interval", "start"]


def _check_bar(bar: Record) -> None:
    """Reject a bar before buffering it, so one bad record cannot lose the buffer."""
    missing = BAR_SCHEMA.keys() - bar.keys()
    extra = bar.keys() - BAR_SCHEMA.keys()
    if missing or extra:
        raise SinkError(f"bar fields differ from the contract: missing {missing}, extra {extra}")
    for name, dtype in BAR_SCHEMA.items():
        value = bar[name]
        if dtype == pl.String:
            ok = isinstance(value, str) or (value is None and name in _NULLABLE_TEXT)
        elif dtype == pl.Boolean:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise SinkError(f"bar field {name!r} has bad value {value!r}")


class ParquetBarSink:
    """Writes ``type == "bar"`` records with ``final`` true; every other record is ignored."""

    def __init__(self, directory: str | Path, *, rows_per_file: int = 10_000) -> None:
        if rows_per_file < 1:
            raise ValueError("rows_per_file must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self.files_written: list[Path] = []
        self.ignored = 0
        self._buffer: list[Record] = []
        self._run = uuid.uuid4().hex

    def write_batch(self, records: list[Record]) -> None:
        bars = [r for r in records if r.get("type") == "bar" and r.get("final") is True]
        self.ignored += len(records) - len(bars)
        for bar in bars:
            _check_bar(bar)
        self._buffer.extend(bars)
        while len(self._buffer) >= self.rows_per_file:
            self._write(self._buffer[: self.rows_per_file])
            del self._buffer[: self.rows_per_file]

    def flush(self) -> None:
        if self._buffer:
            self._write(self._buffer)
            self._buffer = []

    def close(self) -> None:
        self.flush()

    def _write(self, bars: list[Record]) -> None:
        frame = pl.DataFrame(
            {name: [bar[name] for bar in bars] for name in BAR_SCHEMA}, schema=BAR_SCHEMA
        )
        name = f"bars-{len(self.files_written):06d}-{self._run}"
        tmp = self.directory / f".{name}.parquet.tmp"
        frame.write_parquet(tmp)
        final = self.directory / f"{name}.parquet"
        os.replace(tmp, final)
        self.files_written.append(final)


def read_bars(directory: str | Path) -> pl.DataFrame:
    """All bars written under ``directory``, sorted by venue, symbol, interval, start."""
    files = sorted(Path(directory).glob("bars-*.parquet"))
    if not files:
        return pl.DataFrame(schema=BAR_SCHEMA)
    frames = [pl.read_parquet(f).select(list(BAR_SCHEMA)) for f in files]
    return pl.concat(frames).sort(SORT_KEY, maintain_order=True)
