"""The OHLCV BarBuilder before issue 8 lever 4 (Decimal sums), kept verbatim as the
baseline of bench/ohlcv.py. Do not edit: the bench compares against it byte for byte.

Original module docstring:

Event-time OHLCV bars for one (venue, symbol).

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
are the texts of the highest / lowest price (first one on ties). Sums use exact
Decimal arithmetic. ``vwap = quote_volume / volume`` rounded half-even to 18 decimal
places, trailing zeros stripped; None when volume is zero.

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

import re
from collections.abc import Iterable
from decimal import ROUND_05UP, ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

import orjson

from candlewax.schema import SCHEMA_VERSION, decimal_text, make_dead_letter
from operators.intervals import parse_intervals

# Accepted prices and sizes: the contract's plain decimal text (no sign, exponent, NaN,
# Infinity or blanks: bars carry the texts of their open/high/low/close trades as they
# are), below 10**MAX_DIGITS, in steps of 10**-MAX_DIGITS (real ones use well under 20
# digits either side of the point). Then a
# notional has at most 2 * 2 * MAX_DIGITS significant digits and a sum of up to 10**20 of
# them stays exact in _SUM_CONTEXT; a VWAP (a weighted mean of prices) has at most
# MAX_DIGITS integer digits, so its 18 places always fit _DIV_CONTEXT.
MAX_DIGITS = 24
# ts_exchange must stay below the last microsecond a datetime can hold (year 9999),
# so the window times stay valid wake-up times for the engine.
MAX_TS_US = 253_402_300_800_000_000
_exact_amount = re.compile(
    rf"0*[0-9]{{1,{MAX_DIGITS}}}(?:\.[0-9]{{1,{MAX_DIGITS}}}0*)?\Z", re.ASCII
).match
_SUM_CONTEXT = Context(prec=4 * MAX_DIGITS + 20 + 4)
# Round-to-odd ("05up") at many more digits than the final 18 places makes the
# second, half-even rounding exact (no double-rounding error).
_DIV_CONTEXT = Context(prec=80, rounding=ROUND_05UP)
_VWAP_QUANTUM = Decimal("1e-18")
_ZERO = Decimal(0)

DEFAULT_MAX_FILL_WINDOWS = 100_000


class _Window:
    """Running aggregate of one open window."""

    __slots__ = (
        "buy",
        "close",
        "close_id",
        "close_ts",
        "count",
        "dirty",
        "high",
        "high_text",
        "low",
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
        price: Decimal,
        size: Decimal,
        notional: Decimal,
        buy: bool,
    ) -> None:
        self.open = self.close = self.high_text = self.low_text = price_text
        self.open_ts = self.close_ts = ts
        self.open_id = self.close_id = trade_id
        self.high = self.low = price
        self.volume = size
        self.quote = notional
        self.buy = size if buy else _ZERO
        self.sell = _ZERO if buy else size
        self.count = 1
        self.dirty = True

    def add(
        self,
        ts: int,
        trade_id: str,
        price_text: str,
        price: Decimal,
        size: Decimal,
        notional: Decimal,
        buy: bool,
    ) -> None:
        if ts < self.open_ts:  # ties keep the earlier arrival as open
            self.open, self.open_ts, self.open_id = price_text, ts, trade_id
        if ts >= self.close_ts:  # ties make the later arrival the close
            self.close, self.close_ts, self.close_id = price_text, ts, trade_id
        if price > self.high:
            self.high, self.high_text = price, price_text
        elif price < self.low:
            self.low, self.low_text = price, price_text
        self.volume += size
        self.quote += notional
        if buy:
            self.buy += size
        else:
            self.sell += size
        self.count += 1
        self.dirty = True


class _Interval:
    """Windows and close state of one bar interval."""

    __slots__ = ("closed_through", "label", "last_close", "length", "windows")

    def __init__(self, label: str, length: int) -> None:
        self.label = label
        self.length = length
        self.windows: dict[int, _Window] = {}  # open windows by start
        self.closed_through = 0  # end of the last closed window; earlier starts are late
        self.last_close: str | None = None  # close of the last final bar, for fill


class BarBuilder:
    """Event-time OHLCV bars of one (venue, symbol) for several intervals at once."""

    __slots__ = (
        "_intervals",
        "_max_ts",
        "_next_partial_at",
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
        self._intervals = [_Interval(label, length) for label, length in parse_intervals(intervals)]
        self._max_ts = -1  # largest event time observed
        self._next_partial_at = 0
        # counters for status / metrics
        self.trades = 0  # trades aggregated into at least one interval
        self.late = 0  # late records emitted (one per trade and missed interval)
        self.malformed = 0  # trades rejected as dead letters
        self.fill_skipped = 0  # empty windows left unfilled (gap over max_fill_windows)

    @property
    def watermark(self) -> int:
        return self._max_ts - self.lateness_us

    def on_trades(self, trades: list[dict[str, Any]], now_us: int) -> list[dict[str, Any]]:
        """Aggregate a batch of trade dicts; return late records, closed and partial bars."""
        out: list[dict[str, Any]] = []
        with localcontext(_SUM_CONTEXT):
            for trade in trades:
                try:
                    self._add(trade, out)
                except Exception as exc:  # a bug here must not cost the batch
                    self._reject(trade, exc, out)
        self._close(out)
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
        return out

    def open_bars(self) -> list[dict[str, Any]]:
        """In-progress (``final: false``) bars of every open window, state untouched: the
        end of a run that will be resumed from recovery, where the windows stay open."""
        out: list[dict[str, Any]] = []
        for interval in self._intervals:
            for start in sorted(interval.windows):
                bar = self._render(interval, start, interval.windows[start], False, out)
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
            if interval.windows:
                due.append(min(interval.windows) + interval.length + self.lateness_us)
                if self.partial_every_us and any(w.dirty for w in interval.windows.values()):
                    due.append(self._next_partial_at)
            elif self.fill_empty and interval.last_close is not None:
                due.append(interval.closed_through + interval.length + self.lateness_us)
        return min(due) if due else None

    # ---- internals ----

    def _add(self, trade: dict[str, Any], out: list[dict[str, Any]]) -> None:
        # Every check comes before the first change of state (inlined: once per trade).
        try:
            ts = trade["ts_exchange"]
            trade_id = trade["trade_id"]
            price_text = trade["price"]
            size_text = trade["size"]
            side = trade["side"]
            if type(ts) is not int or not 0 <= ts < MAX_TS_US:
                raise ValueError(f"ts_exchange {ts!r} is not an integer from 0 to {MAX_TS_US - 1}")
            if type(trade_id) is not str:
                raise TypeError(f"trade_id {trade_id!r} is not a string")
            if side != "buy" and side != "sell":
                raise ValueError(f"side {side!r} is neither buy nor sell")
            if type(price_text) is not str or _exact_amount(price_text) is None:
                raise ValueError(_inexact("price", price_text))
            if type(size_text) is not str or _exact_amount(size_text) is None:
                raise ValueError(_inexact("size", size_text))
        except (KeyError, TypeError, ValueError) as exc:
            self._reject(trade, exc, out)
            return
        price = Decimal(price_text)
        size = Decimal(size_text)
        buy = side == "buy"
        if ts > self._max_ts:
            self._max_ts = ts
        watermark = self._max_ts - self.lateness_us
        notional = price * size
        aggregated = False
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
                continue
            aggregated = True
            window = interval.windows.get(start)
            if window is None:
                interval.windows[start] = _Window(
                    ts, trade_id, price_text, price, size, notional, buy
                )
            else:
                window.add(ts, trade_id, price_text, price, size, notional, buy)
        if aggregated:
            self.trades += 1

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

    def _close_interval(self, interval: _Interval, limit: int, out: list[dict[str, Any]]) -> None:
        """Emit final bars of the windows ending at or before ``limit``, in start order."""
        length = interval.length
        ready = sorted(start for start in interval.windows if start + length <= limit)
        for start in ready:
            if self.fill_empty and interval.last_close is not None:
                self._fill(interval, start, out)
            window = interval.windows.pop(start)
            interval.closed_through = start + length
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
        for interval in self._intervals:
            for start in sorted(interval.windows):
                window = interval.windows[start]
                if window.dirty:
                    window.dirty = False
                    bar = self._render(interval, start, window, final=False, out=out)
                    if bar is not None:
                        out.append(bar)
                        emitted = True
        if emitted:
            self._next_partial_at = now_us + self.partial_every_us

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
        vwap: str | None = None
        if volume:
            vwap = decimal_text(
                _DIV_CONTEXT.divide(quote, volume).quantize(
                    _VWAP_QUANTUM, rounding=ROUND_HALF_EVEN, context=_DIV_CONTEXT
                )
            )
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
            "volume": decimal_text(volume),
            "quote_volume": decimal_text(quote),
            "vwap": vwap,
            "buy_volume": decimal_text(window.buy),
            "sell_volume": decimal_text(window.sell),
            "trades": window.count,
            "first_trade_id": window.open_id,
            "last_trade_id": window.close_id,
            "final": final,
            "filled": False,
        }


def _inexact(name: str, text: Any) -> str:
    return (
        f"{name} {text!r} is not plain decimal text from 0 to 1e{MAX_DIGITS} "
        f"in steps of 1e-{MAX_DIGITS}"
    )
