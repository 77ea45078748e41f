"""The typed fast path (sources/typed.py) emits exactly what the careful path does.

Every frame of every bundled Binance and OKX capture goes through both: the typed
path must take every market frame (else it silently stops being fast) and emit the
careful path's items. Mutated copies of real frames (bad numbers, missing fields,
wrong types, nulls, reordered, duplicate and unknown keys, numbers orjson refuses,
random byte edits) must give the same items or the same dead letter, reason and all.
The native number checks (native/src/decimals.rs) and their pure-Python fallback are
fuzzed against the schema's regexes and against each other.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import orjson
import pytest
from capture_lines import CAPTURES, capture_frames

from candlewax.schema import DECIMAL_RE, POSITIVE_DECIMAL_RE
from operators.normalize import Normalizer
from sources import numbers
from sources.frames import RawFrame
from sources.registry import make_parser
from sources.replay import iter_capture
from sources.typed import Decline

BINANCE_CAPTURES = {
    "binance/hftbacktest_spot_btcusdt_20240808.txt.gz": "binance",
    "binance/hftbacktest_spot_ethusdt_20240808.txt.gz": "binance",
    "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz": "binance-usdm",
}
OKX_CAPTURES = {
    "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz": "okx",
    "okx/cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz": "okx",
}
BYBIT_CAPTURES = {
    "bybit/cryptofeed_v5_linear_spot_2026-08-09.jsonl.gz": "bybit",
    "bybit/nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl.gz": "bybit",
}
KRAKEN_CAPTURES = {
    "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz": "kraken",
}
HYPERLIQUID_CAPTURES = {
    "hyperliquid/hftbacktest_btc_l2Book_trades_20250126.txt.gz": "hyperliquid",
}
COINBASE_CAPTURES = {
    "coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz": "coinbase",
}
ALL_CAPTURES = {
    **BINANCE_CAPTURES,
    **OKX_CAPTURES,
    **BYBIT_CAPTURES,
    **KRAKEN_CAPTURES,
    **HYPERLIQUID_CAPTURES,
    **COINBASE_CAPTURES,
}
# Venues whose frames need the production reader (the connection's URL in conn_id).
URL_CONN_VENUES = {"bybit"}
# Frames above this size are not mutated (Coinbase's l2 snapshots, 5 MB: a mutation costs
# seconds); tests/test_coinbase_typed.py mutates cut copies of them.
MUTATED_MAX_CHARS = 1_000_000
CHECKS = [numbers.PYTHON_CHECKS] + ([numbers.NATIVE_CHECKS] if numbers.NATIVE_CHECKS else [])
CHECK_IDS = ["python", "native"][: len(CHECKS)]


@cache
def frames_of(capture: str) -> tuple[RawFrame, ...]:
    venue = ALL_CAPTURES[capture]
    if venue in URL_CONN_VENUES:
        read = iter_capture(CAPTURES / capture, venue)
        return tuple(f for f in read if isinstance(f, RawFrame))
    return tuple(capture_frames(CAPTURES / capture, venue))


def pair(venue: str, checks: numbers.Checks) -> tuple[Normalizer, Normalizer, Any]:
    """A typed and a careful Normalizer, each over its own parser; the typed parser."""
    typed_parser = make_parser(venue, None)
    typed_parser._positive_ok = checks.positive_ok  # type: ignore[attr-defined]
    typed_parser._level_pairs = checks.level_pairs  # type: ignore[attr-defined]
    careful = Normalizer({venue: make_parser(venue, None)}, typed=False)
    return Normalizer({venue: typed_parser}), careful, typed_parser


def _declines(typed: Callable[[RawFrame], Any], frame: RawFrame) -> bool:
    try:
        typed(frame)
    except Exception:
        return True
    return False


def _market_frame(venue: str, frame: RawFrame) -> bool:
    """Frames the typed path must take: all but snapshots, control frames, klines and
    tickers with an empty side (the careful path writes None for it)."""
    if frame.hint is not None or frame.text == "pong":
        return False
    obj = orjson.loads(frame.text)
    if venue == "kraken":  # v1 data arrays; events ({"event":..}) go to the careful path
        return isinstance(obj, list)
    if venue == "hyperliquid":
        return bool(obj.get("channel") in ("trades", "l2Book"))
    if venue == "coinbase":
        return obj["channel"] in ("l2_data", "market_trades", "ticker")
    if venue == "okx":
        if "data" not in obj or "event" in obj:
            return False
        sides = ("bidPx", "bidSz", "askPx", "askSz")
        return all(_regex_positive(d[k]) for d in obj["data"] for k in sides if k in d)
    if venue == "bybit":
        channel = obj.get("topic", "").partition(".")[0]
        if channel == "tickers":
            sides = ("bid1Price", "bid1Size", "ask1Price", "ask1Size")
            return all(_regex_positive(obj["data"][k]) for k in sides if k in obj["data"])
        return channel in ("publicTrade", "orderbook")
    data = obj["data"]
    if data.get("e") == "kline":
        return False
    return all(
        _regex_positive(data[k])
        for k in ("b", "B", "a", "A")
        if k in data and data.get("e") != "depthUpdate"
    )


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
@pytest.mark.parametrize("capture", sorted(ALL_CAPTURES))
def test_every_capture_frame_gives_the_careful_items(capture: str, checks: numbers.Checks) -> None:
    venue = ALL_CAPTURES[capture]
    typed, careful, parser = pair(venue, checks)
    declined = 0
    for frame in frames_of(capture):
        market = _market_frame(venue, frame)
        # Before the frame is normalized: the typed call has no side effects on a decline.
        if _declines(parser.typed, frame):
            assert not market, f"typed path declined a market frame: {frame.text[:200]}"
            declined += 1
        assert typed(frame) == careful(frame), frame.text[:200]
    assert typed.stats == careful.stats
    assert declined < len(frames_of(capture)) / 10


# ---- mutated frames ----

ODD_VALUES: list[Any] = [
    None,
    "",
    "NaN",
    "-1",
    "1e5",
    "0",
    "0.000",
    " 1",
    "٣",
    "1.",
    1.5,
    0,
    7,
    -3,
    2**63,
    2**64,
    2**70,
    True,
    [],
    {},
    ["1", "2"],
    [["1", "2"]],
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key/index path into a decoded frame (first two levels of level lists)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            yield from _paths(item, (*path, index))


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    copied = orjson.loads(orjson.dumps(obj))
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


def _delete(obj: Any, path: tuple[Any, ...]) -> Any:
    copied = orjson.loads(orjson.dumps(obj))
    target = copied
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copied


def _reordered(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reordered(obj[k]) for k in reversed(obj)}
    if isinstance(obj, list):
        return [_reordered(v) for v in obj]
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)  # any int, unlike orjson


def mutations(frame: RawFrame, rng: random.Random) -> Iterator[str]:
    text = frame.text
    obj = orjson.loads(text)
    paths = list(_paths(obj))
    for path in paths:
        for value in rng.sample(ODD_VALUES, 5):
            yield _dumps(_replace(obj, path, value))
        if isinstance(path[-1], str):
            yield _dumps(_delete(obj, path))
    yield _dumps(_reordered(obj))
    data_at = text.find('"data":')
    if data_at > 0:  # duplicate and unknown keys, raw JSON orjson and msgspec may disagree on
        inner = text.find("{", data_at)
        for extra in (
            '"x":1e400,',
            '"x":18446744073709551616,',
            '"x":-1e-400,',
            '"x":"\\ud83d\\ude00",',
            '"x":{"y":[1,2,{"z":null}]},',
            '"s":"NOSUCH",',
            '"e":"trade",',
            '"u":1.0,',
            '"arg":{"channel":"trades","instId":"BTC-USDT"},',
        ):
            yield text[: inner + 1] + extra + text[inner + 1 :]
            yield text[:1] + extra + text[1:]
        closing = text.rfind("}")
        yield text[:closing] + ',"data":null' + text[closing:]
        yield text[:closing] + ',"stream":"x@trade"' + text[closing:]
    for _ in range(12):  # byte edits: a digit, a quote, a bracket, a letter
        at = rng.randrange(len(text))
        yield text[:at] + rng.choice('0.9"]}[{e,-:\\ ') + text[at + 1 :]
        yield text[:at] + text[at + 1 :]
    yield text + " "
    yield text + "x"
    yield "pong"


def _samples(capture: str, per_kind: int) -> list[RawFrame]:
    """The first ``per_kind`` frames of each kind (by their first 60 characters with
    digits dropped) of a capture."""
    seen: dict[str, int] = {}
    picked = []
    for frame in frames_of(capture):
        if len(frame.text) > MUTATED_MAX_CHARS:
            continue
        kind = re.sub(r"[0-9]", "", frame.text[:60]) + str(frame.hint is not None)
        if seen.get(kind, 0) < per_kind:
            seen[kind] = seen.get(kind, 0) + 1
            picked.append(frame)
    return picked


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
@pytest.mark.parametrize("capture", sorted(ALL_CAPTURES))
def test_mutated_frames_give_the_careful_items_and_reasons(
    capture: str, checks: numbers.Checks
) -> None:
    venue = ALL_CAPTURES[capture]
    typed, careful, _ = pair(venue, checks)
    rng = random.Random(capture)
    compared = letters = 0
    for original in _samples(capture, per_kind=3):
        for text in mutations(original, rng):
            frame = original._replace(text=text)
            got, want = typed(frame), careful(frame)
            assert got == want, (text[:300], got, want)
            compared += 1
            letters += any(isinstance(i, dict) and i["type"] == "dead_letter" for _, i in want)
    assert typed.stats == careful.stats
    assert compared > 500 and letters > compared / 4, (compared, letters)


def test_typed_path_has_no_side_effect_before_declining() -> None:
    """A bookTicker of a new symbol with a bad price: the careful path rejects it before
    the symbol lookup, so the symbol stays unseen (a symbol-less snapshot still belongs
    to the stream's only symbol)."""
    parser = make_parser("binance", None)
    spot = frames_of("binance/hftbacktest_spot_btcusdt_20240808.txt.gz")
    ticker = next(f for f in spot if "@bookTicker" in f.text[:40])
    bad = ticker._replace(text=ticker.text.replace('"s":"BTCUSDT"', '"s":"ETHUSDT"', 1))
    bad = bad._replace(text=re.sub(r'"b":"[0-9.]+"', '"b":"-1"', bad.text, count=1))
    with pytest.raises(Exception, match=r"(?s).*"):
        parser.typed(bad)
    parser.parse(ticker)
    snapshot = next(f for f in spot if f.hint is not None)
    assert parser.parse(snapshot)[0].symbol == "BTC/USDT"  # type: ignore[union-attr]


def test_decline_is_raised_for_frames_the_typed_path_leaves() -> None:
    parser = make_parser("binance", None)
    kline = '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT"}}'
    with pytest.raises(Decline):
        parser.typed(RawFrame("binance", "c", 1, kline))
    assert parser.parse(RawFrame("binance", "c", 1, kline)) == []


# ---- number checks: native and Python against the regexes ----

_DECIMAL = re.compile(DECIMAL_RE)
_POSITIVE = re.compile(POSITIVE_DECIMAL_RE)


def _random_text(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return rng.choice([None, 1, 1.5, b"1", ["1"], "1\n", "\ud800", "\u0661", "1_0", "\u0663.5"])
    alphabet = rng.choice(["0123456789.", "0.", "012.", "0123456789.-+eE ", "0.1x"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9)))


def _regex_positive(value: Any) -> bool:
    return value.__class__ is str and _POSITIVE.fullmatch(value) is not None


def _regex_decimal(value: Any) -> bool:
    return value.__class__ is str and _DECIMAL.fullmatch(value) is not None


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_number_checks_agree_with_the_schema_patterns(checks: numbers.Checks) -> None:
    rng = random.Random(8)
    for _ in range(20000):
        values = [_random_text(rng) for _ in range(rng.randrange(1, 5))]
        assert checks.positive_ok(*values) == all(map(_regex_positive, values)), values
        assert checks.decimal_ok(*values) == all(map(_regex_decimal, values)), values


class _Str(str):
    pass


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_level_pairs_agree_with_the_careful_level_checks(checks: numbers.Checks) -> None:
    rng = random.Random(9)
    good = ["1", "0.5", "61837.63", "0001", "10.000"]
    for _ in range(20000):
        deletes = rng.random() < 0.5
        levels: Any = []
        for _ in range(rng.randrange(0, 6)):
            price = rng.choice(good) if rng.random() < 0.9 else _random_text(rng)
            size = rng.choice([*good, "0", "0.00"]) if rng.random() < 0.9 else _random_text(rng)
            shape = rng.random()
            if shape < 0.6:
                levels.append((price, size))
            elif shape < 0.8:
                levels.append([price, size, "0", "3"])
            elif shape < 0.9:
                levels.append((price, size, "x"))
            else:
                levels.append(rng.choice([(price,), [price], "1", None, (_Str(price), size)]))
        if rng.random() < 0.02:
            levels = tuple(levels)
        want = _careful_pairs(levels, deletes)
        got = checks.level_pairs(levels, deletes)
        assert got == want, (levels, deletes)
        if got is not None and all(type(lvl) is tuple and len(lvl) == 2 for lvl in levels):
            assert got is levels


def _careful_pairs(levels: Any, deletes: bool) -> list[tuple[str, str]] | None:
    """What the careful path accepts: a list of sequences starting with two strings,
    every price positive, every size positive or, where ``deletes``, zero."""
    if type(levels) is not list:
        return None
    pairs = []
    for lvl in levels:
        if type(lvl) not in (tuple, list) or len(lvl) < 2:
            return None
        price, size = lvl[0], lvl[1]
        if not _regex_positive(price) or not (
            _regex_positive(size) or (deletes and _regex_decimal(size))
        ):
            return None
        pairs.append((price, size))
    return pairs


def test_native_checks_are_built_where_required() -> None:
    if os.environ.get("CANDLEWAX_REQUIRE_NATIVE") == "1":
        assert numbers.NATIVE_CHECKS is not None, "native/src/decimals.rs was not built"
    if numbers.NATIVE_CHECKS is None:
        pytest.skip("operators._book_native not built here")


def test_native_book_off_selects_python_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWAX_NATIVE_BOOK", "0")
    assert numbers.number_checks() is numbers.PYTHON_CHECKS
    parser = make_parser("binance", None)
    assert parser._positive_ok is numbers.py_positive_ok  # type: ignore[attr-defined]
    monkeypatch.delenv("CANDLEWAX_NATIVE_BOOK")
    if numbers.NATIVE_CHECKS is not None:
        assert numbers.number_checks().native
