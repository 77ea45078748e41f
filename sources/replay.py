"""Replay recorded captures as ``RawFrame`` streams, optionally paced.

``read_capture(path, venue)`` auto-detects the container (hftbacktest,
cryptofeed format 2 / legacy, candlewax recorder, raw lines) from the content
of the first lines, gzip or plain from the magic bytes. A directory is read as
a candlewax recording (all ``*.ndjson[.gz]`` under ``<dir>/<venue>/`` or
``<dir>``, merged by ts_ingest). Malformed lines never raise: they are counted
in ``ReplayStats`` and handed to the caller as ``MalformedLine`` items
(``iter_capture``) or through a callback (``read_capture``), so the caller can
turn them into dead letters. A file whose first lines are all unreadable (random
bytes, a broken gzip) or of no known format is a ``CaptureError`` before any
frame is read. ``symbols`` keeps only the frames of those unified symbols (and
frames that belong to no symbol: acks, pongs). See docs/captures.md.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import itertools
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sources.capture_formats import RECORDER, LineError, Skipped, make_parser, sniff_format
from sources.frames import SNAPSHOT_HINT, RawFrame

MAX_EXAMPLES = 5
_SNIFF_LINES = 50
_EXAMPLE_CHARS = 300


class CaptureError(ValueError):
    """The capture as a whole cannot be read (missing, unknown format)."""


class MalformedLine(NamedTuple):
    path: str
    line_no: int  # 1-based; for a corrupt gzip tail, the line after the last good one
    text: str
    reason: str


@dataclass
class ReplayStats:
    """Counters of one replay; ``lines == frames + filtered + skipped + malformed``."""

    lines: int = 0
    frames: int = 0  # RawFrames yielded, snapshots included
    snapshots: int = 0
    skipped: int = 0  # well-formed lines with no received frame
    malformed: int = 0
    filtered: int = 0  # frames of symbols not asked for (``symbols=``), never yielded
    skipped_kinds: Counter[str] = field(default_factory=Counter)
    examples: list[MalformedLine] = field(default_factory=list)  # first MAX_EXAMPLES
    # With a symbol filter: frames yielded / dropped per unified symbol.
    kept_symbols: Counter[str] = field(default_factory=Counter)
    filtered_symbols: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped_kinds.items()))
        filtered = f"{self.filtered} filtered out (other symbols), " if self.filtered else ""
        return (
            f"{self.lines} lines: {self.frames} frames ({self.snapshots} snapshots), "
            f"{filtered}{self.skipped} skipped ({kinds or '-'}), {self.malformed} malformed"
        )

    def _malformed(self, bad: MalformedLine) -> None:
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(bad._replace(text=bad.text[:_EXAMPLE_CHARS]))


Item = RawFrame | MalformedLine


def _open_binary(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as fh:
        magic = fh.read(2)
    # Sniff the magic rather than trust the suffix: renamed files happen.
    return gzip.GzipFile(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _lines(path: Path) -> Generator[tuple[int, str] | MalformedLine, None, None]:
    """(line_no, text without terminator); bad UTF-8 and a corrupt gzip tail as MalformedLine."""
    line_no = 0
    fh = _open_binary(path)
    try:
        for raw in fh:
            line_no += 1
            try:
                yield line_no, raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                yield MalformedLine(str(path), line_no, text, f"invalid UTF-8: {exc.reason}")
    except (EOFError, OSError, zlib.error) as exc:
        # A writer killed mid-member leaves a truncated gzip tail; keep what came before.
        yield MalformedLine(str(path), line_no + 1, "", f"corrupt or truncated gzip: {exc}")
    finally:
        fh.close()


def detect_format(path: str | Path) -> str | None:
    """Container format of a capture file from its first non-blank lines.

    None for a file with no content. Raises CaptureError if unrecognized, or if the
    first lines are unreadable (binary data, a broken gzip): not a capture at all."""
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"capture file {str(path)!r} does not exist")
    if not path.is_file():
        raise CaptureError(f"capture {str(path)!r} is not a file or recording directory")
    unreadable: list[MalformedLine] = []
    head: list[str] = []
    with contextlib.closing(_lines(path)) as lines:
        for item in lines:
            if isinstance(item, MalformedLine):
                unreadable.append(item)
            elif item[1].strip():
                head.append(item[1])
            if len(head) + len(unreadable) >= _SNIFF_LINES:
                break
    for line in head:
        fmt = sniff_format(line)
        if fmt is not None:
            return fmt
    if unreadable:
        raise CaptureError(
            f"{str(path)!r} is not a capture: {unreadable[0].reason} "
            f"(line {unreadable[0].line_no}); see docs/captures.md for the formats read"
        )
    if not head:
        return None
    raise CaptureError(
        f"{str(path)!r}: unknown capture format (expected hftbacktest, cryptofeed jsonl, "
        "cryptofeed ws.txt or candlewax recorder lines; see docs/captures.md)"
    )


def _read_file(
    path: Path, venue: str, fmt: str | None, stats: ReplayStats, max_lines: int | None = None
) -> Iterator[Item]:
    """Items of one file; with ``max_lines``, of its first lines only (frames a parser
    keeps for its time merge are still flushed)."""
    if fmt is None:
        for item in _lines(path):
            stats.lines += 1
            if isinstance(item, MalformedLine):
                stats._malformed(item)
                yield item
            else:
                stats.skipped += 1
                stats.skipped_kinds["blank"] += 1
        return
    parser = make_parser(fmt, venue, path.name)
    for item in _lines(path):
        if max_lines is not None and stats.lines >= max_lines:
            break
        stats.lines += 1
        if isinstance(item, MalformedLine):
            stats._malformed(item)
            yield item
            continue
        line_no, text = item
        if not text.strip():
            stats.skipped += 1
            stats.skipped_kinds["blank"] += 1
            continue
        try:
            parsed = parser.parse(text)
        except LineError as exc:
            bad = MalformedLine(str(path), line_no, text, str(exc))
            stats._malformed(bad)
            yield bad
            continue
        if isinstance(parsed, Skipped):
            stats.skipped += 1
            stats.skipped_kinds[parsed.kind] += 1
        elif parsed is not None:
            yield _counted(parsed, stats)
    for frame in parser.finish():
        yield _counted(frame, stats)


def head_frames(path: str | Path, venue: str, max_lines: int = 2000) -> list[RawFrame]:
    """The frames of a capture's first ``max_lines`` lines (of a recording directory:
    its first ``max_lines`` items), read without reading the rest of the file."""
    path = Path(path)
    stats = ReplayStats()
    if path.is_dir():
        items: Iterable[Item] = itertools.islice(iter_capture(path, venue, stats=stats), max_lines)
    else:
        items = _read_file(path, venue, detect_format(path), stats, max_lines)
    return [item for item in items if isinstance(item, RawFrame)]


def _counted(frame: RawFrame, stats: ReplayStats) -> RawFrame:
    stats.frames += 1
    if frame.hint is not None and frame.hint.startswith(SNAPSHOT_HINT):
        stats.snapshots += 1
    return frame


def recording_files(directory: str | Path, venue: str) -> list[Path]:
    """Recorder files of a venue: under ``<dir>/<venue>/`` if present, else all of ``<dir>``."""
    root = Path(directory)
    if (root / venue).is_dir():
        root = root / venue
    files = [p for p in root.rglob("*.ndjson*") if re.search(r"\.ndjson(\.gz)?$", p.name)]
    return sorted(files)


def _merge_files(files: list[Path], venue: str, stats: ReplayStats) -> Iterator[Item]:
    def keyed(path: Path) -> Iterator[tuple[int, Item]]:
        last = 0
        for item in _read_file(path, venue, RECORDER, stats):
            if isinstance(item, RawFrame):
                last = item.ts_ingest
            yield last, item

    for _, item in heapq.merge(*(keyed(p) for p in files), key=lambda pair: pair[0]):
        yield item


def iter_capture(
    path: str | Path,
    venue: str,
    *,
    fmt: str | None = None,
    stats: ReplayStats | None = None,
    symbols: Collection[str] = (),
) -> Iterator[Item]:
    """Frames and malformed lines of a capture file or recording directory, in time order.

    ``fmt`` forces a format (see ``sources.capture_formats.FORMATS``). Pass a
    ``ReplayStats`` to read the counters during or after the iteration. A non-empty
    ``symbols`` (unified names) drops the frames of every other symbol.
    Raises CaptureError at once (not on first ``next``) if the capture is unusable."""
    stats = stats if stats is not None else ReplayStats()
    items = _open_capture(Path(path), venue, fmt, stats)
    return _only_symbols(items, venue, symbols, stats) if symbols else items


def _open_capture(path: Path, venue: str, fmt: str | None, stats: ReplayStats) -> Iterator[Item]:
    if path.is_dir():
        files = recording_files(path, venue)
        if not files:
            raise CaptureError(
                f"no recorder files (*.ndjson.gz) under directory {str(path)!r}; "
                "pass a capture file or a candlewax recording directory"
            )
        return _merge_files(files, venue, stats)
    if fmt is None:
        fmt = detect_format(path)
    elif not path.is_file():
        raise CaptureError(f"capture file {str(path)!r} does not exist")
    else:
        make_parser(fmt, venue, path.name)  # validates the name eagerly
    return _read_file(path, venue, fmt, stats)


def _only_symbols(
    items: Iterator[Item], venue: str, symbols: Collection[str], stats: ReplayStats
) -> Iterator[Item]:
    """Frames of the wanted symbols, frames of no symbol (acks, symbol-less snapshots)
    and every malformed line (its symbol is unknown: it stays a dead letter)."""
    from sources.registry import make_parser as venue_parser

    wanted = frozenset(symbols)
    parser = venue_parser(venue, sorted(wanted))
    for item in items:
        if isinstance(item, RawFrame):
            symbol = parser.symbol_of(item) if item.venue == venue else None
            if symbol is not None:
                if symbol not in wanted:
                    stats.frames -= 1  # counted as read; it never leaves the reader
                    if item.hint is not None and item.hint.startswith(SNAPSHOT_HINT):
                        stats.snapshots -= 1
                    stats.filtered += 1
                    stats.filtered_symbols[symbol] += 1
                    continue
                stats.kept_symbols[symbol] += 1
        yield item


def read_capture(
    path: str | Path,
    venue: str,
    *,
    fmt: str | None = None,
    stats: ReplayStats | None = None,
    on_malformed: Callable[[MalformedLine], None] | None = None,
) -> Iterator[RawFrame]:
    """RawFrames of a capture; malformed lines go to ``on_malformed`` (and ``stats``)."""
    items = iter_capture(path, venue, fmt=fmt, stats=stats)

    def frames() -> Iterator[RawFrame]:
        for item in items:
            if isinstance(item, RawFrame):
                yield item
            elif on_malformed is not None:
                on_malformed(item)

    return frames()


_PACE_RE = re.compile(r"^(max|recorded|([0-9]+(?:\.[0-9]+)?)x)$")


def parse_pace(pace: str) -> float | None:
    """Speed factor of a pace: None for "max", 1.0 for "recorded", N for "<N>x"."""
    m = _PACE_RE.match(pace)
    if m is None or (m.group(2) is not None and float(m.group(2)) <= 0):
        raise ValueError(f"pace {pace!r} must be 'max', 'recorded' or a positive '<N>x'")
    if pace == "max":
        return None
    return 1.0 if pace == "recorded" else float(m.group(2))


class Pacer:
    """Releases frames at their recorded pace (scaled by a speed factor) or at max speed.

    The first frame anchors recorded time to ``clock()``; a frame is due at
    ``anchor_clock + (ts_ingest - anchor_ts) / speed``. Frames whose ts goes
    backwards are due at once. ``clock``/``sleep`` are injectable for tests."""

    def __init__(
        self,
        pace: str = "max",
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = parse_pace(pace)
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[int, float] | None = None

    def delay(self, ts_ingest: int) -> float:
        """Seconds until the frame with this ts_ingest is due (0.0 when due or at max pace)."""
        if self.speed is None:
            return 0.0
        now = self._clock()
        if self._anchor is None:
            self._anchor = (ts_ingest, now)
            return 0.0
        anchor_ts, anchor_clock = self._anchor
        due = anchor_clock + (ts_ingest - anchor_ts) / 1e6 / self.speed
        return max(0.0, due - now)

    def wait(self, ts_ingest: int) -> float:
        """Sleep until the frame is due; returns the seconds slept."""
        seconds = self.delay(ts_ingest)
        if seconds > 0:
            self._sleep(seconds)
        return seconds

    def pace(self, frames: Iterable[RawFrame]) -> Iterator[RawFrame]:
        for frame in frames:
            self.wait(frame.ts_ingest)
            yield frame
