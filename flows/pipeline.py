"""YAML config -> Bytewax dataflow. The only module that wires the engine.

Topology (keys are "venue:symbol"):

    frames ──normalize──► trades ─dedupe─► trades out ─ohlcv─► bars, late
                     ├──► depth msgs ─book─► book, bbo, status
                     └──► bbo (ticker), status, dead letters
    frames ──(recorder sink, raw)

Every stateful step is a ``stateful_batch`` over an engine-free object from
``operators/``, so a key's whole batch is processed in one call and items
crossing workers stay small (dicts of str/int, NamedTuples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from candlewax.config import PipelineConfig, resolve_callable
from candlewax.metrics import count_frames_from
from candlewax.schema import CHANNEL_OF_TYPE, make_dead_letter
from flows.inputs import pipeline_input
from flows.outputs import MetricsSink, sinks_for
from flows.stateful import book_logic, dedupe_logic, ohlcv_logic
from operators.events import DepthMsg
from operators.normalize import Normalizer
from sources.frames import RawFrame
from sources.registry import make_parser

KeyedItem = tuple[str, Any]


def _keyed_status(record: dict[str, Any]) -> KeyedItem:
    return f"{record['venue']}:{record.get('symbol') or ''}", record


def build_normalizer(cfg: PipelineConfig) -> Normalizer:
    parsers: dict[str, Any] = {}
    symbols: dict[str, list[str]] = {}
    for src in cfg.sources:
        symbols.setdefault(src.venue, []).extend(src.symbols)
    for venue, names in symbols.items():
        parsers[venue] = make_parser(venue, sorted(set(names)))
    return Normalizer(parsers)


def build_flow(cfg: PipelineConfig, source: Source[Any] | None = None) -> Dataflow:
    """The dataflow of ``cfg``; ``source`` replaces the configured sources (benchmarks,
    tests feeding frames from memory) and must yield what they do: RawFrames and dicts."""
    flow = Dataflow(cfg.name)
    raw = pipeline_input(flow, cfg, source)
    normalizer = build_normalizer(cfg)
    items: Stream[KeyedItem] = op.flat_map_batch("normalize", raw, _normalize_batch(normalizer))
    is_depth = op.branch("is_depth", items, lambda kv: isinstance(kv[1], DepthMsg))
    records = is_depth.falses
    is_trade = op.branch("is_trade", records, lambda kv: kv[1]["type"] == "trade")
    other = is_trade.falses  # bbo (ticker), status, dead letters

    outputs: list[Stream[KeyedItem]] = [other]

    trades: Stream[KeyedItem] = is_trade.trues
    if cfg.operators.dedupe.enabled:
        dedupe = dedupe_logic(cfg.operators.dedupe, durable=cfg.recovery is not None)
        trades = op.stateful_batch("dedupe", trades, dedupe)
    trades = _user_ops(cfg, "trades", trades)
    outputs.append(trades)

    if cfg.operators.ohlcv.enabled:
        bars_and_late = op.stateful_batch("ohlcv", trades, ohlcv_logic(cfg))
        outputs.append(_user_ops(cfg, "bars", bars_and_late))

    if cfg.operators.book.enabled:
        book = book_logic(cfg.operators.book, cfg.live, durable=cfg.recovery is not None)
        book_out = op.stateful_batch("book", is_depth.trues, book)
        outputs.append(_user_ops(cfg, "book", book_out))

    merged = op.merge("all_records", *outputs)
    op.output("metrics", merged, MetricsSink())
    count_frames_from(lambda: {v: c.frames for v, c in normalizer.stats.items()})
    recorded: Stream[tuple[str, tuple[RawFrame, str | None]]] | None = None
    for name, sink, stream_kind in sinks_for(cfg):
        if stream_kind == "frames":
            if recorded is None:
                frames = op.flat_map_batch("frames", raw, _frames_only)
                recorded = op.map("recorder_items", frames, _recorder_item(normalizer))
            op.output(name, recorded, sink)
        else:
            op.output(name, merged, sink)
    return flow


def _normalize_batch(normalizer: Normalizer) -> Callable[[list[Any]], list[KeyedItem]]:
    """One call per source batch (not per frame): frames -> keyed items. Live sources
    interleave their own status dicts (connected, stale, ...); they are keyed as they are."""

    def normalize(batch: list[Any]) -> list[KeyedItem]:
        out: list[KeyedItem] = []
        for item in batch:
            if isinstance(item, RawFrame):
                out.extend(normalizer(item))
            else:
                out.append(_keyed_status(item))
        return out

    return normalize


def _frames_only(batch: list[Any]) -> list[RawFrame]:
    return [item for item in batch if isinstance(item, RawFrame)]


def _recorder_item(normalizer: Normalizer) -> Any:
    def item(frame: RawFrame) -> tuple[str, tuple[RawFrame, str | None]]:
        parser = normalizer.parsers.get(frame.venue)
        symbol = parser.symbol_of(frame) if parser is not None else None
        return ("recorder", (frame, symbol))

    return item


def _user_ops(cfg: PipelineConfig, channel: str, stream: Stream[KeyedItem]) -> Stream[KeyedItem]:
    for i, user in enumerate(cfg.operators.user):
        if channel in user.channels:
            stream = op.flat_map(f"user_{channel}_{i}", stream, _user_step(user.path))
    return stream


def _user_step(path: str) -> Any:
    func = resolve_callable(path)

    def dead(key: str, record: Any, reason: str) -> KeyedItem:
        ts = record.get("ts_ingest", 0) if isinstance(record, dict) else 0
        venue = key.split(":", 1)[0]
        return key, make_dead_letter(
            venue, int(ts or 0), f"user operator {path} {reason}", repr(record)[:10_000]
        )

    def checked(key: str, out: Any) -> KeyedItem:
        # What a user operator returns enters every sink: a value that is not a record
        # of a known type becomes a dead letter here instead of failing a sink later.
        if isinstance(out, dict) and out.get("type") in CHANNEL_OF_TYPE:
            return key, out
        return dead(key, out, f"returned {type(out).__name__}, not a record with a known 'type'")

    def step(kv: KeyedItem) -> list[KeyedItem]:
        key, record = kv
        # A user bug must not stop the cluster: the record goes on unchanged and
        # the failure is reported as a dead letter.
        try:
            result = func(record)
        except Exception as exc:
            return [kv, dead(key, record, f"raised {type(exc).__name__}: {exc}")]
        if result is None:
            return []
        if isinstance(result, list):
            return [checked(key, r) for r in result]
        return [checked(key, result)]

    return step
