"""Bytewax ``StatefulBatchLogic`` adapters around the engine-free operators.

Each adapter owns one operator object per key ("venue:symbol"), hands it the
key's whole batch, and translates its clock needs into ``notify_at``.

A Python exception in any callback would stop the whole cluster (a Rust panic
that loses every open bar), so every callback is guarded: a failure becomes a
dead-letter record and the key keeps running with usable state. The operators
isolate bad items themselves (one bad trade or depth message costs only itself);
these guards are the last line for what they do not foresee:

- on_batch / on_notify / on_eof: the failure is a dead letter with the items; the
  state is kept (the book is cleared and resynced: it may be half-updated).
- notify_at: the failure is reported with the next output; no wake-up is asked
  until new items arrive (a timer failing again and again would spin a core).
- snapshot (with recovery): the state is pickled here, so a state that cannot be
  pickled is a dead letter instead of a crash; the key then resumes empty.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bytewax.operators import StatefulBatchLogic

from candlewax.config import BookConfig, DedupeConfig, PipelineConfig
from candlewax.schema import make_dead_letter, now_us
from flows import inputs
from operators.book import BookError, BookKeeper
from operators.dedupe import Deduper
from operators.events import DepthMsg
from operators.ohlcv import BarBuilder

Record = dict[str, Any]
Builder = Callable[[Any], StatefulBatchLogic[Any, Record, Any]]
V = TypeVar("V")
S = TypeVar("S")


def _at(due_us: int | None) -> datetime | None:
    """The engine's wake-up time; None (never) for a time no datetime can hold."""
    if due_us is None:
        return None
    try:
        return datetime.fromtimestamp(due_us / 1e6, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _failure(venue: str, step: str, exc: Exception, values: Iterable[Any]) -> Record:
    try:
        raw = repr(list(values))[:10_000]
    except Exception as repr_exc:  # a value whose repr fails must not hide the failure
        raw = f"<items not printable: {type(repr_exc).__name__}>"
    return make_dead_letter(venue, now_us(), f"{step} failed: {type(exc).__name__}: {exc}", raw)


def _restore(resume: Any, expected: type[S]) -> tuple[S | None, Exception | None]:
    """The state of a snapshot: pickled bytes (see `_Guarded.snapshot`) or, from a store
    written by an older version, the object itself."""
    if isinstance(resume, bytes):
        try:
            resume = pickle.loads(resume)
        except Exception as exc:
            return None, exc
    if resume is None or isinstance(resume, expected):
        return resume, None
    return None, TypeError(f"recovered state is a {type(resume).__name__}, not {expected.__name__}")


class _Guarded(StatefulBatchLogic[V, Record, Any], Generic[V, S]):
    """Guards around every callback; subclasses implement the underscored ones."""

    step = ""

    def __init__(self, durable: bool, restore_error: Exception | None = None) -> None:
        # With recovery the engine pickles snapshots; without it, it never does.
        self.durable = durable
        self.pending: list[Record] = []  # failures of callbacks that cannot output
        self.quiet = False  # after a failing timer: no wake-up until new items
        if restore_error is not None:
            self.pending.append(_failure("", f"{self.step} restore", restore_error, []))

    # ---- what subclasses do ----

    def _batch(self, values: list[V]) -> list[Record]:
        raise NotImplementedError

    def _notify(self) -> list[Record]:
        return []

    def _eof(self) -> list[Record]:
        return []

    def _due(self) -> int | None:
        return None

    def _state(self) -> S | None:
        raise NotImplementedError

    def _venue(self, values: Iterable[Any]) -> str:
        return ""

    def _recover(self, values: list[V]) -> list[Record]:
        """Make the state usable again after an unforeseen failure (records to emit)."""
        return []

    # ---- the engine's callbacks ----

    def _out(self, out: list[Record]) -> tuple[list[Record], bool]:
        if self.pending:
            out = self.pending + out
            self.pending = []
        return out, StatefulBatchLogic.RETAIN

    def _failed(self, callback: str, exc: Exception, values: list[Any]) -> Record:
        return _failure(self._venue(values), f"{self.step} {callback}", exc, values)

    def on_batch(self, values: list[V]) -> tuple[list[Record], bool]:
        self.quiet = False
        try:
            out = self._batch(values)
        except Exception as exc:
            out = [self._failed("on_batch", exc, values)]
            try:
                out += self._recover(values)
            except Exception as again:
                out.append(self._failed("recovery", again, []))
        return self._out(out)

    def on_notify(self) -> tuple[list[Record], bool]:
        try:
            out = self._notify()
        except Exception as exc:
            self.quiet = True  # the same timer would fail again at once
            out = [self._failed("on_notify", exc, [])]
        return self._out(out)

    def on_eof(self) -> tuple[list[Record], bool]:
        try:
            out = self._eof()
        except Exception as exc:
            out = [self._failed("on_eof", exc, [])]
        return self._out(out)

    def notify_at(self) -> datetime | None:
        if self.quiet:
            return None
        try:
            return _at(self._due())
        except Exception as exc:
            self.quiet = True
            self.pending.append(self._failed("notify_at", exc, []))
            return None

    def snapshot(self) -> Any:
        state = self._state()
        if not self.durable:
            return state  # never pickled: no copy needed
        try:
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self.pending.append(
                self._failed("snapshot (this key's state will not survive a restart)", exc, [])
            )
            return None


class _DedupeLogic(_Guarded[Record, Deduper]):
    step = "dedupe"

    def __init__(self, deduper: Deduper, durable: bool, error: Exception | None) -> None:
        super().__init__(durable, error)
        self.deduper = deduper

    def _batch(self, values: list[Record]) -> list[Record]:
        return self.deduper.filter(values)

    def _state(self) -> Deduper:
        return self.deduper

    def _venue(self, values: Iterable[Any]) -> str:
        return next((str(v.get("venue", "")) for v in values if isinstance(v, dict)), "")


def dedupe_logic(cfg: DedupeConfig, durable: bool = False) -> Builder:
    def build(resume: Any) -> _DedupeLogic:
        deduper, error = _restore(resume, Deduper)
        return _DedupeLogic(deduper or Deduper(cfg.capacity), durable, error)

    return build


class _OhlcvLogic(_Guarded[Record, BarBuilder]):
    """The engine gives builders no key, so the BarBuilder is made from the first trade."""

    step = "ohlcv"

    def __init__(
        self,
        builder: BarBuilder | None,
        make: Callable[[str, str], BarBuilder],
        wall_clock_close: bool,
        resumable: bool,
        error: Exception | None = None,
    ) -> None:
        super().__init__(resumable, error)
        self.builder = builder
        self.make = make
        self.wall_clock_close = wall_clock_close
        # With recovery, a run stopped early leaves its windows open for the resumed
        # run; the end of a finite input is the end of the stream and closes them.
        self.resumable = resumable

    def _batch(self, values: list[Record]) -> list[Record]:
        # Other records on the trades stream (a user operator's dead letters) are
        # already on their way to the sinks; they are not trades to aggregate.
        trades = [v for v in values if isinstance(v, dict) and v.get("type") == "trade"]
        if not trades:
            return []
        if self.builder is None:
            named = (t for t in trades if type(t.get("venue")) is type(t.get("symbol")) is str)
            first = next(named, None)
            if first is None:
                raise ValueError("no trade of the batch names its venue and symbol")
            self.builder = self.make(first["venue"], first["symbol"])
        return self.builder.on_trades(trades, now_us())

    def _notify(self) -> list[Record]:
        if self.builder is None:
            return []
        now = now_us()
        return self.builder.on_time(now, now if self.wall_clock_close else None)

    def _eof(self) -> list[Record]:
        if self.builder is None:
            return []
        if self.resumable and not inputs.stream_ended():
            return self.builder.open_bars()
        return self.builder.flush()

    def _due(self) -> int | None:
        if self.builder is None:
            return None
        # Only wake for what on_notify can do: without wall-clock closing, that is the
        # next in-progress update (a window-close time would be unreachable: a spin).
        if self.wall_clock_close:
            return self.builder.next_wakeup()
        return self.builder.next_partial()

    def _state(self) -> BarBuilder | None:
        return self.builder

    def _venue(self, values: Iterable[Any]) -> str:
        if self.builder is not None:
            return self.builder.venue
        return next((str(v.get("venue", "")) for v in values if isinstance(v, dict)), "")


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

    def build(resume: Any) -> _OhlcvLogic:
        builder, error = _restore(resume, BarBuilder)
        return _OhlcvLogic(builder, make, wall_clock, cfg.recovery is not None, error)

    return build


class _BookLogic(_Guarded[DepthMsg, BookKeeper]):
    step = "book"

    def __init__(
        self,
        keeper: BookKeeper | None,
        cfg: BookConfig,
        live: bool,
        durable: bool = False,
        error: Exception | None = None,
    ) -> None:
        super().__init__(durable, error)
        self.keeper = keeper
        self.cfg = cfg
        # Live: a change inside an emit interval goes out when the interval ends even if
        # no message follows. (Replays keep their recorded ts_ingest clock: no timers.)
        self.live = live

    def _batch(self, values: list[DepthMsg]) -> list[Record]:
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
            except BookError as exc:  # refused before it touched the book
                out.append(_failure(self._venue([msg]), "book", exc, [msg]))
            except Exception as exc:  # unforeseen, possibly half-way through a change
                out.append(_failure(self._venue([msg]), "book", exc, [msg]))
                out.extend(self._recover([msg]))
        return out

    def _recover(self, values: list[DepthMsg]) -> list[Record]:
        # The book may be half-updated: drop it and resync, as after a gap.
        if self.keeper is None or not values:
            return []
        return self.keeper.desync(values[-1], "unexpected failure, book cleared")

    def _notify(self) -> list[Record]:
        return self.keeper.on_tick(now_us()) if self.keeper is not None else []

    def _due(self) -> int | None:
        if not self.live or self.keeper is None:
            return None
        return self.keeper.next_emit()

    def _eof(self) -> list[Record]:
        # The last state goes out even if the emit interval has not passed.
        return self.keeper.flush() if self.keeper is not None else []

    def _state(self) -> BookKeeper | None:
        return self.keeper

    def _venue(self, values: Iterable[Any]) -> str:
        if self.keeper is not None:
            return self.keeper.venue
        return next((str(getattr(v, "venue", "")) for v in values), "")


def book_logic(cfg: BookConfig, live: bool = False, durable: bool = False) -> Builder:
    def build(resume: Any) -> _BookLogic:
        keeper, error = _restore(resume, BookKeeper)
        return _BookLogic(keeper, cfg, live, durable, error)

    return build
