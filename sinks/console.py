"""Human-readable console lines: closed bars and connection/book status."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

Record = dict[str, Any]


def _hms(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_record(record: Record) -> str | None:
    kind = record.get("type")
    if kind == "bar" and record.get("final"):
        return (
            f"bar    {record['venue']:<8} {record['symbol']:<12} {record['interval']:>4} "
            f"{_hms(record['start'])}  O {record['open']}  H {record['high']}  "
            f"L {record['low']}  C {record['close']}  V {record['volume']}  "
            f"n={record['trades']}"
        )
    if kind == "status":
        symbol = record.get("symbol") or "-"
        detail = f"  {record['detail']}" if record.get("detail") else ""
        return f"status {record['venue']:<8} {symbol:<12} {record['event']}{detail}"
    if kind == "dead_letter":
        return f"dead   {record['venue']:<8} {record['reason']}"
    return None


class ConsoleSink:
    """Prints final bars (of the given intervals, all if None), status and dead letters."""

    def __init__(
        self, stream: IO[str] | None = None, *, intervals: Iterable[str] | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.intervals = frozenset(intervals) if intervals is not None else None

    def write_batch(self, records: list[Record]) -> None:
        lines = []
        for record in records:
            if (
                self.intervals is not None
                and record.get("type") == "bar"
                and record.get("interval") not in self.intervals
            ):
                continue
            line = format_record(record)
            if line is not None:
                lines.append(line + "\n")
        if lines:
            self.stream.write("".join(lines))
            self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
