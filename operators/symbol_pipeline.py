"""Every step of one venue:symbol in one object, and the objects of one source's symbols.

``SymbolPipeline`` composes the operators of one key ("venue:symbol") the way the keyed
dataflow did, through their public methods only:

    trades -> Deduper.filter -> user "trades" operators -> trades out -> BarBuilder -> bars, late
    DepthMsg -> BookKeeper -> book, bbo[book], status (user "book" operators after)

``SymbolPipelines`` runs a batch of raw frames through the normalizer and hands each
key's items to its pipeline; BBO tickers, status records and dead letters pass through.
No engine here: the flows run it inside a source partition (nothing is routed between
workers) or inside one keyed step (Kafka raw topics).

Failure guards (kept from the keyed steps): a failing call becomes a dead letter and the
key keeps running with usable state. The operators reject a bad item alone; these guards
are the last line for what they do not foresee:
- a failing batch or timer call: a dead letter with the items; the state is kept (the
  book is cleared and resynced: it may be half-updated);
- a failing wake-up query: reported with the next output, no wake-up until new items (a
  timer failing again and again would spin a core);
- a state that cannot be pickled (with recovery): a dead letter; the key resumes empty.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from candlewax.schema import make_dead_letter, now_us
from operators.book import BookError, BookKeeper
from operators.dedupe import Deduper
from operators.events import DepthMsg
from operators.ohlcv import BarBuilder
from sources.frames import RawFrame

Record = dict[str, Any]
KeyedItem = tuple[str, Any]
# A user operator chain of one channel: (key, records) -> records.
RecordOps = Callable[[str, list[Record]], list[Record]]
# (frames and status dicts, keyed item of a status dict) -> keyed items, in order.
BatchNormalize = Callable[[Iterable[Any], Callable[[Any], KeyedItem]], list[KeyedItem]]
# (unified symbol a frame belongs to) for sinks of raw frames (the recorder).
SymbolOf = Callable[[RawFrame], str | None]


@dataclass(frozen=True)
class PipelineSettings:
    """What every pipeline of a flow does; ``None`` turns a step off."""

    dedupe_capacity: int | None
    make_bars: Callable[[str, str], BarBuilder] | None
    make_book: Callable[[str, str], BookKeeper] | None
    # Live: a book change inside an emit interval goes out when the interval ends even if
    # no message follows (replays keep their recorded ts_ingest clock: no timers).
    book_timers: bool = False
    wall_clock_close: bool = False  # bars close on the wall clock in a quiet market
    partial_bars: bool = False  # in-progress bar updates (timers)
    # With recovery, a run stopped early leaves its windows open for the resumed run.
    resumable: bool = False
    trade_ops: RecordOps | None = None
    bar_ops: RecordOps | None = None
    book_ops: RecordOps | None = None

    @property
    def timed(self) -> bool:
        """True when some pipeline may ask to be woken without new items."""
        bars = self.make_bars is not None and (self.wall_clock_close or self.partial_bars)
        return bars or (self.make_book is not None and self.book_timers)


def failure(venue: str, step: str, exc: Exception, values: Iterable[Any]) -> Record:
    try:
        raw = repr(list(values))[:10_000]
    except Exception as repr_exc:  # a value whose repr fails must not hide the failure
        raw = f"<items not printable: {type(repr_exc).__name__}>"
    return make_dead_letter(venue, now_us(), f"{step} failed: {type(exc).__name__}: {exc}", raw)


# The picklable part of a pipeline: (deduper, bar builder, book keeper).
State = tuple[Deduper | None, BarBuilder | None, BookKeeper | None]


class SymbolPipeline:
    """One key's dedupe, bars and book. The bar builder and the book are made from the
    first trade / depth message (they need its venue and symbol)."""

    def __init__(self, key: str, settings: PipelineSettings, state: State | None = None) -> None:
        self.key = key
        self.venue = key.split(":", 1)[0]
        self.settings = settings
        deduper, self.bars, self.book = state if state is not None else (None, None, None)
        if deduper is None and settings.dedupe_capacity is not None:
            deduper = Deduper(settings.dedupe_capacity)
        self.deduper = deduper
        self.pending: list[Record] = []  # failures found where nothing could be output
        self.quiet = False  # after a failing timer: no wake-up until new items

    def state(self) -> State:
        return (self.deduper, self.bars, self.book)

    # ---- items ----

    def on_items(self, trades: list[Record], depth: list[DepthMsg]) -> list[Record]:
        """Output of a batch of this key's trades and depth messages (each in order)."""
        self.quiet = False
        out = self._take_pending()
        if trades:
            out.extend(self._trades(trades))
        if depth and self.settings.make_book is not None:
            book_out = self._depth(depth)
            ops = self.settings.book_ops
            out.extend(ops(self.key, book_out) if ops is not None else book_out)
        return out

    def _take_pending(self) -> list[Record]:
        if not self.pending:
            return []
        out, self.pending = self.pending, []
        return out

    def _trades(self, trades: list[Record]) -> list[Record]:
        settings = self.settings
        kept: list[Record] = trades
        if self.deduper is not None:
            try:
                kept = self.deduper.filter(trades)
            except Exception as exc:  # the batch is lost, reported; the deduper goes on
                kept = [failure(self.venue, "dedupe on_batch", exc, trades)]
        if settings.trade_ops is not None:
            kept = settings.trade_ops(self.key, kept)
        if settings.make_bars is None:
            return kept
        bars = self._bars(kept)
        return kept + (settings.bar_ops(self.key, bars) if settings.bar_ops is not None else bars)

    def _bars(self, values: list[Record]) -> list[Record]:
        # Other records among the trades (a user operator's dead letters) are already on
        # their way to the sinks; they are not trades to aggregate.
        trades = [v for v in values if isinstance(v, dict) and v.get("type") == "trade"]
        if not trades:
            return []
        try:
            if self.bars is None:
                named = (t for t in trades if type(t.get("venue")) is type(t.get("symbol")) is str)
                first = next(named, None)
                if first is None:
                    raise ValueError("no trade of the batch names its venue and symbol")
                assert self.settings.make_bars is not None
                self.bars = self.settings.make_bars(first["venue"], first["symbol"])
            return self.bars.on_trades(trades, now_us())
        except Exception as exc:
            return [failure(self.venue, "ohlcv on_batch", exc, trades)]

    def _depth(self, values: list[DepthMsg]) -> list[Record]:
        out: list[Record] = []
        for msg in values:
            try:
                if self.book is None:
                    assert self.settings.make_book is not None
                    self.book = self.settings.make_book(msg.venue, msg.symbol)
                out.extend(self.book.on_msg(msg))
            except BookError as exc:  # refused before it touched the book
                out.append(failure(self.venue, "book", exc, [msg]))
            except Exception as exc:  # unforeseen, possibly half-way through a change
                out.append(failure(self.venue, "book", exc, [msg]))
                out.extend(self._resync(msg))
        return out

    def _resync(self, msg: DepthMsg) -> list[Record]:
        # The book may be half-updated: drop it and resync, as after a gap.
        if self.book is None:
            return []
        try:
            return self.book.desync(msg, "unexpected failure, book cleared")
        except Exception as again:
            return [failure(self.venue, "book recovery", again, [])]

    # ---- time ----

    def due(self) -> int | None:
        """Earliest time (µs) ``on_time`` can emit something, or None."""
        if self.quiet:
            return None
        settings = self.settings
        times: list[int] = []
        try:
            if self.bars is not None:
                # Only wake for what on_time can do: without wall-clock closing, that is
                # the next in-progress update (a window-close time would be unreachable).
                t = (
                    self.bars.next_wakeup()
                    if settings.wall_clock_close
                    else self.bars.next_partial()
                )
                if t is not None:
                    times.append(t)
            if self.book is not None and settings.book_timers:
                t = self.book.next_emit()
                if t is not None:
                    times.append(t)
        except Exception as exc:
            self.quiet = True
            self.pending.append(failure(self.venue, "wake-up query", exc, []))
            return None
        return min(times) if times else None

    def on_time(self, now: int) -> list[Record]:
        settings = self.settings
        out = self._take_pending()
        if self.bars is not None:
            try:
                bars = self.bars.on_time(now, now if settings.wall_clock_close else None)
            except Exception as exc:
                self.quiet = True  # the same timer would fail again at once
                bars = [failure(self.venue, "ohlcv on_notify", exc, [])]
            out.extend(settings.bar_ops(self.key, bars) if settings.bar_ops is not None else bars)
        if self.book is not None and settings.book_timers:
            try:
                book = self.book.on_tick(now)
            except Exception as exc:
                self.quiet = True
                book = [failure(self.venue, "book on_notify", exc, [])]
            out.extend(settings.book_ops(self.key, book) if settings.book_ops is not None else book)
        return out

    def on_eof(self, end_of_stream: bool) -> list[Record]:
        """The end of this run: open bars go out (final at the end of the stream, or as
        in-progress bars of a resumable run stopped early) and the last book state."""
        settings = self.settings
        out = self._take_pending()
        if self.bars is not None:
            try:
                if settings.resumable and not end_of_stream:
                    bars = self.bars.open_bars()
                else:
                    bars = self.bars.flush()
            except Exception as exc:
                bars = [failure(self.venue, "ohlcv on_eof", exc, [])]
            out.extend(settings.bar_ops(self.key, bars) if settings.bar_ops is not None else bars)
        if self.book is not None:
            try:
                book = self.book.flush()
            except Exception as exc:
                book = [failure(self.venue, "book on_eof", exc, [])]
            out.extend(settings.book_ops(self.key, book) if settings.book_ops is not None else book)
        return out


