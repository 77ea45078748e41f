"""JSON lines to a stream (stdout by default), in arrival order, optionally only some channels."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import IO, Any

from sinks.base import Record, channel_of, check_channels, dumps_line


class StdoutSink:
    def __init__(
        self, stream: IO[Any] | None = None, *, channels: Iterable[str] | None = None
    ) -> None:
        self.stream: IO[Any] = stream if stream is not None else sys.stdout
        self.channels = check_channels(channels)
        self._text = isinstance(self.stream, io.TextIOBase)

    def write_batch(self, records: list[Record]) -> None:
        data = b"".join(dumps_line(r) for r in records if channel_of(r) in self.channels)
        if data:
            self.stream.write(data.decode("utf-8") if self._text else data)
            self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
