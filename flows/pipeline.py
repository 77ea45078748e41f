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

from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from candlewax.config import PipelineConfig, resolve_callable
from flows.inputs import source_for
from flows.outputs import sinks_for
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


def build_flow(cfg: PipelineConfig) -> Dataflow:
    flow = Dataflow(cfg.name)
    raw = op.input("input", flow, source_for(cfg))
    # Live sources interleave their own status dicts (connected, stale, ...) with frames.
    split = op.branch("is_frame", raw, lambda x: isinstance(x, RawFrame))
    frames = cast(Stream[RawFrame], split.trues)
    source_status: Stream[KeyedItem] = op.map(
        "key_source_status", cast(Stream[dict[str, Any]], split.falses), _keyed_status
    )

    normalizer = build_normalizer(cfg)
    items: Stream[KeyedItem] = op.flat_map("normalize", frames, normalizer)
    is_depth = op.branch("is_depth", items, lambda kv: isinstance(kv[1], DepthMsg))
    records = is_depth.falses
    is_trade = op.branch("is_trade", records, lambda kv: kv[1]["type"] == "trade")
    other = is_trade.falses  # bbo (ticker), status, dead letters

    outputs: list[Stream[KeyedItem]] = [source_status, other]

    trades: Stream[KeyedItem] = is_trade.trues
    if cfg.operators.dedupe.enabled:
        trades = op.stateful_batch("dedupe", trades, dedupe_logic(cfg.operators.dedupe))
    trades = _user_ops(cfg, "trades", trades)
    outputs.append(trades)

    if cfg.operators.ohlcv.enabled:
        bars_and_late = op.stateful_batch("ohlcv", trades, ohlcv_logic(cfg))
        outputs.append(_user_ops(cfg, "bars", bars_and_late))

    if cfg.operators.book.enabled:
        book_out = op.stateful_batch("book", is_depth.trues, book_logic(cfg.operators.book))
        outputs.append(_user_ops(cfg, "book", book_out))

    merged = op.merge("all_records", *outputs)
    recorded: Stream[tuple[str, tuple[RawFrame, str | None]]] | None = None
    for name, sink, stream_kind in sinks_for(cfg):
        if stream_kind == "frames":
            if recorded is None:
                recorded = op.map("recorder_items", frames, _recorder_item(normalizer))
            op.output(name, recorded, sink)
        else:
            op.output(name, merged, sink)
    return flow


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

    def step(kv: KeyedItem) -> list[KeyedItem]:
        key, record = kv
        # A user bug must not stop the cluster: the record goes on unchanged and
        # the failure is reported as a dead letter.
        try:
            result = func(record)
        except Exception as exc:
            from candlewax.schema import make_dead_letter

            dead = make_dead_letter(
                key.split(":", 1)[0],
                int(record.get("ts_ingest", 0)),
                f"user operator {path} raised {type(exc).__name__}: {exc}",
                repr(record),
            )
            return [kv, (key, dead)]
        if result is None:
            return []
        if isinstance(result, list):
            return [(key, r) for r in result]
        return [(key, result)]

    return step