def _keyed_status(record: Record) -> KeyedItem:
    return f"{record['venue']}:{record.get('symbol') or ''}", record


class SymbolPipelines:
    """The pipelines of every key seen in one stream of frames (a source partition owns
    its symbols, so nothing it reads needs another worker)."""

    def __init__(
        self,
        normalize: Callable[[RawFrame], list[KeyedItem]],
        settings: PipelineSettings,
        symbol_of: SymbolOf | None = None,
    ) -> None:
        self.normalize = normalize
        # A whole batch in one call (Normalizer.batch), where the normalizer has it.
        self.batch_normalize: BatchNormalize | None = getattr(normalize, "batch", None)
        self.settings = settings
        # With a raw-frame sink (recorder), every frame also goes out as
        # ("frame", (frame, unified symbol)).
        self.symbol_of = symbol_of
        self.pipelines: dict[str, SymbolPipeline] = {}
        self.errors: list[Record] = []  # snapshot / restore failures, out with the next batch

    def pipeline(self, key: str) -> SymbolPipeline:
        pipe = self.pipelines.get(key)
        if pipe is None:
            pipe = self.pipelines[key] = SymbolPipeline(key, self.settings)
        return pipe

    def on_batch(self, batch: Iterable[Any]) -> list[KeyedItem]:
        """Frames (and a live source's status dicts) -> keyed output records, each key's
        records in the order the keyed steps gave them.

        Hot (every frame passes here): the batch is normalized in one call where the
        normalizer can (``Normalizer.batch``), a record that goes out as it is (a BBO
        ticker, a status, a dead letter) keeps its keyed item, and each key's output
        is paired with its key in C (``zip``/``repeat``)."""
        out: list[KeyedItem] = []
        if self.errors:
            out.extend((r["venue"] + ":", r) for r in self.errors)
            self.errors = []
        append = out.append
        trades: dict[str, list[Record]] = {}
        depth: dict[str, list[DepthMsg]] = {}
        for item in self._items(batch, out):
            value = item[1]
            if value.__class__ is DepthMsg:
                key = item[0]
                msgs = depth.get(key)
                if msgs is None:
                    depth[key] = [value]
                else:
                    msgs.append(value)
            elif value["type"] == "trade":
                key = item[0]
                records = trades.get(key)
                if records is None:
                    trades[key] = [value]
                else:
                    records.append(value)
            else:  # bbo (ticker), status, dead letters
                append(item)
        for key, key_trades in trades.items():
            records = self.pipeline(key).on_items(key_trades, depth.pop(key, []))
            out.extend(zip(repeat(key), records))
        for key, key_depth in depth.items():
            out.extend(zip(repeat(key), self.pipeline(key).on_items([], key_depth)))
        return out

    def _items(self, batch: Iterable[Any], out: list[KeyedItem]) -> list[KeyedItem]:
        """The keyed items of a batch, in order: each frame's normalized items and each
        status dict. With a raw-frame sink, each frame also goes to ``out`` as
        ("frame", (frame, symbol)) (a stream of its own: its order among the records
        does not matter)."""
        if self.batch_normalize is not None and self.symbol_of is None:
            return self.batch_normalize(batch, _keyed_status)
        items: list[KeyedItem] = []
        normalize, symbol_of = self.normalize, self.symbol_of
        for item in batch:
            if type(item) is not RawFrame:
                items.append(_keyed_status(item))
                continue
            if symbol_of is not None:
                out.append(("frame", (item, symbol_of(item))))
            items.extend(normalize(item))
        return items

    def due(self) -> int | None:
        if not self.settings.timed:
            return None
        times = [t for t in (p.due() for p in self.pipelines.values()) if t is not None]
        return min(times) if times else None

    def on_time(self, now: int) -> list[KeyedItem]:
        out: list[KeyedItem] = []
        for key, pipe in self.pipelines.items():
            due = pipe.due()
            if (due is not None and due <= now) or pipe.pending:
                out.extend([(key, r) for r in pipe.on_time(now)])
        return out

    def on_eof(self, end_of_stream: bool) -> list[KeyedItem]:
        out: list[KeyedItem] = [(r["venue"] + ":", r) for r in self.errors]
        self.errors = []
        for key, pipe in self.pipelines.items():
            out.extend([(key, r) for r in pipe.on_eof(end_of_stream)])
        return out

    # ---- recovery ----

    def snapshot(self) -> bytes:
        """Every key's state, pickled key by key: a key whose state cannot be pickled is a
        dead letter (it resumes empty), the others survive."""
        states: dict[str, bytes] = {}
        for key, pipe in self.pipelines.items():
            try:
                states[key] = pickle.dumps(pipe.state(), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # out with the next batch
                step = f"snapshot of {key} (its state will not survive a restart)"
                self.errors.append(failure(pipe.venue, step, exc, []))
        return pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, snapshot: Any) -> None:
        """Pipelines from ``snapshot`` (see ``snapshot``); what cannot be read is a dead
        letter and that key starts empty."""
        try:
            states = pickle.loads(snapshot) if snapshot is not None else {}
            if not isinstance(states, dict):
                raise TypeError(f"recovered state is a {type(states).__name__}, not a dict")
        except Exception as exc:
            self.errors.append(failure("", "restore", exc, []))
            return
        for key, blob in states.items():
            try:
                state = pickle.loads(blob)
                _check_state(state)
            except Exception as exc:
                self.errors.append(failure(key.split(":", 1)[0], f"restore of {key}", exc, []))
                continue
            self.pipelines[key] = SymbolPipeline(key, self.settings, state)


def _check_state(state: Any) -> None:
    kinds = (Deduper, BarBuilder, BookKeeper)
    if not (
        isinstance(state, tuple)
        and len(state) == 3
        and all(s is None or isinstance(s, k) for s, k in zip(state, kinds, strict=True))
    ):
        raise TypeError(f"recovered state is a {type(state).__name__}, not a pipeline state")
