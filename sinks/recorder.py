"""Raw-frame recorder: gzip NDJSON per venue / symbol / UTC day.

Layout: ``<dir>/<venue>/<safe symbol>/<YYYY-MM-DD>.ndjson.gz`` where the safe
symbol replaces ``/`` and ``:`` (and anything outside ``[A-Za-z0-9.-]``) with
``_`` (``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``); frames without a symbol (acks,
pongs) go to ``_unknown``. One JSON object per line::

    {"ts_ingest": <µs int>, "venue": "...", "conn_id": "...",
     "hint": null | "...", "raw": "<frame text>"}

Every ``write_batch`` appends one complete gzip member per touched file and
flushes it. A multi-member gzip file is valid gzip, so a file is readable (by
``gzip.open`` and ``sources.replay.read_capture``) while it is still being
written, and a crash loses at most the batch being written.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from sources.frames import RawFrame

UNKNOWN_SYMBOL_DIR = "_unknown"
SUFFIX = ".ndjson.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]")


def safe_name(name: str | None) -> str:
    """File-system-safe directory name for a venue or unified symbol."""
    if not name:
        return UNKNOWN_SYMBOL_DIR
    safe = _UNSAFE.sub("_", name)
    return safe if safe.strip(".") else UNKNOWN_SYMBOL_DIR  # never "." or ".."


def utc_day(ts_micros: int) -> str:
    return datetime.fromtimestamp(ts_micros // 1_000_000, UTC).strftime("%Y-%m-%d")


def recording_path(directory: Path, frame: RawFrame, symbol: str | None) -> Path:
    return (
        directory
        / safe_name(frame.venue)
        / safe_name(symbol)
        / f"{utc_day(frame.ts_ingest)}{SUFFIX}"
    )


def frame_line(frame: RawFrame) -> bytes:
    return orjson.dumps(
        {
            "ts_ingest": frame.ts_ingest,
            "venue": frame.venue,
            "conn_id": frame.conn_id,
            "hint": frame.hint,
            "raw": frame.text,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def gzip_member(data: bytes, level: int = 6) -> bytes:
    """One complete gzip member (mtime 0, so equal input gives equal bytes)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class Recorder:
    """Appends raw frames to per venue/symbol/day files; keeps at most ``max_open_files`` open."""

    def __init__(self, directory: str | Path, *, max_open_files: int = 64) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_open_files = max(1, max_open_files)
        self.frames_written = 0
        self.unencodable = 0  # frames orjson cannot encode (e.g. lone surrogates)
        self._files: dict[Path, BinaryIO] = {}  # insertion order = least recently used first

    def write_batch(self, items: Sequence[tuple[RawFrame, str | None]]) -> None:
        """Record (frame, unified symbol or None) pairs; one gzip member per touched file."""
        chunks: dict[Path, list[bytes]] = {}
        for frame, symbol in items:
            try:
                line = frame_line(frame)
            except orjson.JSONEncodeError:
                self.unencodable += 1
                continue
            chunks.setdefault(recording_path(self.directory, frame, symbol), []).append(line)
        for path, lines in chunks.items():
            fh = self._file(path)
            fh.write(gzip_member(b"".join(lines)))
            fh.flush()
            self.frames_written += len(lines)

    def _file(self, path: Path) -> BinaryIO:
        fh = self._files.pop(path, None)
        if fh is None:
            while len(self._files) >= self.max_open_files:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = path.open("ab")
        self._files[path] = fh
        return fh

    def open_files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
