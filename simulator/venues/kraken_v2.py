"""Kraken WebSocket v2 frames DERIVED from the real v1 capture (no real v2 recording exists).

Each v1 data array becomes the v2 push carrying the same market event, with every
price and quantity written as a JSON number in the v1 text's precision (v1 sends them
as strings; v2 as numbers at the pair's precision, e.g. ``0.000022900``), so the v2
checksum recipe sees the same text the venue checksummed:

- ``book-N`` snapshot -> ``{"channel":"book","type":"snapshot",..,"checksum"}`` (v1
  snapshots carry no checksum: it is computed from the top 10, as v2 sends one);
  update -> ``"type":"update"`` with v1's ``c`` (same recipe, same levels);
- ``trade`` -> ``trade`` update; v1 has no trade ids, so ids are numbered per pair
  from 1 in capture order (derived, not Kraken's);
- ``ticker`` -> ``ticker`` update with bid/ask price and lot volume;
- ``{"event":"heartbeat"}`` -> ``{"channel":"heartbeat"}``; other events are dropped.

Timestamps: v1 epoch seconds -> RFC3339 with 6 fraction digits (a book message takes
its newest level's time). Derived frames are labelled as such in docs/sources.md and
docs/simulator.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from operators.checksum import KRAKEN_DEPTH, kraken_checksum
from sources.frames import RawFrame

_UNIFIED = {"XBT": "BTC", "XDG": "DOGE"}


def v2_symbol(v1_pair: str) -> str:
    base, quote = v1_pair.split("/")
    return f"{_UNIFIED.get(base, base)}/{_UNIFIED.get(quote, quote)}"


def rfc3339(epoch_text: str) -> str:
    whole, _, frac = epoch_text.partition(".")
    stamp = datetime.fromtimestamp(int(whole), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{(frac + '000000')[:6]}Z"


def _num(text: Any) -> str:
    """A v1 decimal string as JSON number text (checked: nothing else is embedded raw)."""
    if not isinstance(text, str) or not text.replace(".", "", 1).isdigit():
        raise ValueError(f"not a decimal string: {text!r}")
    return text


def _levels(levels: list[tuple[str, str]]) -> str:
    return "[" + ",".join(f'{{"price":{_num(p)},"qty":{_num(q)}}}' for p, q in levels) + "]"


def top_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """The v2 checksum of a book given as unsorted levels."""
    best_bids = sorted(bids, key=lambda lvl: Decimal(lvl[0]), reverse=True)[:KRAKEN_DEPTH]
    best_asks = sorted(asks, key=lambda lvl: Decimal(lvl[0]))[:KRAKEN_DEPTH]
    return kraken_checksum(best_bids, best_asks)


def book_push(
    kind: str,
    symbol: str,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    checksum: int,
    timestamp: str | None,
) -> str:
    stamp = "" if timestamp is None else f',"timestamp":"{timestamp}"'
    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
        f'"bids":{_levels(bids)},"asks":{_levels(asks)},"checksum":{checksum}{stamp}}}]}}'
    )


class V2Deriver:
    """v1 frames in capture order -> the derived v2 frames (state: trade ids per pair)."""

    def __init__(self) -> None:
        self._trade_ids: dict[str, int] = {}

    def frames(self, frames: Iterable[RawFrame]) -> Iterator[RawFrame]:
        for frame in frames:
            text = self.text(frame.text)
            if text is not None:
                yield frame._replace(text=text)

    def text(self, v1_text: str) -> str | None:
        obj = json.loads(v1_text)
        if isinstance(obj, dict):
            return '{"channel":"heartbeat"}' if obj.get("event") == "heartbeat" else None
        channel, symbol = obj[-2], v2_symbol(obj[-1])
        if channel == "trade":
            return self._trades(symbol, obj[1])
        if channel == "ticker":
            p = obj[1]
            return (
                f'{{"channel":"ticker","type":"update","data":[{{"symbol":"{symbol}",'
                f'"bid":{_num(p["b"][0])},"bid_qty":{_num(p["b"][2])},'
                f'"ask":{_num(p["a"][0])},"ask_qty":{_num(p["a"][2])},'
                f'"last":{_num(p["c"][0])},"volume":{_num(p["v"][1])},'
                f'"vwap":{_num(p["p"][1])},"low":{_num(p["l"][1])},"high":{_num(p["h"][1])}}}]}}'
            )
        if channel.startswith("book-"):
            return self._book(symbol, obj[1:-2])
        return None

    def _trades(self, symbol: str, trades: list[list[str]]) -> str:
        parts = []
        for price, volume, stamp, side, ord_type, *_ in trades:
            trade_id = self._trade_ids[symbol] = self._trade_ids.get(symbol, 0) + 1
            parts.append(
                f'{{"symbol":"{symbol}","side":"{"buy" if side == "b" else "sell"}",'
                f'"price":{_num(price)},"qty":{_num(volume)},'
                f'"ord_type":"{"market" if ord_type == "m" else "limit"}",'
                f'"trade_id":{trade_id},"timestamp":"{rfc3339(stamp)}"}}'
            )
        return '{"channel":"trade","type":"update","data":[' + ",".join(parts) + "]}"

    def _book(self, symbol: str, payloads: list[dict[str, Any]]) -> str:
        bids: list[tuple[str, str]] = []
        asks: list[tuple[str, str]] = []
        checksum: int | None = None
        snapshot = False
        newest = ""
        for payload in payloads:
            for key, value in payload.items():
                if key == "c":
                    checksum = int(value)
                    continue
                snapshot = snapshot or key in ("as", "bs")
                target = asks if key[0] == "a" else bids
                for level in value:
                    target.append((level[0], level[1]))
                    newest = max(newest, level[2], key=lambda t: Decimal(t or "0"))
        if snapshot:
            return book_push("snapshot", symbol, bids, asks, top_checksum(bids, asks), None)
        assert checksum is not None, "a v1 book update without its checksum"
        return book_push("update", symbol, bids, asks, checksum, rfc3339(newest))
