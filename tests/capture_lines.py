"""Minimal reader of the bundled capture containers, for parser tests only
(the production reader is sources/replay.py)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlparse

from sources.frames import SNAPSHOT_HINT, RawFrame

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"


class CaptureLine(NamedTuple):
    ts: float  # hftbacktest: ns; cryptofeed: s
    text: str
    is_rest_snapshot: bool
    url: str | None = None  # REST url of a cryptofeed ``http`` record


def capture_lines(path: Path) -> Iterator[CaptureLine]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if path.name.startswith("hftbacktest_"):
                ts, _, text = line.partition(" ")
                yield CaptureLine(int(ts), text, '"lastUpdateId"' in text)
            elif path.name.endswith(".jsonl.gz"):
                rec = json.loads(line)
                if rec["t"] in ("recv", "http"):
                    is_http = rec["t"] == "http"
                    yield CaptureLine(rec["ts"], rec["data"], is_http, rec.get("url"))
            elif " <-> " not in line and " <- " not in line:  # .ws.txt: "<ts>: <frame>"
                ts, _, text = line.partition(": ")
                yield CaptureLine(float(ts), text, False)


def capture_frames(path: Path, venue: str) -> Iterator[RawFrame]:
    """RawFrames as a replay source would emit them (ts in µs, snapshot hints set)."""
    per_second = 1_000 if path.name.startswith("hftbacktest_") else None
    for ts, text, is_snapshot, url in capture_lines(path):
        micros = int(ts) // per_second if per_second else round(ts * 1_000_000)
        hint = None
        if is_snapshot:
            native = parse_qs(urlparse(url).query)["symbol"][0] if url else ""
            hint = SNAPSHOT_HINT + native
        yield RawFrame(venue, path.name, micros, text, hint)
