"""A directory of JSON-lines files, one per output channel.

Files: ``trades.jsonl``, ``bars.jsonl``, ``book.jsonl`` (book and bbo records),
``status.jsonl``, ``late.jsonl``, ``dead_letter.jsonl``. Each batch is flushed
to the OS before ``write_batch`` returns, so Ctrl-C loses nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO

from sinks.base import Record, check_channels, group_lines


def channel_path(directory: Path, channel: str) -> Path:
    return directory / f"{channel}.jsonl"


class JsonlSink:
    def __init__(
        self,
        directory: str | Path,
        *,
        channels: Iterable[str] | None = None,
        append: bool = False,
    ) -> None:
        """Opens (and unless ``append``, truncates) one file per selected channel."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.channels = check_channels(channels)
        mode = "ab" if append else "wb"
        self._files: dict[str, IO[bytes]] = {
            channel: self.path(channel).open(mode) for channel in sorted(self.channels)
        }

    def path(self, channel: str) -> Path:
        return channel_path(self.directory, channel)

    def write_batch(self, records: list[Record]) -> None:
        if not self._files and self.channels:
            raise ValueError(f"JsonlSink({str(self.directory)!r}) is closed")
        for channel, lines in group_lines(records, self.channels).items():
            fh = self._files[channel]
            fh.write(b"".join(lines))
            fh.flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
