"""The pipeline YAML: models, loading, environment overrides, readable errors.

Everything is validated before anything starts; errors name the field by its
path in the file (``sources[0].symbols[1]``) and say what was expected.

Environment variables override the file: ``CANDLEWAX__OPERATORS__BOOK__DEPTH=10``
or ``CANDLEWAX__SOURCES__0__URL=ws://127.0.0.1:9443`` (``__`` separates path
parts, list items by index; values are read as YAML scalars).
"""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from candlewax.symbols import SymbolError, check_unified, to_native
from operators.intervals import parse_intervals
from sources.registry import PARSERS
from sources.replay import parse_pace

ENV_PREFIX = "CANDLEWAX__"
SUPPORTED_VENUES = tuple(PARSERS)


SourceChannel = Literal["trades", "book", "bbo"]
UserChannel = Literal["trades", "book", "bars"]
_ALL_SOURCE_CHANNELS: tuple[SourceChannel, ...] = ("trades", "book", "bbo")
_USER_DEFAULT: tuple[UserChannel, ...] = ("trades",)


class ConfigError(ValueError):
    """Invalid configuration; ``str()`` lists every problem with its field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReconnectConfig(_Strict):
    base_delay_s: float = Field(0.5, gt=0, description="first backoff delay")
    max_delay_s: float = Field(30.0, gt=0, description="backoff cap")
    stall_timeout_s: float = Field(
        30.0, gt=0, description="nothing received for this long -> ping; no pong -> reconnect"
    )
    pong_timeout_s: float = Field(10.0, gt=0, description="how long the stall ping waits")
    resync_min_interval_s: float = Field(
        5.0, ge=0, description="minimum time between two resyncs of one symbol"
    )
    max_queued: int = Field(
        200_000, ge=1, description="frames waiting for the dataflow before the readers pause"
    )
    snapshot_delay_s: float = Field(
        1.0,
        ge=0,
        description="after connecting, let depth diffs buffer this long before the "
        "REST snapshot is fetched (Binance's documented order)",
    )
    max_lifetime_s: float | None = Field(
        None, gt=0, description="planned reconnect age; default: the venue's documented limit"
    )


def _broker_list(value: Any) -> Any:
    # "a:9092,b:9092" (CLI flags, env overrides) or a YAML list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class KafkaInput(_Strict):
    """Where a ``mode: kafka`` source reads raw frames (stage 2, docs/kafka_redis.md)."""

    brokers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topic_prefix: str = Field("market", description="the stage-1 sink's topic_prefix")
    topic: str | None = Field(None, description="default: <topic_prefix>.raw.<venue>")
    tail: bool = Field(True, description="wait for new frames at the end; false: stop there")
    starting_offset: Literal["beginning", "end"] = Field(
        "beginning", description="where a run without recovery state starts reading"
    )
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra librdkafka consumer settings"
    )

    _brokers = field_validator("brokers", mode="before")(_broker_list)


class SourceConfig(_Strict):
    venue: str
    symbols: list[str] = Field(
        default_factory=list, description="unified symbols; a replay may leave it empty"
    )
    channels: list[SourceChannel] = Field(
        default_factory=lambda: list(_ALL_SOURCE_CHANNELS), min_length=1
    )
    mode: Literal["live", "replay", "kafka"] = "live"
    url: str | None = Field(None, description="WebSocket base URL override (e.g. the simulator)")
    rest_url: str | None = Field(None, description="REST base URL override (Binance snapshots)")
    capture: Path | None = Field(None, description="capture file for mode: replay")
    pace: str = Field("max", description="replay pace: max, recorded or <N>x")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    kafka: KafkaInput | None = Field(None, description="for mode: kafka (defaults apply)")

    @field_validator("venue")
    @classmethod
    def _venue(cls, venue: str) -> str:
        if venue not in SUPPORTED_VENUES:
            raise ValueError(f"unknown venue {venue!r}; supported: {', '.join(SUPPORTED_VENUES)}")
        return venue

    @field_validator("pace")
    @classmethod
    def _pace(cls, pace: str) -> str:
        parse_pace(pace)  # the replay's own rule, so what validates also runs
        return pace

    @model_validator(mode="after")
    def _symbols_and_mode(self) -> SourceConfig:
        if self.mode == "live" and not self.symbols:
            raise ValueError("a live source needs at least one symbol, e.g. symbols: [BTC/USDT]")
        for symbol in self.symbols:
            try:
                check_unified(symbol)
                to_native(self.venue, symbol)
            except SymbolError as exc:
                raise ValueError(str(exc)) from None
        if self.mode == "kafka" and self.kafka is None:
            self.kafka = KafkaInput()
        if self.mode == "replay" and self.capture is None:
            raise ValueError("mode 'replay' needs 'capture: <path to a capture file>'")
        if self.capture is not None and self.mode == "replay" and not self.capture.exists():
            raise ValueError(f"capture file {str(self.capture)!r} does not exist")
        return self


class DedupeConfig(_Strict):
    enabled: bool = True
    capacity: int = Field(100_000, ge=1, description="trade ids remembered per symbol")


class BookConfig(_Strict):
    enabled: bool = True
    depth: int = Field(20, ge=1, le=5000, description="levels per side in emitted snapshots")
    emit_interval_ms: int = Field(
        1000, ge=0, description="top-N at most this often; 0 = every update"
    )
    bbo: bool = Field(True, description="emit the book's BBO whenever it changes")


class OhlcvConfig(_Strict):
    enabled: bool = True
    intervals: list[str] = Field(default_factory=lambda: ["1m"], min_length=1)
    lateness_ms: int = Field(2000, ge=0, description="how long a window waits for late trades")
    fill_empty: bool = False
    partial_updates: bool = Field(False, description="in-progress bar at most once a second")
    wall_clock_close: bool | None = Field(
        None,
        description="close windows on wall-clock time when the market is quiet; "
        "default: on for live sources, off for replays",
    )

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, intervals: list[str]) -> list[str]:
        parse_intervals(intervals)  # the operator's own rule (also: no two of one length)
        return intervals


class UserOperatorConfig(_Strict):
    path: str = Field(
        description="'module:function' called with each record; returns a record, "
        "a list of records or None to drop it"
    )
    channels: list[UserChannel] = Field(default_factory=lambda: list(_USER_DEFAULT))

    @field_validator("path")
    @classmethod
    def _importable(cls, path: str) -> str:
        resolve_callable(path)
        return path


class OperatorsConfig(_Strict):
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    book: BookConfig = Field(default_factory=BookConfig)
    ohlcv: OhlcvConfig = Field(default_factory=OhlcvConfig)
    user: list[UserOperatorConfig] = Field(default_factory=list)


Channel = Literal["trades", "book", "bars", "status", "late", "dead_letter"]


class StdoutSink(_Strict):
    type: Literal["stdout"]
    channels: list[Channel] | None = None


class ConsoleSink(_Strict):
    type: Literal["console"]
    intervals: list[str] | None = Field(None, description="bar intervals to print; all if unset")


class JsonlSink(_Strict):
    type: Literal["jsonl"]
    path: Path
    channels: list[Channel] | None = None
    append: bool = False


class RecorderSink(_Strict):
    type: Literal["recorder"]
    path: Path


class ParquetSink(_Strict):
    type: Literal["parquet"]
    path: Path
    flush_every: int = Field(1000, ge=1, description="bars per part file")


class NullSink(_Strict):
    """Discards every record (benchmarks, dry runs)."""

    type: Literal["null"]


class WebsocketAuth(_Strict):
    """Optional client auth for the WebSocket sink (docs/fanout.md)."""

    tokens: list[str] = Field(default_factory=list, description="accepted static tokens")
    hmac_secret: str | None = Field(
        None, min_length=16, description="secret for signed expiring tokens (sinks.fanout.auth)"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.hmac_secret is not None


class WebsocketSink(_Strict):
    """Fan-out server: every record to WebSocket subscribers, plus HTTP endpoints."""

    type: Literal["websocket"]
    host: str = "0.0.0.0"
    port: int = Field(8765, ge=0, le=65535, description="0 = any free port")
    path: str = Field("/stream", pattern=r"^/[A-Za-z0-9_./-]*$")
    http_port: int | None = Field(
        None, ge=0, le=65535, description="serve /metrics etc. on a side port too"
    )
    heartbeat_s: float = Field(30.0, gt=0, description="status heartbeat to every client")
    queue_size: int = Field(10_000, ge=1, description="messages queued per client before drops")
    max_reply_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="bytes of replies and snapshots queued for a client that does not read "
        "before it is disconnected (they are never dropped)",
    )
    max_lag_s: float | None = Field(
        30.0, gt=0, description="disconnect a client lagging this long; null = only drop"
    )
    batch_ms: float = Field(
        0.0, ge=0, description="> 0: coalesce records for this long into JSON-array messages"
    )
    batch_max: int = Field(500, ge=1, description="most records per JSON-array message")
    raw: bool = Field(False, description="also forward raw venue frames (raw: true subscribers)")
    max_subscriptions: int = Field(64, ge=1, description="per connection")
    client_rate: float = Field(20.0, gt=0, description="client messages per second (sustained)")
    client_burst: int = Field(100, ge=1, description="client messages allowed in a burst")
    processes: int = Field(
        1,
        ge=0,
        le=64,
        description="server processes fed by the flow (own GIL each; several share the port "
        "with SO_REUSEPORT); 0 = a thread in the flow's process",
    )
    auth: WebsocketAuth = Field(default_factory=WebsocketAuth)


class KafkaSink(_Strict):
    """Records to ``<prefix>.norm.*`` / ``<prefix>.dlq``, raw frames to ``<prefix>.raw.<venue>``."""

    type: Literal["kafka"]
    brokers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topic_prefix: str = Field("market", pattern=r"^[A-Za-z0-9._-]+$")
    channels: list[Channel] | None = Field(None, description="record channels; all if unset")
    raw: bool | None = Field(
        None, description="raw frames to <prefix>.raw.<venue>; default: on unless mode: kafka"
    )
    partitions: int = Field(3, ge=1, description="for topics this sink creates")
    replication: int = Field(1, ge=1, description="for topics this sink creates")
    create_topics: bool = True
    topic_config: dict[str, str] = Field(
        default_factory=dict, description="topic settings on creation, e.g. retention.ms"
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="librdkafka producer settings (override defaults)"
    )

    _brokers = field_validator("brokers", mode="before")(_broker_list)


class RedisSink(_Strict):
    """Latest state hashes, per-symbol streams and pub/sub fan-out (docs/kafka_redis.md)."""

    type: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("candlewax", min_length=1)
    channels: list[Channel] | None = Field(
        None, description="for streams and pub/sub; all if unset"
    )
    latest: bool = Field(True, description="hash <prefix>:latest:<venue>:<symbol>")
    latest_ttl_s: int = Field(86_400, ge=1, description="expiry of the latest-state hash")
    streams: bool = Field(True, description="stream <prefix>:<channel>:<venue>:<symbol>")
    stream_maxlen: int = Field(100_000, ge=1, description="approximate entries kept per stream")
    pubsub: bool = Field(True, description="publish on <prefix>:<venue>:<symbol>:<channel>")
    buffer_max: int = Field(
        100_000,
        ge=0,
        description="records kept while Redis is unreachable; beyond: dropped, counted",
    )
    timeout_s: float = Field(2.0, gt=0, description="connect / socket timeout per call")
    retry_max_s: float = Field(5.0, gt=0, description="reconnect backoff cap")


SinkConfig = Annotated[
    StdoutSink
    | ConsoleSink
    | JsonlSink
    | RecorderSink
    | ParquetSink
    | NullSink
    | WebsocketSink
    | KafkaSink
    | RedisSink,
    Field(discriminator="type"),
]
_SINK_TYPES = (
    "stdout",
    "console",
    "jsonl",
    "recorder",
    "parquet",
    "null",
    "websocket",
    "kafka",
    "redis",
)


class RecoverySettings(_Strict):
    """Bytewax recovery: state and source positions (e.g. Kafka offsets) survive restarts."""

    dir: Path = Field(description="recovery database directory (created when missing)")
    snapshot_interval_s: float = Field(10.0, gt=0, description="epoch length between snapshots")
    backup_interval_s: float = Field(0.0, ge=0, description="keep old snapshots this long")


class PipelineConfig(_Strict):
    name: str = "candlewax"
    workers: int = Field(1, ge=1, le=64, description="Bytewax worker threads in this process")
    sources: list[SourceConfig] = Field(min_length=1)
    operators: OperatorsConfig = Field(default_factory=OperatorsConfig)
    sinks: list[SinkConfig] = Field(min_length=1)
    recovery: RecoverySettings | None = None

    @property
    def live(self) -> bool:
        return any(source.mode == "live" for source in self.sources)

    @model_validator(mode="after")
    def _no_raw_loop(self) -> PipelineConfig:
        if any(src.mode == "kafka" for src in self.sources):
            for sink in self.sinks:
                if isinstance(sink, KafkaSink) and sink.raw:
                    raise ValueError(
                        "a kafka sink with raw: true would republish frames read from Kafka; "
                        "set raw: false (the default with mode: kafka sources)"
                    )
        return self


def resolve_callable(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} must be 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return func


def apply_env(data: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Override ``data`` in place from CANDLEWAX__A__B=value variables."""
    env = os.environ if environ is None else environ
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
            if isinstance(node, list) and not (isinstance(key, int) and key < len(node)):
                raise ConfigError(f"{name}: no list item {part!r} to override")
            if not isinstance(node, dict | list):
                path = ".".join(parts[:i])
                raise ConfigError(f"{name}: {path} is {node!r}, not a section to override into")
            if last:
                node[key] = yaml.safe_load(raw)
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return data


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _SINK_TYPES and out.startswith("sinks"):
            continue  # discriminator tag, not a field the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {_field_path(tuple(err['loc']))}: {msg}")
    return "\n".join(lines)


def parse_config(
    data: Any, source: str = "<config>", env: dict[str, str] | None = None
) -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with sources, operators and sinks")
    data = copy.deepcopy(data)  # env overrides must not leak into the caller's dict
    apply_env(data, env)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    # Capture paths are relative to the YAML file (so examples run from anywhere);
    # output paths stay relative to the working directory.
    if isinstance(data, dict) and isinstance(data.get("sources"), list):
        base = path.resolve().parent
        for src in data["sources"]:
            if isinstance(src, dict) and isinstance(src.get("capture"), str):
                capture = Path(src["capture"])
                if not capture.is_absolute() and (base / capture).exists():
                    src["capture"] = str(base / capture)
    return parse_config(data, str(path), env)
