"""Venue order-book checksums, computed from the exact price/size text received.

Rules: OKX https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel,
Kraken https://docs.kraken.com/exchange/guides/websockets/book-checksum-v2.
Inputs are levels best-first, as ``OrderBook.top`` returns them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

Level = tuple[str, str]

OKX_DEPTH = 25
KRAKEN_DEPTH = 10


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX CRC32 over the top 25 levels, "bidPx:bidSz:askPx:askSz:...", as signed int32.

    When one side is shorter the other side's remaining levels continue alone."""
    bids = bids[:OKX_DEPTH]
    asks = asks[:OKX_DEPTH]
    parts: list[str] = []
    n_bids = len(bids)
    n_asks = len(asks)
    for i in range(max(n_bids, n_asks)):
        if i < n_bids:
            parts += bids[i]
        if i < n_asks:
            parts += asks[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 0x1_0000_0000 if crc >= 0x8000_0000 else crc


def kraken_level_text(text: str) -> str:
    """Kraken's checksum form of a price or qty: '.' removed, leading zeros stripped."""
    return text.replace(".", "").lstrip("0")


def kraken_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """Kraken WebSocket v2 CRC32 over the top 10: asks low->high then bids high->low, unsigned."""
    parts = [
        kraken_level_text(price) + kraken_level_text(qty)
        for price, qty in (*asks[:KRAKEN_DEPTH], *bids[:KRAKEN_DEPTH])
    ]
    return zlib.crc32("".join(parts).encode())
