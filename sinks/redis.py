"""Redis sink (redis-py, one pipeline per batch): latest state, streams, pub/sub.

For every record of venue V and symbol S (key prefix P, channel C as in the
JSONL files: trades, book, bars, status, late, dead_letter):

- latest state: hash ``P:latest:V:S``, fields ``trade``, ``bbo``, ``book`` and
  ``bar:<interval>`` (JSON of the newest such record), expiring ``latest_ttl_s``
  after the last write;
- stream ``P:C:V:S`` (``P:C:V`` for records without a symbol), entries
  ``{id: <deterministic id>, data: <JSON>}``, trimmed to about ``stream_maxlen``
  (``MAXLEN ~``); read them with XREAD or consumer groups (XREADGROUP);
- pub/sub channel ``P:V:S:C`` (``P:V:C`` without a symbol), message = JSON.

Redis unreachable (restart, network): the batch goes to a bounded in-memory
backlog and ``write_batch`` returns at once; reconnecting is tried with backoff
(0.1 s doubling to ``retry_max_s``) and each try waits at most ``timeout_s``,
so the flow is never blocked longer than that. Once Redis answers, the backlog
is written first (catch-up, oldest first). Beyond ``buffer_max`` records the
oldest are dropped: counted (``candlewax_sink_dropped_total{sink="redis"}``)
and logged, never silent. A batch cut by a connection loss is sent again
whole, so a stream may hold an entry twice: consumers drop repeats by ``id``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from candlewax.config import RedisSink as RedisSinkConfig
from candlewax.metrics import SINK_DROPS, SINK_ERRORS, SINK_RECORDS
from candlewax.schema import CHANNEL_OF_TYPE
from sinks.base import check_channels, json_default
from sinks.message_ids import record_id, record_key

log = logging.getLogger(__name__)

Record = dict[str, Any]
CATCH_UP_CHUNK = 2000  # backlog records per pipeline while catching up
_FIRST_DELAY = 0.1
_LOG_EVERY_S = 10.0
_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError included


@dataclass(slots=True)
class RedisStats:
    written: int = 0  # records whose commands Redis executed
    commands: int = 0
    command_errors: int = 0  # commands Redis refused (wrong type, out of memory, ...)
    outages: int = 0
    dropped: int = 0
    backlog: int = 0


def latest_field(record: Record) -> str | None:
    kind = record["type"]
    if kind == "bar":
        return f"bar:{record['interval']}"
    if kind in ("trade", "bbo", "book"):
        return str(kind)
    return None


def venue_symbol(record: Record) -> tuple[str, str | None]:
    if record["type"] == "late":
        trade = record["trade"]
        return trade["venue"], trade["symbol"]
    return str(record.get("venue", "")), record.get("symbol")


class RedisSink:
    def __init__(self, cfg: RedisSinkConfig, client: redis.Redis | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.key_prefix
        self.channels = check_channels(cfg.channels)
        # No hidden retries inside redis-py: this class decides when to try again.
        self.client = (
            client
            if client is not None
            else redis.Redis.from_url(
                cfg.url,
                socket_timeout=cfg.timeout_s,
                socket_connect_timeout=cfg.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        )
        self.stats = RedisStats()
        self._backlog: deque[Record] = deque()
        self._retry_at = 0.0
        self._delay = _FIRST_DELAY
        self._down_since: float | None = None
        self._last_log = 0.0
        self._dropped_in_outage = 0

    # ---- writing ----

    def write_batch(self, records: list[Record]) -> None:
        if self._down_since is not None:
            self._hold(records)
            if time.monotonic() >= self._retry_at:
                self._catch_up()
            return
        try:
            self._send(records)
        except _DOWN_ERRORS as exc:
            self._went_down(exc)
            self._hold(records)

    def _catch_up(self) -> None:
        """Write the backlog, oldest first; stop at the first connection failure."""
        try:
            while self._backlog:
                chunk = [self._backlog[i] for i in range(min(CATCH_UP_CHUNK, len(self._backlog)))]
                self._send(chunk)
                for _ in chunk:
                    self._backlog.popleft()
        except _DOWN_ERRORS as exc:
            self._still_down(exc)
            return
        finally:
            self.stats.backlog = len(self._backlog)
        outage = time.monotonic() - (self._down_since or time.monotonic())
        log.warning(
            "redis sink: %s answers again after %.1f s; caught up, %d record(s) dropped meanwhile",
            self.cfg.url,
            outage,
            self._dropped_in_outage,
        )
        self._down_since = None
        self._delay = _FIRST_DELAY
        self._dropped_in_outage = 0

    def _send(self, records: list[Record]) -> None:
        if not records:
            return
        pipe = self.client.pipeline(transaction=False)
        command: Callable[..., Any] = pipe.execute_command  # untyped in redis-py
        prefix = self.prefix
        latest: dict[str, dict[str, bytes]] = {}
        channels = self.channels
        streams, pubsub, want_latest = self.cfg.streams, self.cfg.pubsub, self.cfg.latest
        maxlen = self.cfg.stream_maxlen
        for record in records:
            channel = CHANNEL_OF_TYPE.get(record["type"])
            if channel is None:
                continue
            venue, symbol = venue_symbol(record)
            field = latest_field(record) if want_latest and symbol else None
            wanted = channel in channels
            if field is None and not wanted:
                continue  # nothing to send: skip the encoding
            try:
                value = orjson.dumps(record, default=json_default)
            except TypeError as exc:  # a record JSON cannot carry: count it, keep going
                self.stats.dropped += 1
                SINK_ERRORS.labels("redis").inc()
                SINK_DROPS.labels("redis").inc()
                self._log(f"redis sink dropped a record it cannot encode: {exc}")
                continue
            if field is not None:
                latest.setdefault(f"{prefix}:latest:{venue}:{symbol}", {})[field] = value
            if not wanted:
                continue
            where = f"{venue}:{symbol}" if symbol else venue
            if streams:
                stream = f"{prefix}:{channel}:{where}"
                mid = record_id(record_key(record), record, value)
                command("XADD", stream, "MAXLEN", "~", maxlen, "*", "id", mid, "data", value)
            if pubsub:
                command("PUBLISH", f"{prefix}:{where}:{channel}", value)
        ttl = self.cfg.latest_ttl_s
        for key, fields in latest.items():
            command("HSET", key, *[part for item in fields.items() for part in item])
            command("EXPIRE", key, ttl)
        sent = len(pipe)
        results = pipe.execute(raise_on_error=False)
        refused = [r for r in results if isinstance(r, redis.ResponseError)]
        self.stats.written += len(records)
        self.stats.commands += sent
        SINK_RECORDS.labels("redis").inc(len(records))
        if refused:
            self.stats.command_errors += len(refused)
            SINK_ERRORS.labels("redis").inc(len(refused))
            self._log(f"redis refused {len(refused)} command(s), first: {refused[0]}")

    # ---- outages ----

    def _went_down(self, exc: Exception) -> None:
        self.stats.outages += 1
        SINK_ERRORS.labels("redis").inc()
        self._down_since = time.monotonic()
        self._delay = _FIRST_DELAY
        self._retry_at = self._down_since + self._delay
        self._last_log = 0.0
        self._log(f"redis at {self.cfg.url} unreachable ({exc}); buffering, retrying")

    def _still_down(self, exc: Exception) -> None:
        self._delay = min(self._delay * 2, self.cfg.retry_max_s)
        self._retry_at = time.monotonic() + self._delay
        self._log(
            f"redis at {self.cfg.url} still unreachable ({exc}); "
            f"{len(self._backlog)} record(s) buffered, {self._dropped_in_outage} dropped"
        )

    def _hold(self, records: list[Record]) -> None:
        self._backlog.extend(records)
        over = len(self._backlog) - self.cfg.buffer_max
        if over > 0:
            for _ in range(over):
                self._backlog.popleft()
            self.stats.dropped += over
            self._dropped_in_outage += over
            SINK_DROPS.labels("redis").inc(over)
        self.stats.backlog = len(self._backlog)

    def _log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning("redis sink: %s", message)

    def close(self, timeout_s: float | None = None) -> None:
        """Last try to write the backlog (bounded); what stays is dropped and counted."""
        deadline = time.monotonic() + (self.cfg.timeout_s * 3 if timeout_s is None else timeout_s)
        while self._backlog and time.monotonic() < deadline:
            self._retry_at = 0.0
            self._down_since = self._down_since or time.monotonic()
            self._catch_up()
            if self._backlog:
                time.sleep(min(self._delay, max(0.0, deadline - time.monotonic())))
        if self._backlog:
            left = len(self._backlog)
            self._backlog.clear()
            self.stats.dropped += left
            self.stats.backlog = 0
            SINK_DROPS.labels("redis").inc(left)
            log.error("redis sink: closing with Redis unreachable: %d record(s) dropped", left)
        self.client.close()
