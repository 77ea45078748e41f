"""Which venue (and Binance market) a capture was recorded from, read from its frames.

Binance spot and USD-M futures speak the same stream protocol, so a USD-M
capture replayed as ``binance`` parses without one error, yet every record is
labelled spot and the book reports a gap on nearly every diff (USD-M diffs
chain through ``pu``, spot ones through ``U == previous u + 1``); the other way
round, spot diffs lack ``pu`` and every one is refused. A capture of one venue
replayed as another turns into dead letters only. So the replay checks the
first frames before the flow starts and refuses a mismatch in one line
(``candlewax.preflight``). Only frames that tell are counted; a capture whose
first lines hold none (acks only, trades only) is not judged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.replay import head_frames

SPOT, USDM, OKX = "binance", "binance-usdm", "okx"
BYBIT = "bybit"
KRAKEN = "kraken"
# Kraken v2 data channels (objects with "channel", "type" and "data").
_KRAKEN_V2_CHANNELS = frozenset({"book", "trade", "ticker", "ohlc"})
HYPERLIQUID = "hyperliquid"
# Hyperliquid's data channels (its envelope is {"channel", "data"}).
_HYPERLIQUID_CHANNELS = frozenset({"l2Book", "trades", "bbo"})
COINBASE = "coinbase"
# Stream events only USD-M futures sends.
_USDM_EVENTS = frozenset({"markPriceUpdate", "forceOrder", "continuous_kline", "compositeIndex"})


class Evidence(NamedTuple):
    venue: str
    why: str
    rank: int = 1  # 0: the reason to name first (the depth-diff chaining rule)


def frame_evidence(frame: RawFrame) -> Evidence | None:
    """The venue a frame's shape proves, with the reason, or None if it proves nothing."""
    try:
        obj: Any = orjson.loads(frame.text)
    except orjson.JSONDecodeError:
        return None
    kraken = _kraken_evidence(obj)
    if kraken is not None:
        return kraken
    if not isinstance(obj, dict):
        return None
    if frame.hint is not None and frame.hint.startswith(SNAPSHOT_HINT) and "lastUpdateId" in obj:
        # The futures REST depth body carries event/transaction times; spot's has none.
        if "T" in obj:
            return Evidence(USDM, "its REST depth snapshots carry 'T'")
        return Evidence(SPOT, "its REST depth snapshots carry no 'T'")
    if isinstance(obj.get("arg"), dict) and "instId" in obj["arg"]:
        return Evidence(OKX, "its frames carry OKX's 'arg.instId'")
    if isinstance(obj.get("topic"), str) and obj.get("type") in ("snapshot", "delta"):
        return Evidence(BYBIT, "its frames carry Bybit v5's 'topic' and 'type'")
    if obj.get("channel") in _HYPERLIQUID_CHANNELS and "data" in obj:
        return Evidence(HYPERLIQUID, f"its frames carry Hyperliquid's {obj['channel']!r} channel")
    if "sequence_num" in obj and "events" in obj and "channel" in obj:
        return Evidence(
            COINBASE, "its frames carry Coinbase Advanced Trade's 'sequence_num' envelope"
        )
    stream = obj.get("stream")
    data = obj.get("data") if isinstance(stream, str) else obj
    if not isinstance(data, dict):
        return None
    event = data.get("e")
    if (isinstance(stream, str) and "@markPrice" in stream) or event in _USDM_EVENTS:
        return Evidence(USDM, f"it holds USD-M-only streams ({stream or event})")
    if event == "depthUpdate":
        if "pu" in data:
            return Evidence(USDM, "its depth diffs carry 'pu', as USD-M futures ones do", 0)
        return Evidence(SPOT, "its depth diffs lack 'pu', as spot ones do", 0)
    if event == "bookTicker":
        return Evidence(USDM, "its bookTicker events carry 'e', as USD-M futures ones do")
    if event is None and "u" in data and "B" in data and "A" in data:
        return Evidence(SPOT, "its bookTicker frames lack 'e', as spot ones do")
    return None


def _kraken_evidence(obj: Any) -> Evidence | None:
    """Kraken v1 data arrays end with channel name and pair ("book-1000", "XBT/USD");
    v1 events are {"event": "systemStatus"/"subscriptionStatus"}; v2 pushes carry
    "channel" + "type" + "data"."""
    if isinstance(obj, list):
        if len(obj) >= 4 and isinstance(obj[-1], str) and "/" in obj[-1]:
            name = obj[-2]
            if name in ("trade", "ticker", "spread") or str(name).startswith(("book-", "ohlc-")):
                return Evidence(KRAKEN, "its frames are Kraken v1 arrays [id, .., channel, pair]")
        return None
    if not isinstance(obj, dict):
        return None
    if obj.get("event") in ("systemStatus", "subscriptionStatus"):
        return Evidence(KRAKEN, f"it holds Kraken v1 {obj['event']} events")
    if obj.get("channel") in _KRAKEN_V2_CHANNELS and "type" in obj and "data" in obj:
        return Evidence(KRAKEN, "its frames are Kraken v2 pushes (channel, type, data)")
    return None


class Mismatch(NamedTuple):
    recorded: str  # the venue the capture was recorded from
    why: str


def venue_mismatch(path: str | Path, venue: str, max_lines: int = 2000) -> Mismatch | None:
    """The venue the first ``max_lines`` lines of a capture prove, when it is not ``venue``.

    None when they agree, or prove nothing, or contradict each other (a capture
    mixing venues is replayed as asked). Recorder captures name their venue."""
    votes: Counter[str] = Counter()
    reasons: dict[str, Evidence] = {}
    for frame in head_frames(path, venue, max_lines):
        if frame.venue != venue:  # a candlewax recording keeps the venue it was made from
            found: Evidence | None = Evidence(frame.venue, f"it was recorded as {frame.venue!r}")
        else:
            found = frame_evidence(frame)
        if found is not None:
            votes[found.venue] += 1
            best = reasons.get(found.venue)
            if best is None or found.rank < best.rank:
                reasons[found.venue] = found
    if len(votes) != 1:
        return None
    recorded = next(iter(votes))
    return None if recorded == venue else Mismatch(recorded, reasons[recorded].why)
