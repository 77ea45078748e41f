"""Fan-out server tests: a server on 127.0.0.1, SDK clients, the replay that feeds them."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from flow_helpers import CAPTURES, OKX_TBT, OKX_V5, read_jsonl

from candlewax.client import Stream
from candlewax.client.messages import Message, kind_of
from candlewax.config import PipelineConfig, WebsocketSink, parse_config
from sinks.fanout.threaded import Fanout, ServerThread, acquire, release

USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
CONTROL = frozenset(
    ("hello", "subscribed", "unsubscribed", "snapshot", "heartbeat", "dropped", "error", "pong")
)
Record = dict[str, Any]


def ws_config(**options: Any) -> WebsocketSink:
    """In-process (a thread) unless ``processes`` is given: these tests look inside the hub."""
    return WebsocketSink.model_validate(
        {"type": "websocket", "host": "127.0.0.1", "port": 0, "processes": 0, **options}
    )


@contextmanager
def fanout_service(**options: Any) -> Iterator[Fanout]:
    """A server in a thread (``processes=0``, the default here) or in server processes."""
    server = acquire(ws_config(**options))
    try:
        yield server
    finally:
        release(server)


@contextmanager
def fanout_server(**options: Any) -> Iterator[ServerThread]:
    server = acquire(ws_config(**options))
    assert isinstance(server, ServerThread)
    try:
        yield server
    finally:
        release(server)


def three_venue_config(out: Path, port: int, *, workers: int = 1, **ws: Any) -> PipelineConfig:
    """OKX (legacy tbt, 10 instruments; v5 BTC/USDT) and Binance USD-M (4 perpetuals)
    replayed into JSONL, the recorder and the fan-out server on ``port``."""
    sources = [
        {"venue": "okx", "mode": "replay", "capture": str(OKX_TBT)},
        {"venue": "binance-usdm", "mode": "replay", "capture": str(USDM)},
        {"venue": "okx", "mode": "replay", "capture": str(OKX_V5)},
    ]
    return parse_config(
        {
            "workers": workers,
            "sources": sources,
            "operators": {"ohlcv": {"intervals": ["1s", "1m"]}},
            "sinks": [
                {"type": "jsonl", "path": str(out / "jsonl")},
                {"type": "recorder", "path": str(out / "recorder")},
                {"type": "websocket", "host": "127.0.0.1", "port": port, **ws},
            ],
        }
    )


def recorded_frames(directory: Path) -> dict[tuple[str, str], list[Record]]:
    """Recorder output by (venue, safe symbol dir), in file order."""
    out: dict[tuple[str, str], list[Record]] = {}
    for path in sorted(directory.glob("*/*/*.ndjson.gz")):
        lines = gzip.decompress(path.read_bytes()).splitlines()
        key = (path.parent.parent.name, path.parent.name)
        out.setdefault(key, []).extend(orjson.loads(line) for line in lines)
    return out


def jsonl_records(directory: Path) -> list[Record]:
    names = ("trades", "bars", "book", "status", "late", "dead_letter")
    return [r for name in names for r in read_jsonl(directory / f"{name}.jsonl")]


def as_dict(message: Message) -> Record:
    return message if isinstance(message, dict) else message.model_dump(mode="json")


class Client:
    """One SDK stream with everything it yielded (``control=True``)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        kwargs.setdefault("control", True)
        kwargs.setdefault("backoff_base", 0.05)
        kwargs.setdefault("backoff_max", 0.2)
        self.stream = Stream(url, **kwargs)
        self.messages: list[Message] = []
        self._it = self.stream.__aiter__()

    async def until(self, done: Callable[[Message], bool], timeout: float = 20.0) -> Message:
        async with asyncio.timeout(timeout):
            async for message in self._it:
                self.messages.append(message)
                if done(message):
                    return message
        raise AssertionError("the stream ended")

    async def subscribed(self) -> Message:
        """Until the snapshot of the last subscription arrived."""
        count = len(self.stream.requests)
        seen = 0

        def done(message: Message) -> bool:
            nonlocal seen
            seen += kind_of(message) == "snapshot"
            return seen == count

        return await self.until(done)

    async def barrier(self, tag: str = "barrier") -> None:
        """Until the server answered a ping: everything published before is here."""
        await self.stream.ping(tag)
        await self.until(lambda m: kind_of(m) == "pong" and as_dict(m).get("id") == tag)

    def of_kind(self, *kinds: str) -> list[Record]:
        return [as_dict(m) for m in self.messages if kind_of(m) in kinds]

    def records(self) -> list[Record]:
        """Snapshot records and live records, in the order they came."""
        out: list[Record] = []
        for m in self.messages:
            kind = kind_of(m)
            if kind == "snapshot":
                out.extend(as_dict(r) for r in as_dict(m)["records"])
            elif kind not in CONTROL:
                out.append(as_dict(m))
        return out

    def data(self) -> list[Record]:
        return [as_dict(m) for m in self.messages if kind_of(m) not in CONTROL]

    async def close(self) -> None:
        await self.stream.close()
        await self._it.aclose()  # type: ignore[attr-defined]
