"""Bytewax ``StatefulBatchLogic`` adapters around the engine-free operators.

Each adapter owns one operator object per key ("venue:symbol"), hands it the
key's whole batch, and translates its clock needs into ``notify_at``. Python
exceptions inside an operator would stop the whole cluster, so each batch is
guarded: a failure becomes a dead-letter record and the key keeps running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bytewax.operators import StatefulBatchLogic

from candlewax.config import BookConfig, DedupeConfig, PipelineConfig
from candlewax.schema import make_dead_letter, now_us
from operators.book import BookKeeper
from operators.dedupe import Deduper
from operators.events import DepthMsg
from operators.ohlcv import BarBuilder

Record = dict[str, Any]
Builder = Callable[[Any], StatefulBatchLogic[Any, Record, Any]]


def _at(due_us: int | None) -> datetime | None:
    return None if due_us is None else datetime.fromtimestamp(due_us / 1e6, tz=UTC)


def _failure(venue: str, step: str, exc: Exception, values: Iterable[Any]) -> Record:
    raw = repr(list(values))[:10_000]
    return make_dead_letter(venue, now_us(), f"{step} failed: {type(exc).__name__}: {exc}", raw)


class _DedupeLogic(StatefulBatchLogic[Record, Record, Deduper]):
    def __init__(self, deduper: Deduper) -> None:
        self.deduper = deduper

    def on_batch(self, values: list[Record]) -> tuple[Iterable[Record], bool]:
        return self.deduper.filter(values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> Deduper:
        return self.deduper


def dedupe_logic(cfg: DedupeConfig) -> Builder:
    def build(resume: Deduper | None) -> _DedupeLogic:
        return _DedupeLogic(resume if resume is not None else Deduper(cfg.capacity))

    return build


class _OhlcvLogic(StatefulBatchLogic[Record, Record, BarBuilder | None]):
    """The engine gives builders no key, so the BarBuilder is made from the first trade."""

    def __init__(
        self,
        builder: BarBuilder | None,
        make: Callable[[str, str], BarBuilder],
        wall_clock_close: bool,
        resumable: bool,
    ) -> None:
        self.builder = builder
        self.make = make
        self.wall_clock_close = wall_clock_close
        # With recovery, the end of this run is not the end of the stream: open
        # windows must stay open for the resumed run.
        self.resumable = resumable

    def on_batch(self, values: list[Record]) -> tuple[Iterable[Record], bool]:
        try:
            if self.builder is None:
                self.builder = self.make(values[0]["venue"], values[0]["symbol"])
            return self.builder.on_trades(values, now_us()), StatefulBatchLogic.RETAIN
        except Exception as exc:
            venue = str(values[0].get("venue", "")) if values else ""
            return [_failure(venue, "ohlcv", exc, values)], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Record], bool]:
        if self.builder is None:
            return [], StatefulBatchLogic.RETAIN
        now = now_us()
        event_now = now if self.wall_clock_close else None
        return self.builder.on_time(now, event_now), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Record], bool]:
        if self.builder is None:
            return [], StatefulBatchLogic.RETAIN
        if self.resumable:
            return self.builder.open_bars(), StatefulBatchLogic.RETAIN
        return self.builder.flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.builder is None:
            return None
        # Only wake for what on_notify can do: without wall-clock closing, that is the
        # next in-progress update (a window-close time would be unreachable: a spin).
        due = self.builder.next_wakeup() if self.wall_clock_close else self.builder.next_partial()
        return _at(due)

    def snapshot(self) -> BarBuilder | None:
        return self.builder


def ohlcv_logic(cfg: PipelineConfig) -> Builder:
    ocfg = cfg.operators.ohlcv
    wall_clock = ocfg.wall_clock_close if ocfg.wall_clock_close is not None else cfg.live
    partial_us = 1_000_000 if ocfg.partial_updates else 0

    def make(venue: str, symbol: str) -> BarBuilder:
        return BarBuilder(
            venue,
            symbol,
            ocfg.intervals,
            lateness_us=ocfg.lateness_ms * 1000,
            fill_empty=ocfg.fill_empty,
            partial_every_us=partial_us,
        )

    def build(resume: BarBuilder | None) -> _OhlcvLogic:
        return _OhlcvLogic(resume, make, wall_clock, cfg.recovery is not None)

    return build


class _BookLogic(StatefulBatchLogic[DepthMsg, Record, BookKeeper | None]):
    def __init__(self, keeper: BookKeeper | None, cfg: BookConfig, live: bool) -> None:
        self.keeper = keeper
        self.cfg = cfg
        # Live: a change inside an emit interval goes out when the interval ends even if
        # no message follows. (Replays keep their recorded ts_ingest clock: no timers.)
        self.live = live

    def on_batch(self, values: list[DepthMsg]) -> tuple[Iterable[Record], bool]:
        out: list[Record] = []
        for msg in values:
            try:
                if self.keeper is None:
                    self.keeper = BookKeeper(
                        msg.venue,
                        msg.symbol,
                        depth=self.cfg.depth,
                        emit_interval_us=self.cfg.emit_interval_ms * 1000,
                        emit_bbo=self.cfg.bbo,
                    )
                out.extend(self.keeper.on_msg(msg))
            except Exception as exc:
                out.append(_failure(msg.venue, "book", exc, [msg]))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Record], bool]:
        out = self.keeper.on_tick(now_us()) if self.keeper is not None else []
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.live or self.keeper is None:
            return None
        return _at(self.keeper.next_emit())

    def on_eof(self) -> tuple[Iterable[Record], bool]:
        # The last state goes out even if the emit interval has not passed.
        out = self.keeper.flush() if self.keeper is not None else []
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> BookKeeper | None:
        return self.keeper


def book_logic(cfg: BookConfig, live: bool = False) -> Builder:
    def build(resume: BookKeeper | None) -> _BookLogic:
        return _BookLogic(resume, cfg, live)

    return build
