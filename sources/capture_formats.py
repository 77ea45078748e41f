"""Line parsers for the capture container formats that ``sources.replay`` reads.

Each format turns one text line (line terminator already removed) into a
``RawFrame``, a ``Skipped`` marker (header/connect/sent lines), or None when
it keeps the frame for ``finish`` (cryptofeed's time merge), and raises
``LineError`` for a line it cannot understand. Frame text is always the raw
exchange text, never re-serialized. Formats are documented in docs/captures.md.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson

from sources.frames import SNAPSHOT_HINT, RawFrame

HFTBACKTEST = "hftbacktest"
CRYPTOFEED = "cryptofeed"
CRYPTOFEED_LEGACY = "cryptofeed-legacy"
RECORDER = "candlewax-recorder"
RAW_LINES = "raw-lines"
# Venues whose parser tells the market by the connection's endpoint (Bybit spot and
# linear share native names): their conn_id carries the connect record's URL.
CONN_ID_WITH_URL = frozenset({"bybit"})
FORMATS = (HFTBACKTEST, CRYPTOFEED, CRYPTOFEED_LEGACY, RECORDER, RAW_LINES)


class LineError(ValueError):
    """A capture line that is not valid in its format; the message is the reason."""


class Skipped(NamedTuple):
    """A well-formed line that carries no received frame (header, connect, sent...)."""

    kind: str


class LineParser(Protocol):
    name: str

    def parse(self, line: str) -> RawFrame | Skipped | None:
        """The line's frame or Skipped; None if the parser keeps the frame for ``finish``."""
        ...

    def finish(self) -> Iterator[RawFrame]:
        """Frames kept back by ``parse``, in time order, after the last line."""
        ...


def seconds_to_micros(value: Decimal) -> int:
    """Epoch seconds (exact decimal) -> integer microseconds, truncated like ns // 1000."""
    if not value.is_finite() or value < 0:
        raise LineError(f"timestamp {value} is not a non-negative epoch time")
    return int(value.scaleb(6).to_integral_value(rounding="ROUND_FLOOR"))


def _decimal_seconds(text: str) -> int:
    try:
        return seconds_to_micros(Decimal(text))
    except InvalidOperation:
        raise LineError(f"bad timestamp {text[:40]!r}") from None


def _json_seconds(value: Any) -> int:
    # repr() of a JSON-decoded float is the shortest text that round-trips, i.e.
    # the digits the file holds, so no binary-float error reaches the micros.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LineError(f"timestamp {value!r} is not a number")
    return _decimal_seconds(repr(value))


def snapshot_hint_for_url(url: str) -> str | None:
    """``depth_snapshot:<SYMBOL>`` for a REST depth snapshot URL (Binance /depth), else None."""
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith("/depth"):
        return None
    symbols = parse_qs(parts.query).get("symbol", [""])
    return SNAPSHOT_HINT + symbols[0]


def is_binance_snapshot_text(text: str) -> bool:
    """A REST depth body (top-level lastUpdateId) rather than a stream message."""
    if '"lastUpdateId"' not in text:
        return False
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(obj, dict) and "lastUpdateId" in obj and "stream" not in obj and "e" not in obj
    )


