"""Internal (non-output) events passed from normalize to the book operator."""

from __future__ import annotations

from typing import NamedTuple

Levels = list[tuple[str, str]]  # [(price_text, size_text)], size "0..." removes


class DepthMsg(NamedTuple):
    """One order-book message of any venue, already parsed.

    kind: "snapshot" replaces the book, "update" applies absolute sizes.
    Sequence fields follow the venue:
      binance spot:  first_id=U, last_id=u, prev_id=None; snapshot last_id=lastUpdateId
      binance-usdm:  first_id=U, last_id=u, prev_id=pu
      okx:           first_id=None, last_id=seqId, prev_id=prevSeqId (None when absent)
      kraken:        first_id=subscribed depth (the book is cut to it), no ids; checksum=CRC32
    checksum: venue checksum or None when absent (OKX 0 means absent).
    """

    venue: str
    symbol: str
    kind: str
    bids: Levels
    asks: Levels
    first_id: int | None
    last_id: int | None
    prev_id: int | None
    checksum: int | None
    ts_exchange: int
    ts_ingest: int
    conn_id: str = ""
