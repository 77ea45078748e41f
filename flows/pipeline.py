"""YAML config -> Bytewax dataflow. The only module that wires the engine.

Topology of live and replay sources (fused: nothing is keyed or routed):

    source partition (one configured source, its symbols) ──► records ──► sinks
      frames ─normalize─► per "venue:symbol" (operators/symbol_pipeline.py):
                          trades ─dedupe─► trades out ─ohlcv─► bars, late
                          depth msgs ─book─► book, bbo, status
                          bbo (ticker), status, dead letters pass through
      (+ ("frame", (frame, symbol)) items when a sink takes raw frames)

Kafka raw-topic sources (``mode: kafka``, stage 2) have one partition per Kafka
partition, not per symbol: their frames take the keyed path, a ``stateful_batch`` per
step (dedupe, ohlcv, book) over the same operators, keyed by "venue:symbol".

Sinks: flows/outputs.py (per worker where no file needs a single writer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import DynamicSource, FixedPartitionedSource, Source

from candlewax.config import PipelineConfig, resolve_callable
from candlewax.metrics import count_frames_from
from candlewax.schema import CHANNEL_OF_TYPE, make_dead_letter
from flows.cluster import SINGLE, Place
from flows.fused import FusedDynamicSource, FusedSource
from flows.inputs import PipelineSource, kafka_frames, source_for, start_run
from flows.outputs import MetricsSink, sinks_for
from flows.stateful import book_logic, dedupe_logic, ohlcv_logic
from operators.book import BookKeeper
from operators.events import DepthMsg
from operators.normalize import Normalizer
from operators.ohlcv import BarBuilder
from operators.symbol_pipeline import PipelineSettings, RecordOps, SymbolPipelines
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


def pipeline_settings(cfg: PipelineConfig) -> PipelineSettings:
    """The per-symbol steps of ``cfg`` (operators/symbol_pipeline.py)."""
    ops = cfg.operators
    ocfg, bcfg = ops.ohlcv, ops.book
    wall_clock = ocfg.wall_clock_close if ocfg.wall_clock_close is not None else cfg.live
    partial_us = 1_000_000 if ocfg.partial_updates else 0

    def make_bars(venue: str, symbol: str) -> BarBuilder:
        return BarBuilder(
            venue,
            symbol,
            ocfg.intervals,
            lateness_us=ocfg.lateness_ms * 1000,
            fill_empty=ocfg.fill_empty,
            partial_every_us=partial_us,
        )

    def make_book(venue: str, symbol: str) -> BookKeeper:
        return BookKeeper(
            venue,
            symbol,
            depth=bcfg.depth,
            emit_interval_us=bcfg.emit_interval_ms * 1000,
            emit_bbo=bcfg.bbo,
        )

    return PipelineSettings(
        dedupe_capacity=ops.dedupe.capacity if ops.dedupe.enabled else None,
        make_bars=make_bars if ocfg.enabled else None,
        make_book=make_book if bcfg.enabled else None,
        book_timers=cfg.live,
        wall_clock_close=wall_clock,
        partial_bars=bool(partial_us),
        resumable=cfg.recovery is not None,
        trade_ops=_record_ops(cfg, "trades"),
        bar_ops=_record_ops(cfg, "bars"),
        book_ops=_record_ops(cfg, "book"),
    )


def build_flow(
    cfg: PipelineConfig, source: Source[Any] | None = None, place: Place = SINGLE
) -> Dataflow:
    """The dataflow of ``cfg`` as process ``place`` of its cluster runs it; ``source``
    replaces the configured sources (benchmarks, tests feeding frames from memory) and
    must yield what they do: RawFrames and dicts."""
    flow = Dataflow(cfg.name)
    start_run()
    normalizer = build_normalizer(cfg)
    sinks = sinks_for(cfg, place, list(PipelineSource(cfg).groups))
    with_frames = any(kind == "frames" for _, _, kind in sinks)
    records: list[Stream[KeyedItem]] = []
    frames: list[Stream[KeyedItem]] = []

    if source is not None or any(src.mode != "kafka" for src in cfg.sources):
        settings = pipeline_settings(cfg)
        symbol_of = _symbol_of(normalizer) if with_frames else None

        def make() -> SymbolPipelines:
            return SymbolPipelines(normalizer, settings, symbol_of)

        inner = source if source is not None else source_for(cfg, place)
        fused: Source[Any]
        if isinstance(inner, DynamicSource):
            fused = FusedDynamicSource(inner, make)
        else:
            assert isinstance(inner, FixedPartitionedSource)
            fused = FusedSource(inner, make)
        out: Stream[KeyedItem] = op.input("input", flow, fused)
        if with_frames:
            is_frame = op.branch("is_frame", out, lambda kv: kv[0] == "frame")
            frames.append(is_frame.trues)
            out = is_frame.falses
        records.append(out)

    raw = kafka_frames(flow, cfg) if source is None else None
    if raw is not None:
        records.append(_keyed_path(cfg, normalizer, raw))
        if with_frames:
            kafka_recorded = op.flat_map_batch("frames", raw, _frames_only)
            frames.append(op.map("recorder_items", kafka_recorded, _recorder_item(normalizer)))

    merged = records[0] if len(records) == 1 else op.merge("all_records", *records)
    op.output("metrics", merged, MetricsSink())
    count_frames_from(lambda: {v: c.frames for v, c in normalizer.stats.items()})
    recorded: Stream[KeyedItem] | None = None
    if frames:
        recorded = frames[0] if len(frames) == 1 else op.merge("all_frames", *frames)
    for name, sink, stream_kind in sinks:
        if stream_kind == "frames":
            assert recorded is not None
            op.output(name, recorded, sink)
        else:
            op.output(name, merged, sink)
    return flow


def _keyed_path(cfg: PipelineConfig, normalizer: Normalizer, raw: Stream[Any]) -> Stream[KeyedItem]:
    """Frames of Kafka raw topics: normalized, then one keyed ``stateful_batch`` per step."""
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
    return op.merge("keyed_records", *outputs)


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


def _symbol_of(normalizer: Normalizer) -> Callable[[RawFrame], str | None]:
    def symbol_of(frame: RawFrame) -> str | None:
        parser = normalizer.parsers.get(frame.venue)
        return parser.symbol_of(frame) if parser is not None else None

    return symbol_of


def _recorder_item(normalizer: Normalizer) -> Any:
    symbol_of = _symbol_of(normalizer)

    def item(frame: RawFrame) -> tuple[str, tuple[RawFrame, str | None]]:
        return ("frame", (frame, symbol_of(frame)))

    return item


def _user_ops(cfg: PipelineConfig, channel: str, stream: Stream[KeyedItem]) -> Stream[KeyedItem]:
    for i, user in enumerate(cfg.operators.user):
        if channel in user.channels:
            stream = op.flat_map(f"user_{channel}_{i}", stream, _user_step(user.path))
    return stream


def _record_ops(cfg: PipelineConfig, channel: str) -> RecordOps | None:
    """The user operators of ``channel`` as one call over a key's records (the fused
    path runs them where the keyed path's flat_maps stood: trades before OHLCV)."""
    steps = [_user_step(u.path) for u in cfg.operators.user if channel in u.channels]
    if not steps:
        return None

    def run(key: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for step in steps:
            records = [out for record in records for _, out in step((key, record))]
        return records

    return run


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