def _loads_object(line: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError("JSON line is not an object")
    return obj


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise LineError(f"field {key!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


class _Streaming:
    """A parser that never keeps frames back."""

    def finish(self) -> Iterator[RawFrame]:
        return iter(())


class HftbacktestParser(_Streaming):
    """``<local_receive_ts_ns> <raw frame>``; REST depth snapshots inline."""

    name = HFTBACKTEST

    def __init__(self, venue: str, conn_id: str) -> None:
        self.venue = venue
        self.conn_id = conn_id

    def parse(self, line: str) -> RawFrame | Skipped:
        ts_text, sep, text = line.partition(" ")
        if not sep or not (ts_text.isascii() and ts_text.isdigit()) or not text:
            raise LineError("expected '<ts_ns> <frame>'")
        hint = SNAPSHOT_HINT if is_binance_snapshot_text(text) else None
        return RawFrame(self.venue, self.conn_id, int(ts_text) // 1000, text, hint)


class CryptofeedParser:
    """cryptofeed raw-data format 2: one JSON record per line, ``t`` = record kind.

    Files converted from format 1 hold one connection after another, so all
    frames are kept until the end and merged by time (each connection keeps
    its order). REST depth snapshots are re-linked to the WebSocket connection
    they were fetched for, as the live source tags them."""

    name = CRYPTOFEED

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self._per_conn: dict[str, list[RawFrame]] = {}
        self._connects: list[tuple[int, str, str]] = []  # (ts, conn, addr)
        self._url_ids: dict[str, str] | None = {} if venue in CONN_ID_WITH_URL else None

    def parse(self, line: str) -> RawFrame | Skipped | None:
        rec = _loads_object(line)
        kind = rec.get("t")
        if kind == "header":
            return Skipped("header")
        if kind not in ("connect", "send", "recv", "http"):
            raise LineError(f"unknown record kind t={kind!r}")
        conn = _field(rec, "conn", str)
        ts = _json_seconds(rec.get("ts"))
        if kind == "connect":
            self._connects.append((ts, conn, str(rec.get("addr", ""))))
            if self._url_ids is not None:
                self._url_ids[conn] = f"{conn} {rec.get('addr', '')}"
        if kind in ("connect", "send"):
            return Skipped(kind)
        data = _field(rec, "data", str)
        hint = None
        if kind == "http":
            hint = snapshot_hint_for_url(_field(rec, "url", str))
            if hint is None:
                return Skipped("http")
        if self._url_ids is not None:
            conn = self._url_ids.get(conn, conn)
        self._per_conn.setdefault(conn, []).append(RawFrame(self.venue, conn, ts, data, hint))
        return None

    def finish(self) -> Iterator[RawFrame]:
        merged = heapq.merge(*self._per_conn.values(), key=lambda f: f.ts_ingest)
        self._per_conn = {}
        for frame in merged:
            yield self._relink(frame) if frame.hint else frame

    def _relink(self, snapshot: RawFrame) -> RawFrame:
        """Give a snapshot the conn_id of the latest WebSocket connection opened before it,
        preferring one whose URL streams that symbol's depth (Binance combined streams)."""
        symbol = (snapshot.hint or "").removeprefix(SNAPSHOT_HINT).lower()
        stream = re.compile(rf"(^|[=/]){re.escape(symbol)}@depth")
        opened = [
            (conn, addr)
            for ts, conn, addr in self._connects
            if ts <= snapshot.ts_ingest and addr.startswith(("ws://", "wss://"))
        ]
        matching = [(conn, addr) for conn, addr in opened if symbol and stream.search(addr)]
        candidates = matching or opened
        return snapshot._replace(conn_id=candidates[-1][0]) if candidates else snapshot


_LEGACY_RECV = re.compile(r"^([0-9]+(?:\.[0-9]+)?): (.*)$", re.DOTALL)
_LEGACY_CONNECT = re.compile(r"^(\S+) <-> ([0-9]+(?:\.[0-9]+)?)$")
_LEGACY_ADDR = re.compile(r"^(\S+) (<-|->) ([0-9]+(?:\.[0-9]+)?): (.*)$", re.DOTALL)


class CryptofeedLegacyParser(_Streaming):
    """cryptofeed AsyncFileCallback (format 1), one file per connection:
    ``<addr> <-> <ts>`` connect, ``<addr> <- <ts>: <sent>``,
    ``<url> -> <ts>: <REST body>``, ``<ts>: <received frame>``, ``configuration: ...``."""

    name = CRYPTOFEED_LEGACY

    def __init__(self, venue: str, file_name: str) -> None:
        self.venue = venue
        self.file_name = file_name
        self.connects = 0

    @property
    def conn_id(self) -> str:
        return f"{self.file_name}#{self.connects}"

    def parse(self, line: str) -> RawFrame | Skipped:
        if m := _LEGACY_RECV.match(line):
            text = m.group(2)
            if text.startswith(("b'", 'b"')):
                # Binary frames stored as a Python bytes repr (old OKEx/Huobi deflate).
                raise LineError("binary frame (bytes repr) is not supported")
            return RawFrame(self.venue, self.conn_id, _decimal_seconds(m.group(1)), text)
        if _LEGACY_CONNECT.match(line):
            self.connects += 1
            return Skipped("connect")
        if m := _LEGACY_ADDR.match(line):
            if m.group(2) == "<-":
                return Skipped("send")
            hint = snapshot_hint_for_url(m.group(1))
            if hint is None:
                return Skipped("http")
            ts = _decimal_seconds(m.group(3))
            return RawFrame(self.venue, self.conn_id, ts, m.group(4), hint)
        if line.startswith("configuration: "):
            return Skipped("header")
        raise LineError("not a cryptofeed legacy line")


class RecorderParser(_Streaming):
    """candlewax recorder NDJSON (sinks/recorder.py); the recorded venue is kept."""

    name = RECORDER

    def parse(self, line: str) -> RawFrame | Skipped:
        rec = _loads_object(line)
        ts = rec.get("ts_ingest")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
            raise LineError("field 'ts_ingest' missing or not a non-negative int")
        hint = rec.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise LineError("field 'hint' is not a string or null")
        return RawFrame(
            _field(rec, "venue", str),
            _field(rec, "conn_id", str),
            ts,
            _field(rec, "raw", str),
            hint,
        )


class RawLinesParser(_Streaming):
    """One raw exchange message per line with no container (Bybit's history dumps).

    There is no receive time, so ts_ingest is the message's own top-level ``ts``
    (epoch milliseconds)."""

    name = RAW_LINES

    def __init__(self, venue: str, conn_id: str) -> None:
        self.venue = venue
        self.conn_id = conn_id

    def parse(self, line: str) -> RawFrame | Skipped:
        ts = _loads_object(line).get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
            raise LineError("raw line has no integer 'ts' (epoch ms)")
        return RawFrame(self.venue, self.conn_id, ts * 1000, line)


_HFT_SNIFF = re.compile(r"^[0-9]{10,} [\[{]")
_LEGACY_SNIFF = (_LEGACY_RECV, _LEGACY_CONNECT, _LEGACY_ADDR)


def sniff_format(line: str) -> str | None:
    """Format name a (non-blank) first line belongs to, or None if unrecognized."""
    if _HFT_SNIFF.match(line):
        return HFTBACKTEST
    if line.startswith("configuration: ") or any(p.match(line) for p in _LEGACY_SNIFF):
        return CRYPTOFEED_LEGACY
    if line.startswith("{"):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        if "t" in obj:
            return CRYPTOFEED
        if "ts_ingest" in obj and "raw" in obj:
            return RECORDER
        return RAW_LINES
    return None


def make_parser(fmt: str, venue: str, file_name: str) -> LineParser:
    if fmt == HFTBACKTEST:
        return HftbacktestParser(venue, file_name)
    if fmt == CRYPTOFEED:
        return CryptofeedParser(venue)
    if fmt == CRYPTOFEED_LEGACY:
        return CryptofeedLegacyParser(venue, file_name)
    if fmt == RECORDER:
        return RecorderParser()
    if fmt == RAW_LINES:
        return RawLinesParser(venue, file_name)
    raise ValueError(f"unknown capture format {fmt!r}; known: {', '.join(FORMATS)}")
