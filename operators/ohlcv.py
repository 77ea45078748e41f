"""Event-time OHLCV bars for one (venue, symbol).

Windows are epoch-aligned and tumbling: ``[start, start + interval)`` with
``start = ts - ts % interval`` on ``ts_exchange`` (so "1d" bars are UTC days).

Watermark = the largest event time observed minus ``lateness_us``. Observations are
trade ``ts_exchange`` values and, for quiet live markets, the ``event_now_us`` the
caller passes to `BarBuilder.on_time`. A window closes (its final bar is emitted)
once the watermark reaches its end. A trade whose window is already closed is late:
it goes out as a ``late`` record per interval it missed, is counted, and stays out of
that interval's bars. Lateness is judged per trade in arrival order, so the result
does not depend on how the caller batches trades.

Bar fields (candlewax.schema.Bar): open/close are the price texts of the earliest /
latest trade by (ts_exchange, arrival order), as are first/last trade id; high/low
are the texts of the highest / lowest price (first one on ties). Sums are exact:
Python ints at the builder's decimal scale (the most fractional digits seen so far in
prices, resp. sizes; a finer text rescales the open windows, which never rounds), made
text only when a bar is rendered. ``vwap = quote_volume / volume`` rounded half-even
to 18 decimal places, trailing zeros stripped; None when volume is zero.

Cost: a trade updates only the window of the finest interval; the window of each
interval whose length is a multiple of the finest one's is built by merging the finest
windows as they close (bars, lateness and tie rules exactly as if every trade were
added to it: a trade late for the finest interval but in time for a coarser one is
added to the coarser window directly; see `_Window.merge`). Other intervals take every
trade directly.

Empty-bar fill (``fill_empty``): once the watermark passes an empty window that
follows an emitted bar of the same interval, a ``filled`` bar carries the previous
close with zero volumes, so each interval's final bars are contiguous from its first
bar on. No fill precedes the first bar, and a gap longer than ``max_fill_windows``
windows (a bogus timestamp, a long outage) is not filled but counted.

In-progress updates (``partial_every_us`` > 0): open windows that changed since their
last update are emitted with ``final=False``, at most once per period of the
caller's clock (``now_us``), never ``time.time()``.

Output order of one call: late and dead-letter records in arrival order, then final
bars by interval (shortest first) then start, then in-progress bars likewise.

One bad trade never costs other bars: a trade is checked before it touches any window
(see `MAX_DIGITS`; a price or size outside the exact range would otherwise fail
much later, when its bar is rendered) and rejected as a dead letter, so its window
still closes without it. A window that fails to render anyway (state restored from an
older version) becomes one dead letter with its aggregate, and the other windows go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson

from candlewax.schema import SCHEMA_VERSION, make_dead_letter
from operators.intervals import parse_intervals

# Accepted prices and sizes: the contract's plain decimal text (no sign, exponent, NaN,
# Infinity or blanks: bars carry the texts of their open/high/low/close trades as they
# are), below 10**MAX_DIGITS, in steps of 10**-MAX_DIGITS (real ones use well under 20
# digits either side of the point). The sums are unbounded ints, so the bound is not
# needed for exactness any more; it keeps the scales (and so the ints) small, and the
# set of accepted trades what it was.
MAX_DIGITS = 24
# ts_exchange must stay below the last microsecond a datetime can hold (year 9999),
# so the window times stay valid wake-up times for the engine.
MAX_TS_US = 253_402_300_800_000_000
VWAP_PLACES = 18

DEFAULT_MAX_FILL_WINDOWS = 100_000


# Texts already converted: real feeds repeat prices and sizes (the bundled Binance
# captures: 3,115 distinct prices and 4,032 sizes in 15,863 trades), and a dict hit is
# a tenth of a conversion. Shared by all builders; emptied when full, so bounded.
_AMOUNTS: dict[str, tuple[int, int]] = {}
AMOUNT_CACHE_SIZE = 8192


def _amount(text: str) -> tuple[int, int]:
    """`_convert`, remembered."""
    known = _AMOUNTS.get(text)
    if known is None:
        known = _convert(text)
        if len(_AMOUNTS) >= AMOUNT_CACHE_SIZE:
            _AMOUNTS.clear()
        _AMOUNTS[text] = known
    return known


def _convert(text: str) -> tuple[int, int]:
    """``(digits, scale)`` with ``text == digits / 10**scale``, checking the text in the
    same pass; ValueError if it is not plain decimal text in the accepted range.

    Equivalent to the old check, the regex ``0*[0-9]{1,24}(\\.[0-9]{1,24}0*)?``:
    ``isdigit`` on an ASCII string accepts exactly 0-9 (``int`` alone would accept signs,
    blanks, underscores and non-ASCII digits)."""
    if type(text) is not str:  # (a str subclass equal to a known text passes the cache)
        raise TypeError
    whole, dot, fraction = text.partition(".")
    if not (whole.isdigit() and text.isascii()):
        raise ValueError
    if len(whole) > MAX_DIGITS:
        whole = whole.lstrip("0") or "0"
        if len(whole) > MAX_DIGITS:
            raise ValueError
    if not dot:
        return int(whole), 0
    if not fraction.isdigit():
        raise ValueError
    if len(fraction) > MAX_DIGITS:
        fraction = fraction.rstrip("0")
        if len(fraction) > MAX_DIGITS:
            raise ValueError
    return int(whole + fraction), len(fraction)


def _text(value: int, scale: int) -> str:
    """``value / 10**scale`` as plain text, trailing zeros stripped (as `decimal_text`)."""
    if not scale:
        return str(value)
    whole, fraction = divmod(value, 10**scale)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:0{scale}d}".rstrip("0")


class _Window:
    """Running aggregate of one open window: prices (high, low) at the builder's price
    scale, sizes (volume, buy, sell) at its size scale, quote at the sum of both."""

    __slots__ = (
        "buy",
        "close",
        "close_id",
        "close_ts",
        "count",
        "dirty",
        "high",
        "high_seq",
        "high_text",
        "low",
        "low_seq",
        "low_text",
        "open",
        "open_id",
        "open_ts",
        "quote",
        "sell",
        "volume",
    )

    def __init__(
        self,
        ts: int,
        trade_id: str,
        price_text: str,
        price: int,
        size: int,
        notional: int,
        buy: bool,
        seq: int,
    ) -> None:
        self.open = self.close = self.high_text = self.low_text = price_text
        self.high_seq = self.low_seq = seq  # arrival order, for ties across merged windows
        self.open_ts = self.close_ts = ts
        self.open_id = self.close_id = trade_id
        self.high = self.low = price
        self.volume = size
        self.quote = notional
        self.buy = size if buy else 0
        self.sell = 0 if buy else size
        self.count = 1
        self.dirty = True  # changed since the last in-progress update

    def merge(self, other: _Window) -> None:
        """Add ``other``, a finest-interval window that closes, into this coarser one.

        Finest windows are disjoint in time, so equal times meet only here with a trade
        this window took directly (late for the finest interval, in time for this one):
        such a trade arrived after every trade of ``other`` in its time range (after
        it, that range was late for the finest interval). So on equal times ``other``
        keeps the open and this window the close; on equal prices the arrival order
        (``*_seq``) picks the first."""
        if other.open_ts <= self.open_ts:
            self.open, self.open_ts, self.open_id = other.open, other.open_ts, other.open_id
        if other.close_ts > self.close_ts:
            self.close, self.close_ts, self.close_id = other.close, other.close_ts, other.close_id
        if other.high > self.high or (other.high == self.high and other.high_seq < self.high_seq):
            self.high, self.high_text, self.high_seq = other.high, other.high_text, other.high_seq
        if other.low < self.low or (other.low == self.low and other.low_seq < self.low_seq):
            self.low, self.low_text, self.low_seq = other.low, other.low_text, other.low_seq
        self.volume += other.volume
        self.quote += other.quote
        self.buy += other.buy
        self.sell += other.sell
        self.count += other.count

    def copy(self) -> _Window:
        twin = _Window.__new__(_Window)
        for name in _Window.__slots__:
            setattr(twin, name, getattr(self, name))
        return twin

    def rescale(self, price_factor: int, size_factor: int) -> None:
        self.high *= price_factor
        self.low *= price_factor
        self.quote *= price_factor * size_factor
        self.volume *= size_factor
        self.buy *= size_factor
        self.sell *= size_factor


class _Interval:
    """Windows and close state of one bar interval."""

    __slots__ = ("closed_through", "label", "last_close", "length", "merged", "windows")

    def __init__(self, label: str, length: int, merged: bool) -> None:
        self.label = label
        self.length = length
        # Built from the finest interval's windows as they close (its length is a
        # multiple of the finest one's), plus the trades late for the finest interval
        # but in time for this one; otherwise every trade is added here directly.
        self.merged = merged
        self.windows: dict[int, _Window] = {}  # open windows by start
        self.closed_through = 0  # end of the last closed window; earlier starts are late
        self.last_close: str | None = None  # close of the last final bar, for fill


class BarBuilder:
    """Event-time OHLCV bars of one (venue, symbol) for several intervals at once."""

    __slots__ = (
        "_due",
        "_intervals",
        "_late_floor",
        "_max_ts",
        "_merged_rest",
        "_next_partial_at",
        "_price_scale",
        "_size_scale",
        "fill_empty",
        "fill_skipped",
        "late",
        "lateness_us",
        "malformed",
        "max_fill_windows",
        "partial_every_us",
        "symbol",
        "trades",
        "venue",
    )

    def __init__(
        self,
        venue: str,
        symbol: str,
        intervals: Iterable[str],
        lateness_us: int = 0,
        fill_empty: bool = False,
        partial_every_us: int = 0,
        max_fill_windows: int = DEFAULT_MAX_FILL_WINDOWS,
    ) -> None:
        if lateness_us < 0 or partial_every_us < 0:
            raise ValueError("lateness_us and partial_every_us must not be negative")
        self.venue = venue
        self.symbol = symbol
        self.lateness_us = lateness_us
        self.fill_empty = fill_empty
        self.partial_every_us = partial_every_us
        self.max_fill_windows = max_fill_windows
        parsed = parse_intervals(intervals)
        finest = parsed[0][1]
        self._intervals = [
            _Interval(label, length, k > 0 and length % finest == 0)
            for k, (label, length) in enumerate(parsed)
        ]
        self._max_ts = -1  # largest event time observed
        self._next_partial_at = 0
        # Decimal places of the window ints; they only grow (see _rescale).
        self._price_scale = 0
        self._size_scale = 0
        # counters for status / metrics
        self.trades = 0  # trades aggregated into at least one interval
        self.late = 0  # late records emitted (one per trade and missed interval)
        self.malformed = 0  # trades rejected as dead letters
        self.fill_skipped = 0  # empty windows left unfilled (gap over max_fill_windows)
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what lets a trade or a call skip work (after anything that closes
        windows, and on restore):

        - ``_due``: a watermark below it closes and fills nothing (the earliest end of
          an open window, or of the next window a fill would add); a new window lowers it.
        - ``_late_floor``: a trade at or after it is late for no interval. Window
          starts below an interval's ``closed_through`` are late; with aligned windows
          that is ``ts`` below ``closed_through`` rounded up to the interval.
        - ``_merged_rest``: every interval but the finest is merged from it, so a trade
          in time everywhere only touches the finest window.
        """
        due = None
        floor = 0
        for interval in self._intervals:
            length = interval.length
            if self.fill_empty and interval.last_close is not None:
                end = interval.closed_through + length
            elif interval.windows:
                end = min(interval.windows) + length
            else:
                end = None
            if end is not None and (due is None or end < due):
                due = end
            floor = max(floor, -(-interval.closed_through // length) * length)
        # Nothing open: the next trade makes a window (and lowers _due to its end).
        self._due = due if due is not None else MAX_TS_US * 2
        self._late_floor = floor
        self._merged_rest = all(interval.merged for interval in self._intervals[1:])

    @property
    def watermark(self) -> int:
        return self._max_ts - self.lateness_us

    def on_trades(self, trades: list[dict[str, Any]], now_us: int) -> list[dict[str, Any]]:
        """Aggregate a batch of trade dicts; return late records, closed and partial bars."""
        out: list[dict[str, Any]] = []
        # Unchanged until the windows close after the loop (_refresh).
        known = _AMOUNTS.get
        fast = self._merged_rest
        late_floor = self._late_floor
        lateness = self.lateness_us
        finest = self._intervals[0]
        length = finest.length
        windows = finest.windows
        for trade in trades:
            # Every check comes before the first change of state; a trade that fails one
            # (or meets a bug: it must not cost the batch) becomes a dead letter. Inlined,
            # with the common case, as this runs once per trade.
            try:
                ts = trade["ts_exchange"]
                trade_id = trade["trade_id"]
                price_text = trade["price"]
                size_text = trade["size"]
                side = trade["side"]
                if type(ts) is not int or not 0 <= ts < MAX_TS_US:
                    raise ValueError(
                        f"ts_exchange {ts!r} is not an integer from 0 to {MAX_TS_US - 1}"
                    )
                if type(trade_id) is not str:
                    raise TypeError(f"trade_id {trade_id!r} is not a string")
                if side != "buy" and side != "sell":
                    raise ValueError(f"side {side!r} is neither buy nor sell")
                try:  # the cache lookup of _amount, inlined (a call costs as much)
                    price, price_scale = known(price_text) or _amount(price_text)
                except (AttributeError, TypeError, ValueError):  # not an accepted str
                    raise ValueError(_inexact("price", price_text)) from None
                try:
                    size, size_scale = known(size_text) or _amount(size_text)
                except (AttributeError, TypeError, ValueError):
                    raise ValueError(_inexact("size", size_text)) from None
                if price_scale != self._price_scale or size_scale != self._size_scale:
                    if price_scale > self._price_scale or size_scale > self._size_scale:
                        self._rescale(
                            max(price_scale, self._price_scale), max(size_scale, self._size_scale)
                        )
                    price *= 10 ** (self._price_scale - price_scale)
                    size *= 10 ** (self._size_scale - size_scale)
                buy = side == "buy"
                if ts > self._max_ts:
                    self._max_ts = ts
                seq = self.trades  # arrival order of the aggregated trades
                if ts >= late_floor and fast:
                    # In time for every interval once in time for the finest (a coarser
                    # window ends no earlier): only the finest window takes the trade,
                    # as in _add_to_windows.
                    start = ts - ts % length
                    if start + length > self._max_ts - lateness:
                        window = windows.get(start)
                        if window is None:
                            windows[start] = _Window(
                                ts, trade_id, price_text, price, size, price * size, buy, seq
                            )
                            if start + length < self._due:
                                self._due = start + length
                        else:  # _Window.add, inlined
                            if ts < window.open_ts:  # ties keep the earlier arrival as open
                                window.open, window.open_ts, window.open_id = (
                                    price_text,
                                    ts,
                                    trade_id,
                                )
                            if ts >= window.close_ts:  # ties make the later arrival the close
                                window.close, window.close_ts, window.close_id = (
                                    price_text,
                                    ts,
                                    trade_id,
                                )
                            if price > window.high:
                                window.high, window.high_text, window.high_seq = (
                                    price,
                                    price_text,
                                    seq,
                                )
                            elif price < window.low:
                                window.low, window.low_text, window.low_seq = price, price_text, seq
                            window.volume += size
                            window.quote += price * size
                            if buy:
                                window.buy += size
                            else:
                                window.sell += size
                            window.count += 1
                            window.dirty = True
                        self.trades = seq + 1
                        continue
                self._add_to_windows(trade, ts, trade_id, price_text, price, size, buy, out)
            except Exception as exc:
                self._reject(trade, exc, out)
        if self._max_ts - self.lateness_us >= self._due:
            self._close(out)
        if self.partial_every_us and now_us >= self._next_partial_at:
            self._partials(now_us, out)
        return out

    def on_time(self, now_us: int, event_now_us: int | None = None) -> list[dict[str, Any]]:
        """Advance time without trades: ``event_now_us`` (if given) counts as an observed
        event time, closing windows in a quiet market; ``now_us`` drives partial updates."""
        out: list[dict[str, Any]] = []
        if event_now_us is not None and event_now_us > self._max_ts:
            self._max_ts = event_now_us
        self._close(out)
        self._partials(now_us, out)
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of stream: every open window goes out as a final bar.

        Later trades into flushed windows are reported late.
        """
        out: list[dict[str, Any]] = []
        for interval in self._intervals:
            if interval.windows:
                self._close_interval(interval, max(interval.windows) + interval.length, out)
        self._refresh()
        return out

    def open_bars(self) -> list[dict[str, Any]]:
        """In-progress (``final: false``) bars of every open window, state untouched: the
        end of a run that will be resumed from recovery, where the windows stay open."""
        out: list[dict[str, Any]] = []
        for interval in self._intervals:
            for start in sorted(self._starts(interval)):
                bar = self._render(interval, start, self._view(interval, start), False, out)
                if bar is not None:
                    out.append(bar)
        return out

    def next_partial(self) -> int | None:
        """When the next in-progress update is due (on the caller's clock), or None."""
        if not self.partial_every_us:
            return None
        dirty = any(w.dirty for i in self._intervals for w in i.windows.values())
        return self._next_partial_at if dirty else None

    def next_wakeup(self) -> int | None:
        """Earliest time a call to `on_time` can emit something, or None.

        Two clocks meet here, as in a live feed where event time follows wall time: the
        next partial update is due at a ``now_us``; the next window closes when
        ``event_now_us - lateness_us`` reaches its end.
        """
        due: list[int] = []
        for interval in self._intervals:
            starts = self._starts(interval)
            if starts:
                due.append(min(starts) + interval.length + self.lateness_us)
                if self.partial_every_us and any(w.dirty for w in interval.windows.values()):
                    due.append(self._next_partial_at)
            elif self.fill_empty and interval.last_close is not None:
                due.append(interval.closed_through + interval.length + self.lateness_us)
        return min(due) if due else None

    # ---- internals ----

    def _add_to_windows(
        self,
        trade: dict[str, Any],
        ts: int,
        trade_id: str,
        price_text: str,
        price: int,
        size: int,
        buy: bool,
        out: list[dict[str, Any]],
    ) -> None:
        """A checked trade (at the builder's scales) into the window of each interval it is
        in time for, or a late record per interval it missed."""
        watermark = self._max_ts - self.lateness_us
        notional = price * size
        seq = self.trades  # arrival order of the aggregated trades
        aggregated = False
        finest = True  # the first pass of the loop
        in_finest = False
        for interval in self._intervals:
            length = interval.length
            start = ts - ts % length
            if start + length <= watermark or start < interval.closed_through:
                self.late += 1
                out.append(
                    {
                        "type": "late",
                        "schema_version": SCHEMA_VERSION,
                        "interval": interval.label,
                        "window_start": start,
                        "trade": trade,
                    }
                )
                finest = False
                continue
            aggregated = True
            if finest:
                in_finest, finest = True, False
            elif in_finest and interval.merged:
                continue  # it comes with its finest window
            window = interval.windows.get(start)
            if window is None:
                interval.windows[start] = _Window(
                    ts, trade_id, price_text, price, size, notional, buy, seq
                )
                if start + length < self._due:
                    self._due = start + length
                continue
            # Window.add, inlined: this runs once per trade and interval.
            if ts < window.open_ts:  # ties keep the earlier arrival as open
                window.open, window.open_ts, window.open_id = price_text, ts, trade_id
            if ts >= window.close_ts:  # ties make the later arrival the close
                window.close, window.close_ts, window.close_id = price_text, ts, trade_id
            if price > window.high:
                window.high, window.high_text, window.high_seq = price, price_text, seq
            elif price < window.low:
                window.low, window.low_text, window.low_seq = price, price_text, seq
            window.volume += size
            window.quote += notional
            if buy:
                window.buy += size
            else:
                window.sell += size
            window.count += 1
            window.dirty = True
        if aggregated:
            self.trades += 1

    def _rescale(self, price_scale: int, size_scale: int) -> None:
        """Move every open window to finer scales (exact: a multiplication)."""
        price_factor = 10 ** (price_scale - self._price_scale)
        size_factor = 10 ** (size_scale - self._size_scale)
        for interval in self._intervals:
            for window in interval.windows.values():
                window.rescale(price_factor, size_factor)
        self._price_scale = price_scale
        self._size_scale = size_scale

    def _reject(self, trade: Any, exc: Exception, out: list[dict[str, Any]]) -> None:
        self.malformed += 1
        try:
            raw = orjson.dumps(trade, default=str).decode()
        except TypeError:
            raw = repr(trade)
        ts_ingest = trade.get("ts_ingest") if isinstance(trade, dict) else None
        out.append(
            make_dead_letter(
                self.venue,
                ts_ingest if type(ts_ingest) is int and ts_ingest >= 0 else 0,
                f"ohlcv: malformed trade for {self.symbol}: {type(exc).__name__}: {exc}",
                raw,
            )
        )

    def _close(self, out: list[dict[str, Any]]) -> None:
        watermark = self._max_ts - self.lateness_us
        for interval in self._intervals:
            self._close_interval(interval, watermark, out)
            if self.fill_empty and interval.last_close is not None:
                self._fill(interval, watermark, out)
        self._refresh()

    def _close_interval(self, interval: _Interval, limit: int, out: list[dict[str, Any]]) -> None:
        """Emit final bars of the windows ending at or before ``limit``, in start order."""
        length = interval.length
        ready = sorted(start for start in interval.windows if start + length <= limit)
        for start in ready:
            if self.fill_empty and interval.last_close is not None:
                self._fill(interval, start, out)
            window = interval.windows.pop(start)
            interval.closed_through = start + length
            if interval is self._intervals[0]:
                self._merge_up(start, window)
            bar = self._render(interval, start, window, final=True, out=out)
            if bar is not None:
                out.append(bar)
                interval.last_close = window.close

    def _fill(self, interval: _Interval, limit: int, out: list[dict[str, Any]]) -> None:
        """Filled bars for the empty windows from ``closed_through`` to ``limit``."""
        length = interval.length
        first = interval.closed_through
        missing = (limit - first) // length
        if missing <= 0:
            return
        interval.closed_through = first + missing * length
        if missing > self.max_fill_windows:
            self.fill_skipped += missing
            return
        price = interval.last_close
        for start in range(first, interval.closed_through, length):
            out.append(
                {
                    "type": "bar",
                    "schema_version": SCHEMA_VERSION,
                    "venue": self.venue,
                    "symbol": self.symbol,
                    "interval": interval.label,
                    "start": start,
                    "end": start + length,
                    "open": price,
                    "high": price,
                    "low": price,
                    "close": price,
                    "volume": "0",
                    "quote_volume": "0",
                    "vwap": None,
                    "buy_volume": "0",
                    "sell_volume": "0",
                    "trades": 0,
                    "first_trade_id": None,
                    "last_trade_id": None,
                    "final": True,
                    "filled": True,
                }
            )

    def _partials(self, now_us: int, out: list[dict[str, Any]]) -> None:
        if not self.partial_every_us or now_us < self._next_partial_at:
            return
        emitted = False
        finest = self._intervals[0].windows
        for interval in self._intervals:
            for start in sorted(self._starts(interval)):
                window = interval.windows.get(start)
                dirty = window is not None and window.dirty
                if interval.merged and not dirty:
                    length = interval.length
                    dirty = any(w.dirty for s, w in finest.items() if s - s % length == start)
                if dirty:
                    bar = self._render(interval, start, self._view(interval, start), False, out)
                    if bar is not None:
                        out.append(bar)
                        emitted = True
        # Cleared only now: the finest windows' flags stand for the merged intervals too.
        for interval in self._intervals:
            for window in interval.windows.values():
                window.dirty = False
        if emitted:
            self._next_partial_at = now_us + self.partial_every_us

    def _merge_up(self, start: int, window: _Window) -> None:
        """A closing finest window goes into the merged intervals' windows it is in time for
        (when its trades arrived: that cannot change while it is open)."""
        for interval in self._intervals:
            if not interval.merged:
                continue
            coarse_start = start - start % interval.length
            if coarse_start < interval.closed_through:
                continue  # its trades were late for this interval (after a flush)
            coarse = interval.windows.get(coarse_start)
            if coarse is None:
                interval.windows[coarse_start] = window.copy()
            else:
                coarse.merge(window)
                coarse.dirty = coarse.dirty or window.dirty

    def _starts(self, interval: _Interval) -> set[int]:
        """Starts of the open windows of ``interval``, those still in its finest windows
        included."""
        starts = set(interval.windows)
        if interval.merged:
            length = interval.length
            for start in self._intervals[0].windows:
                coarse_start = start - start % length
                if coarse_start >= interval.closed_through:
                    starts.add(coarse_start)
        return starts

    def _view(self, interval: _Interval, start: int) -> _Window:
        """The whole open window at ``start`` (a copy when finest windows are merged in)."""
        window = interval.windows.get(start)
        if not interval.merged:
            assert window is not None
            return window
        length = interval.length
        for fine_start in sorted(self._intervals[0].windows):
            if fine_start - fine_start % length == start:
                fine = self._intervals[0].windows[fine_start]
                if window is None:
                    window = fine.copy()
                else:
                    if window is interval.windows.get(start):
                        window = window.copy()
                    window.merge(fine)
        assert window is not None
        return window

    def _render(
        self,
        interval: _Interval,
        start: int,
        window: _Window,
        final: bool,
        out: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """The bar of ``window``, or None after a dead letter when it cannot be rendered
        (only a window restored from an older version's state can hold such values)."""
        try:
            return self._bar(interval, start, window, final)
        except (ArithmeticError, ValueError) as exc:
            self.malformed += 1
            fields = {name: str(getattr(window, name)) for name in _Window.__slots__}
            reason = (
                f"ohlcv: bar {interval.label} {start} of {self.symbol} cannot be rendered, "
                f"dropped: {type(exc).__name__}: {exc}"
            )
            out.append(make_dead_letter(self.venue, 0, reason, orjson.dumps(fields).decode()))
            return None

    def _bar(self, interval: _Interval, start: int, window: _Window, final: bool) -> dict[str, Any]:
        volume = window.volume
        quote = window.quote
        size_scale = self._size_scale
        vwap: str | None = None
        if volume:
            # quote / volume = (quote / 10**(p+s)) / (volume / 10**s), to 18 places,
            # rounded half-even on the exact remainder.
            divisor = volume * 10**self._price_scale
            places, remainder = divmod(quote * 10**VWAP_PLACES, divisor)
            twice = 2 * remainder
            if twice > divisor or (twice == divisor and places & 1):
                places += 1
            vwap = _text(places, VWAP_PLACES)
        return {
            "type": "bar",
            "schema_version": SCHEMA_VERSION,
            "venue": self.venue,
            "symbol": self.symbol,
            "interval": interval.label,
            "start": start,
            "end": start + interval.length,
            "open": window.open,
            "high": window.high_text,
            "low": window.low_text,
            "close": window.close,
            "volume": _text(volume, size_scale),
            "quote_volume": _text(quote, self._price_scale + size_scale),
            "vwap": vwap,
            "buy_volume": _text(window.buy, size_scale),
            "sell_volume": _text(window.sell, size_scale),
            "trades": window.count,
            "first_trade_id": window.open_id,
            "last_trade_id": window.close_id,
            "final": final,
            "filled": False,
        }

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        """Restore a pickle; one of the Decimal builder (before the scales) is converted."""
        _, slots = state
        for name, value in slots.items():
            setattr(self, name, value)
        if "_price_scale" not in slots:
            self._price_scale, self._size_scale = _legacy_scales(self._intervals)
            for interval in self._intervals:
                interval.merged = False  # its windows hold every trade already
                for window in interval.windows.values():
                    _legacy_to_ints(window, self._price_scale, self._size_scale)
                    window.high_seq = window.low_seq = 0
        self._refresh()


def _places(value: Any) -> int:
    """Decimal places of a legacy Decimal sum (its exponent: sums are not normalized)."""
    exponent = value.as_tuple().exponent if isinstance(value, Decimal) else 0
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _legacy_scales(intervals: list[_Interval]) -> tuple[int, int]:
    windows = [w for interval in intervals for w in interval.windows.values()]
    sizes = max((_places(v) for w in windows for v in (w.volume, w.buy, w.sell)), default=0)
    prices = max((_places(v) for w in windows for v in (w.high, w.low)), default=0)
    quotes = max((_places(w.quote) for w in windows), default=0)
    return max(prices, quotes - sizes), sizes


def _legacy_to_ints(window: _Window, price_scale: int, size_scale: int) -> None:
    """Decimal fields to ints at the given scales; a value that is no finite decimal
    (only a corrupted state holds one) stays, and its bar becomes a dead letter."""

    def scaled(value: Any, scale: int) -> Any:
        try:
            numerator, denominator = Decimal(value).as_integer_ratio()
        except (ArithmeticError, ValueError, TypeError):
            return value
        return numerator * 10**scale // denominator

    window.high = scaled(window.high, price_scale)
    window.low = scaled(window.low, price_scale)
    window.quote = scaled(window.quote, price_scale + size_scale)
    for name in ("volume", "buy", "sell"):
        setattr(window, name, scaled(getattr(window, name), size_scale))


def _inexact(name: str, text: Any) -> str:
    return (
        f"{name} {text!r} is not plain decimal text from 0 to 1e{MAX_DIGITS} "
        f"in steps of 1e-{MAX_DIGITS}"
    )
